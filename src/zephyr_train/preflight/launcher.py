"""Accelerate launch configs, as the preflight and a starting stage need to understand them.

`check --accelerate-config` reads the YAML itself (accelerate's loader imports torch): how many
processes, which sharding engine, whether it needs GPUs. `gpu_guard` runs in every launched process:
accelerate happily starts a GPU config on a machine without CUDA, and the public DDP config then runs
eight independent CPU copies of the whole job, all writing one output directory.
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
    if launch.source != "<none>" and not launch.on_cpu and not has_nvidia_gpu():
        found.append(f"{launch.source} is a GPU config and this machine has no NVIDIA GPU: launched here it stops "
                     "with an error (configs/cpu.yaml runs on a CPU)")
    return found


# What `accelerate launch` exported, read once when this module is first imported (the CLI does so
# before any stage starts): `pin_precision` later rewrites ACCELERATE_MIXED_PRECISION, which is also
# the sign that accelerate started this process, so the launch is always judged from this copy.
LAUNCH_ENV: dict[str, str] = {
    key: value for key, value in os.environ.items()
    if key.startswith(("ACCELERATE_", "FSDP_")) or key in ("WORLD_SIZE", "CUDA_VISIBLE_DEVICES")
}


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
        return Launch("<accelerate launch>", "DEEPSPEED", processes, sharding=f"zero{stage}" if stage >= 2 else None,
                      offload=offload)
    if env.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return Launch("<accelerate launch>", "FSDP", processes, sharding="fsdp",
                      offload=env.get("FSDP_OFFLOAD_PARAMS", "").lower() == "true")
    if "ACCELERATE_MIXED_PRECISION" in env:
        return Launch("<accelerate launch>", "MULTI_CPU" if on_cpu else "MULTI_GPU", processes, on_cpu=on_cpu)
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


def gpu_guard() -> None:
    """Stop a GPU launch on a machine without CUDA before every process writes the same output directory."""
    engine = launched_for_gpu()
    if engine is None:
        return
    import torch

    if not torch.cuda.is_available():
        raise UserError(f"launched with {engine} (accelerate launch) but this machine has no CUDA GPU; "
                        "on a CPU use --config_file configs/cpu.yaml, or run without accelerate launch")
