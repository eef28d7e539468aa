"""Accelerate launch configs, as the preflight and a starting stage need to understand them.

`check --accelerate-config` reads the YAML itself (accelerate's loader imports torch): how many
processes, which sharding engine, whether it needs GPUs. Every launched process then runs
`started_as_asked`, `on_cpu_machine` and (when its stage starts) `process_state`: accelerate happily runs
a multi-process launch as N independent single-process jobs, all training on all the data and writing
one output directory, and exits 0 (a torchrun or GPU config on a CPU, a CPU config's one-process
launcher). These make such a launch either really distributed or a one-line error.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zephyr_train.config.recipe import read_yaml
from zephyr_train.config.trainer_fields import class_fields
from zephyr_train.errors import UserError

DISTRIBUTED_TYPES = ("NO", "MULTI_GPU", "DEEPSPEED", "FSDP", "MULTI_CPU")


@dataclass(frozen=True)
class Launch:
    """What a config means for memory and hardware."""

    source: str
    distributed_type: str = "NO"
    processes: int = 1
    machines: int = 1
    mixed_precision: str = "no"
    sharding: str | None = None  # "zero2", "zero3", "fsdp", or None (each process holds everything)
    offload: bool = False  # optimizer states (and params) kept in CPU memory
    on_cpu: bool = False

    @property
    def name(self) -> str:
        if self.on_cpu:
            return "CPU"
        if self.source == "<none>":
            return "no accelerate config"
        if self.sharding is None:
            return "DDP" if self.distributed_type == "MULTI_GPU" else "one process per GPU"
        return {"zero3": "ZeRO-3", "zero2": "ZeRO-2", "fsdp": "FSDP full shard"}[self.sharding] + \
            (" + CPU offload" if self.offload else "")


def _accelerate_keys() -> set[str]:
    return set(class_fields("accelerate.commands.config.config_args", "ClusterConfig"))


def _sharding(raw: dict, src: str) -> tuple[str | None, bool]:
    kind = raw.get("distributed_type")
    if kind == "DEEPSPEED":
        ds = raw.get("deepspeed_config") or {}
        if "deepspeed_config_file" not in ds and ds.get("zero_stage") not in (0, 1, 2, 3):
            raise UserError(f"{src}: deepspeed_config.zero_stage must be 0-3 (3 shards the model)")
        stage = ds.get("zero_stage", 3)
        offload = "cpu" in (ds.get("offload_optimizer_device"), ds.get("offload_param_device"))
        return (f"zero{stage}" if stage >= 2 else None), offload
    if kind == "FSDP":
        fsdp = raw.get("fsdp_config") or {}
        strategy = str(fsdp.get("fsdp_sharding_strategy", "FULL_SHARD"))
        full = fsdp.get("fsdp_reshard_after_forward", strategy in ("FULL_SHARD", "1", "HYBRID_SHARD"))
        return ("fsdp" if full not in (False, "false") else "zero2"), bool(fsdp.get("fsdp_offload_params"))
    return None, False


def read(path: str | Path) -> Launch:
    """A Launch from an accelerate config file; UserError on what accelerate would reject or misrun."""
    path = Path(path)
    src = str(path)
    raw = read_yaml(path, "accelerate config not found; see configs/ for one per setup")
    unknown = sorted(set(raw) - _accelerate_keys()) if isinstance(raw, dict) else ["<not a mapping>"]
    if unknown:
        raise UserError(f"{src}: accelerate does not know {', '.join(map(str, unknown))}")
    kind = raw.get("distributed_type", "NO")
    if kind not in DISTRIBUTED_TYPES:
        raise UserError(f"{src}: distributed_type must be one of {', '.join(DISTRIBUTED_TYPES)}, got {kind!r}")
    sharding, offload = _sharding(raw, src)
    processes = int(raw.get("num_processes", 1) or 1)
    if processes < 1:  # -1 in multi-node templates means "given at launch"
        processes = 1
    return Launch(source=src, distributed_type=kind, processes=processes, machines=int(raw.get("num_machines", 1)),
                  mixed_precision=str(raw.get("mixed_precision") or "no"), sharding=sharding, offload=offload,
                  on_cpu=bool(raw.get("use_cpu")) or kind == "MULTI_CPU")


def notes(launch: Launch) -> list[str]:
    """What a config needs that this machine lacks (fine for planning here, fatal when launched here)."""
    found = []
    if launch.distributed_type == "DEEPSPEED" and importlib.util.find_spec("deepspeed") is None:
        found.append(f"{launch.source} needs DeepSpeed, not installed here: pip install -e .[deepspeed]")
    if launch.source == "<none>" or launch.on_cpu or has_nvidia_gpu():
        return found
    if launch.distributed_type == "FSDP":
        found.append(f"{launch.source} is an FSDP config and this machine has no NVIDIA GPU: accelerate runs FSDP "
                     "only on GPUs, so launched here it stops (configs/deepspeed_zero3.yaml shards on a CPU too)")
    elif launch.source != FROM_LAUNCH:  # a launched process prints `on_cpu_machine`'s note instead
        found.append(f"{launch.source} is a GPU config and this machine has no NVIDIA GPU: launched here its "
                     f"{launch.processes} process(es) run on the CPU (gloo backend)")
    return found


# What `accelerate launch` exported, read once when this module is first imported (the CLI does so
# before any stage starts): `pin_precision` later rewrites ACCELERATE_MIXED_PRECISION, which is also
# the sign that accelerate started this process, so the launch is always judged from this copy.
LAUNCH_ENV: dict[str, str] = {
    key: value for key, value in os.environ.items()
    if key.startswith(("ACCELERATE_", "FSDP_")) or key in ("WORLD_SIZE", "CUDA_VISIBLE_DEVICES")
}


FROM_LAUNCH = "<accelerate launch>"  # a Launch read from this process's environment


def precision_of(trainer_args: dict[str, Any]) -> str:
    return "bf16" if trainer_args.get("bf16") else "fp16" if trainer_args.get("fp16") else "no"


def pin_precision(wanted: str) -> str | None:
    """Make the recipe's precision the one accelerate uses; returns the launcher's if it differed.

    `accelerate launch` with a bf16 config exports ACCELERATE_MIXED_PRECISION=bf16, which
    transformers applies whenever the recipe leaves bf16 off: on a CPU that made runs 3.8x slower.
    """
    asked = LAUNCH_ENV.get("ACCELERATE_MIXED_PRECISION")
    os.environ["ACCELERATE_MIXED_PRECISION"] = wanted
    return asked if asked and asked != wanted else None


def has_nvidia_gpu() -> bool:
    """Whether the NVIDIA driver sees a GPU, without importing torch."""
    return Path("/proc/driver/nvidia/gpus").is_dir() and any(Path("/proc/driver/nvidia/gpus").iterdir())


def from_env(env: dict[str, str] | None = None) -> Launch:
    """The Launch this process was started with, from what `accelerate launch` exports."""
    env = LAUNCH_ENV if env is None else env
    processes = int(env.get("WORLD_SIZE", "1"))
    on_cpu = env.get("ACCELERATE_USE_CPU", "").lower() in ("true", "1")
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        stage = int(env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3"))
        offload = "cpu" in (env.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE"),
                            env.get("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE"))
        return Launch(FROM_LAUNCH, "DEEPSPEED", processes, sharding=f"zero{stage}" if stage >= 2 else None,
                      offload=offload)
    if env.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return Launch(FROM_LAUNCH, "FSDP", processes, sharding="fsdp",
                      offload=env.get("FSDP_OFFLOAD_PARAMS", "").lower() == "true")
    if "ACCELERATE_MIXED_PRECISION" in env:
        return Launch(FROM_LAUNCH, "MULTI_CPU" if on_cpu else "MULTI_GPU", processes, on_cpu=on_cpu)
    return Launch("<none>")


def shards_model() -> bool:
    """Whether this process was launched with FSDP or ZeRO-3, which place (and shard) the weights themselves."""
    return from_env().sharding in ("zero3", "fsdp")


def launched_for_gpu(env: dict[str, str] | None = None) -> str | None:
    """The GPU setup an `accelerate launch` asked for, from the variables it exports; None otherwise.

    CPU configs export ACCELERATE_USE_CPU=True; DeepSpeed and FSDP export their own flags; a multi-GPU
    config starts WORLD_SIZE processes; the one-GPU config names its device (gpu_ids: "0").
    """
    env = LAUNCH_ENV if env is None else env
    if env.get("ACCELERATE_USE_CPU", "").lower() in ("true", "1"):
        return None
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        return "DeepSpeed"
    if env.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "FSDP"
    if "ACCELERATE_MIXED_PRECISION" not in env:
        return None  # not started by accelerate launch
    if int(env.get("WORLD_SIZE", "1")) > 1:
        return f"{env['WORLD_SIZE']} GPU processes"
    return "a GPU config" if env.get("CUDA_VISIBLE_DEVICES") else None


@dataclass(frozen=True)
class CpuLaunch:
    """What a launch needs on a machine without CUDA: the line to print, and trainer settings to add."""

    note: str
    trainer: dict[str, Any]


def _launcher_argv() -> list[str]:
    """The command line of the process that started this one (Linux; empty elsewhere)."""
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def _option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def started_as_asked(env: dict[str, str] | None = None, argv: list[str] | None = None) -> None:
    """Stop a launch that asked accelerate for N processes and got one. accelerate 1.15 starts a CPU
    config (`--cpu`, `use_cpu: true`, `distributed_type: MULTI_CPU`) through its one-process launcher
    whatever `num_processes` says, and that process trains alone and exits 0. Only that launcher exports
    ACCELERATE_USE_CPU without WORLD_SIZE; what was asked is read from its command line and config file."""
    env = LAUNCH_ENV if env is None else env
    if "ACCELERATE_USE_CPU" not in env or "WORLD_SIZE" in env:
        return
    argv = _launcher_argv() if argv is None else argv
    if not any("accelerate" in arg for arg in argv[:3]):
        return
    asked, config = _option(argv, "--num_processes"), _option(argv, "--config_file")
    if asked is None and config and Path(config).is_file():
        raw = read_yaml(Path(config), "accelerate config not found")
        asked = str(raw.get("num_processes", 1)) if isinstance(raw, dict) else None
    if asked and asked.isdigit() and int(asked) > 1:
        raise UserError(f"accelerate launch asked for {asked} processes but started 1: accelerate starts a CPU "
                        "config (--cpu, use_cpu: true or MULTI_CPU) as one process; use --config_file "
                        f"configs/cpu.yaml (it starts {asked} on a CPU) or torchrun --nproc_per_node {asked}")


def liger_kernel(trainer: dict[str, Any], stage: str, source: str) -> str | None:
    """`use_liger_kernel`: Liger's Triton kernels run on CUDA GPUs only. On a machine without one the key is
    turned off and the returned warning says why; on a GPU machine without the package it is one line saying
    what to install, before anything loads (transformers raises an ImportError once the model is loaded)."""
    if not trainer.get("use_liger_kernel"):
        return None
    if not has_nvidia_gpu():
        trainer["use_liger_kernel"] = False
        return (f"{source}: use_liger_kernel: true ignored on this machine: Liger's kernels are Triton kernels for "
                "CUDA GPUs and it has none")
    if importlib.util.find_spec("liger_kernel") is None:
        raise UserError(f"{source}: use_liger_kernel: true needs liger-kernel >= 0.3.0, not installed: pip install "
                        f"'liger-kernel>=0.3.0' (or pass {stage}.use_liger_kernel=false)")
    return None


def main_process() -> bool:
    """Whether this is rank 0 of the launch (or no launch), from the launcher's RANK: known before accelerate
    sets up its state, which a stage does only once its settings are known."""
    return os.environ.get("RANK", "0") == "0"


def process_state(trainer_args: dict[str, Any]) -> Any:
    """accelerate's view of this process, set up as the trainer will set it up, and checked against the process
    group: a rank that believes it is alone trains on all the data and writes every file (before this check,
    a `torchrun` of 2 processes on a CPU ran 2 whole single-process jobs into one directory and exited 0)."""
    from accelerate import PartialState

    cpu = bool(trainer_args.get("use_cpu")) or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("true", "1")
    state = PartialState(cpu=cpu, backend=trainer_args.get("ddp_backend"))
    started = int(os.environ.get("WORLD_SIZE", "1"))
    if state.num_processes != started:
        raise UserError(f"{started} processes were started (WORLD_SIZE={started}) but accelerate sees "
                        f"{state.num_processes} ({state.distributed_type}): each would train alone on all the data; "
                        "on a machine without a GPU export ACCELERATE_USE_CPU=true, on a GPU machine check "
                        "CUDA_VISIBLE_DEVICES")
    return state


def on_cpu_machine(env: dict[str, str] | None = None) -> CpuLaunch | None:
    """Make a launch on a machine without CUDA run as launched, or stop it (UserError).

    accelerate picks the CPU's process group (gloo) only when told it is on a CPU: a `torchrun` or GPU-config
    launch otherwise leaves each rank training alone on all the data, every rank writing the output and
    exiting 0. DeepSpeed's own start-up would pick NCCL; started on gloo first, ZeRO-2/3 train on a CPU with
    torch's AdamW (`deepspeed` from PyPI builds none of its own optimizers), once the trainer also asks for
    gloo (`ddp_backend`: without it accelerate counts one process and DeepSpeed stops on "Check batch
    related parameters"). FSDP has no CPU path in
    accelerate 1.15 (it silently falls back to DDP or to no wrapping), so it is refused.
    """
    if has_nvidia_gpu():
        return None
    env = LAUNCH_ENV if env is None else env
    engine, world = launched_for_gpu(env), int(os.environ.get("WORLD_SIZE", "1"))
    if engine == "FSDP":
        raise UserError("launched with FSDP (accelerate launch) but this machine has no CUDA GPU, and accelerate "
                        "runs FSDP only on GPUs; on a CPU use --config_file configs/deepspeed_zero3.yaml (ZeRO-3 "
                        "shards the model too) or torchrun --nproc_per_node N")
    if engine == "DeepSpeed":
        import deepspeed.comm

        deepspeed.comm.init_distributed(dist_backend="gloo", auto_mpi_discovery=False, verbose=False)
        return CpuLaunch(f"no CUDA GPU here: DeepSpeed's {world} process(es) run on the CPU (gloo backend, "
                         "torch's AdamW; nothing changes on a GPU)", {"ddp_backend": "gloo"})
    if world > 1 and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("true", "1"):
        os.environ["ACCELERATE_USE_CPU"] = "true"
        return CpuLaunch(f"no CUDA GPU here: the {world} processes train data-parallel on the CPU (gloo backend)", {})
    if engine is not None:
        return CpuLaunch(f"no CUDA GPU here: {engine} runs on the CPU", {})
    return None
