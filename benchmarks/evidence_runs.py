"""The runs of the GPU evidence, and the child process that trains one and measures it.

Each run is a public Zephyr-7B-beta recipe (`recipes/zephyr-7b-beta/*.yaml`) loaded with `load_recipe` and
overridden only where a measurement needs it: the random-init model, the synthetic data, a few optimizer steps
logged at every step, no eval, no checkpoints, and the attention kernel (FlashAttention-2 when installed, else
SDPA). The child goes through the package as `zephyr-train sft/dpo` does (`preflight.check.before_stage`, then
`stages.sft.run_sft` / `stages.dpo.run_dpo`) with one extra trainer callback that counts the trained tokens, times
the steps and reads the CUDA memory peaks when training ends; it then stops the stage, because saving a 7B model
(and merging a LoRA DPO adapter into it, ~15 GB written each) measures the disk, not the GPU, and would not fit
the 8 minutes. Every run is its own process: its memory peaks are its own and an out-of-memory error ends only it.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "zephyr-7b-beta"
DPO_HEADS = ("dense", "trl")  # the DPO-speed issue's `dpo.lm_head` choices besides `auto`


@dataclass
class Run:
    name: str
    recipe: str  # file name under recipes/zephyr-7b-beta
    kind: str  # sft | dpo
    method: str  # qlora | lora | full
    lm_head: str | None = None  # dpo.lm_head, when the run compares DPO heads
    overrides: list[str] = field(default_factory=list)


def all_runs() -> list[Run]:
    """Most telling first: a run the time budget cannot reach is recorded as skipped, never silently dropped."""
    runs = [Run("qlora-sft", "qlora.yaml", "sft", "qlora"), Run("qlora-dpo", "qlora.yaml", "dpo", "qlora"),
            Run("lora-sft", "lora.yaml", "sft", "lora"), Run("lora-dpo", "lora.yaml", "dpo", "lora"),
            Run("full-sft", "full.yaml", "sft", "full")]
    runs += [Run(f"lora-dpo-{head}-head", "lora.yaml", "dpo", "lora", lm_head=head) for head in DPO_HEADS]
    return runs


def overrides_for(run: Run, model_dir: Path, data_dir: Path, out: Path, steps: int, attn: str,
                  tiny: bool) -> list[str]:
    """The recipe keys a measurement changes; everything else stays as the public recipe has it."""
    s = run.kind
    items = [f"model.name_or_path={model_dir}", f"model.attn_implementation={attn}", f"output_dir={out}",
             f"{s}.datasets.0.path={data_dir}", f"{s}.eval=null", f"{s}.eval_strategy=no", f"{s}.max_steps={steps}",
             f"{s}.logging_steps=1", f"{s}.save_strategy=no", f"{s}.disable_tqdm=true"]
    if run.lm_head:
        items.append(f"dpo.lm_head={run.lm_head}")
    if tiny:  # a CPU: fp32 (bf16 runs several times slower there), lengths / 8, no paged (CUDA) optimizer,
        # one micro-batch per step (CPU 4-bit matmuls are slow: QLoRA DPO took 8s a step with the recipe's 4)
        items += ["model.dtype=float32", f"{s}.bf16=false", f"{s}.optim=adamw_torch",
                  f"{s}.gradient_accumulation_steps=1",
                  f"{s}.max_length={256 if s == 'sft' else 128}"]
        if s == "dpo":
            items.append("dpo.max_prompt_length=64")
        if run.method == "qlora":
            items += ["model.quantization.bnb_4bit_compute_dtype=float32",
                      "model.quantization.bnb_4bit_quant_storage=float32"]
    return items + run.overrides


def load(run: Run, overrides: list[str]) -> Any:
    """The run's recipe with only its own stage (DPO starts from the model, not from an SFT run)."""
    from zephyr_train.stages import load_recipe

    recipe = load_recipe(RECIPES / run.recipe, overrides)
    if run.kind == "sft":
        recipe.sections.pop("dpo", None)
    else:
        recipe.sections.pop("sft", None)
    return recipe


def skip_reason(run: Run, overrides: list[str]) -> str | None:
    """Why this run cannot start with the installed package (e.g. a recipe key it does not know yet)."""
    from zephyr_train.errors import UserError

    try:
        load(run, overrides)
    except UserError as err:
        return f"the installed recipe schema refuses it: {str(err).split('; valid keys')[0]}"
    return None


# --- the child ------------------------------------------------------------------------------------


class Measured(Exception):
    """Raised by the probe once training ends: the figures are taken, the stage's saving is not needed."""


def make_probe(figures: dict[str, Any]) -> Any:
    """A trainer callback filling `figures`: trained tokens and time at every logged step, memory peaks."""
    import torch
    from transformers import TrainerCallback

    class Probe(TrainerCallback):
        def __init__(self) -> None:
            self.tokens, self.pending = 0, []
            self.collator = None

        def count(self, module: Any, args: tuple, kwargs: dict) -> None:
            if not torch.is_grad_enabled():  # the DPO reference's forward and evaluation: not trained tokens
                return
            mask, positions = kwargs.get("attention_mask"), kwargs.get("position_ids")
            if mask is not None and mask.dim() == 2:
                self.pending.append(mask.sum())  # summed on the device; read at the next log (no extra sync)
            elif positions is not None:
                self.tokens += positions.numel()

        def trained_tokens(self) -> int:
            # our packed-rows collator knows its real (non-padding) tokens exactly; else the forward's count
            if self.collator is not None:
                return self.collator.real_tokens
            self.tokens += sum(int(t) for t in self.pending)
            self.pending.clear()
            return self.tokens

        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                           train_dataloader: Any = None, **kwargs: Any) -> None:
            collate = getattr(train_dataloader, "collate_fn", None)
            self.collator = collate if hasattr(collate, "real_tokens") else None
            model.register_forward_pre_hook(self.count, with_kwargs=True)
            figures["train_begin"], figures["train_begin_wall"] = time.perf_counter(), time.time()
            figures["points"] = []

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            if logs and "loss" in logs:  # the loss was read with .item(): the GPU has finished the step
                figures["points"].append([state.global_step, self.trained_tokens(), time.perf_counter(),
                                          logs["loss"]])

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
                figures["max_memory_allocated"] = torch.cuda.max_memory_allocated()
                figures["max_memory_reserved"] = torch.cuda.max_memory_reserved()
                free, total = torch.cuda.mem_get_info()
                figures["device_used_at_end"] = total - free
            figures["train_end"] = time.perf_counter()
            figures["global_step"] = state.global_step
            raise Measured

    return Probe()


def throughput(points: list[list[float]], begin: float, end: float) -> tuple[float | None, float, int]:
    """(tokens/s, seconds, tokens) over steps 2..N (step 1 carries CUDA and kernel warm-up), or the whole
    run when it had one step."""
    if len(points) >= 2:
        tokens, seconds = points[-1][1] - points[0][1], points[-1][2] - points[0][2]
    else:
        tokens, seconds = (points[-1][1] if points else 0), end - begin
    return (tokens / seconds if seconds > 0 and tokens else None), seconds, int(tokens)


def child(spec_path: Path) -> int:
    """Train one run as `zephyr-train` would and write its raw figures to spec['result']."""
    spec = json.loads(spec_path.read_text())
    run = Run(**spec["run"])
    figures: dict[str, Any] = {"status": "failed", "reason": None}
    try:
        from zephyr_train.preflight.check import before_stage

        recipe = load(run, spec["overrides"])
        before_stage(recipe, (run.kind,))
        if run.kind == "sft":
            from zephyr_train.stages.sft import run_sft as runner
        else:
            from zephyr_train.stages.dpo import run_dpo as runner
        try:
            runner(recipe, overwrite=True, callbacks=[make_probe(figures)])
            figures["reason"] = "the stage ended without the probe's end-of-training call"
        except Measured:
            figures["status"] = "ok"
    except Exception as err:  # noqa: BLE001 - recorded in the run's JSON, the other runs go on
        traceback.print_exc()
        oom = type(err).__name__ == "OutOfMemoryError"
        figures["reason"] = ("CUDA out of memory" if oom else f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
                             if str(err) else type(err).__name__)
        figures["oom"] = oom
    if figures.get("points") is not None and "train_end" in figures:
        tps, seconds, tokens = throughput(figures["points"], figures["train_begin"], figures["train_end"])
        figures.update(tokens_per_second=tps, measured_seconds=seconds, measured_tokens=tokens,
                       train_seconds=figures["train_end"] - figures["train_begin"],
                       setup_seconds=figures["train_begin_wall"] - spec["started"])
    Path(spec["result"]).write_text(json.dumps(figures, default=str))
    return 0


def launch(run: Run, overrides: list[str], work: Path, timeout: float) -> dict[str, Any]:
    """Run the child for `run`; its log goes to work/NAME.log. Returns its figures (failed if it died)."""
    import subprocess

    spec = {"run": asdict(run), "overrides": overrides, "result": str(work / f"{run.name}.raw.json"),
            "started": time.time()}  # setup = imports, data, model load
    spec_path = work / f"{run.name}.spec.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled",
           "TOKENIZERS_PARALLELISM": "false"}
    with (work / f"{run.name}.log").open("w") as log:
        try:
            done = subprocess.run([sys.executable, str(Path(__file__).with_name("gpu_evidence.py")),
                                   "--child", str(spec_path)], stdout=log, stderr=subprocess.STDOUT, env=env,
                                  timeout=max(1.0, timeout), cwd=ROOT)
            code = done.returncode
        except subprocess.TimeoutExpired:
            return {"status": "failed", "reason": f"stopped after {timeout:.0f}s (time budget)"}
    result = Path(spec["result"])
    if not result.exists():
        return {"status": "failed", "reason": f"the run's process exited with {code}; see {work / run.name}.log"}
    return json.loads(result.read_text())
