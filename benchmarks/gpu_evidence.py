"""GPU evidence in one command: the 7B recipes measured on one GPU, or the same code path on a CPU (--tiny).

    python benchmarks/gpu_evidence.py --out DIR [--tiny] [--steps N] [--only NAME,...] [--budget SECONDS]

1. Builds random-init Mistral-7B-v0.1 weights (the shape shipped in preflight/architectures.py; no Hub needed)
   on the GPU in bf16 and writes them once to /dev/shm, then synthetic UltraChat/UltraFeedback-like data with
   long-tailed lengths (benchmarks/evidence_build.py).
2. Runs, a few optimizer steps each, each in its own process, through the package's own stages
   (benchmarks/evidence_runs.py): QLoRA SFT and DPO and LoRA SFT and DPO at the public recipes' settings, full
   SFT with the largest per-GPU batch `check`'s estimator says fits, and LoRA DPO with each `dpo.lm_head` of the
   DPO-speed work (skipped, with the reason, when the installed recipe schema does not know the key).
   FlashAttention-2 when `flash_attn` is installed, SDPA otherwise.
3. Records per run: tokens/s (steps 2..N), MFU against the GPU's bf16 dense peak (named in the JSON),
   torch.cuda.max_memory_allocated / max_memory_reserved, and `zephyr-train check`'s estimate for the same
   setting with its ratio; writes DIR/<run>.json, DIR/evidence-<device>.json and .md, and prints the table.

Time: the runs stop being started once --budget seconds (default 450) have passed since the start, so the whole
command ends within 8 minutes on one H100/H200; the model build is not repeated when its directory exists.
--tiny: a 1.4M-parameter twin of the architecture on the CPU in fp32, the same code path, under 3 minutes.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import evidence_build as build  # noqa: E402
import evidence_figures as figures  # noqa: E402
import evidence_runs as runs  # noqa: E402
import sides  # noqa: E402

GIB = 1024**3
TINY_MEMORY_GIB = 2.0  # the memory the batch search assumes on a CPU (--tiny): exercises the same search
FIT_SHARE = 0.9  # the full-SFT batch is the largest whose estimate is within this share of the GPU's memory
MAX_BATCH = {"gpu": 64, "tiny": 8}
MIN_RUN_SECONDS = {"gpu": 40.0, "tiny": 5.0}  # no run is started with less than this left of the budget
VERSIONS = ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "flash-attn", "datasets")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="directory for the JSONs and the table")
    parser.add_argument("--tiny", action="store_true", help="scaled-down model on the CPU (the tested code path)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 4; --tiny 3)")
    parser.add_argument("--only", default=None, help="comma-separated run names: "
                        + ", ".join(r.name for r in runs.all_runs()))
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds after which no run is started (default 450; --tiny 170)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is None and args.out is None:
        parser.error("--out DIR is required")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be 1 or more")
    return args


def select(only: str | None) -> list[runs.Run]:
    chosen = runs.all_runs()
    if only:
        names = [n.strip() for n in only.split(",") if n.strip()]
        unknown = [n for n in names if n not in {r.name for r in chosen}]
        if unknown:
            sys.exit(f"gpu_evidence: --only: unknown run {unknown[0]!r}; choose from "
                     + ", ".join(r.name for r in chosen))
        chosen = [r for r in chosen if r.name in names]
    return chosen


def versions() -> dict[str, str | None]:
    found = {}
    for name in VERSIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def device_facts(tiny: bool) -> dict[str, Any]:
    import torch

    if tiny:
        import platform

        cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
        model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
        return {"device": "cpu", "device_name": f"CPU {model.group(1) if model else platform.machine()}",
                "memory_bytes": TINY_MEMORY_GIB * GIB, "peak": figures.cpu_peak()}
    if not torch.cuda.is_available():
        sys.exit("gpu_evidence: no CUDA device here; run with --tiny for the CPU code path")
    name = torch.cuda.get_device_name()
    return {"device": "cuda", "device_name": name, "memory_bytes": torch.cuda.mem_get_info()[1],
            "peak": figures.gpu_peak(name)}


def largest_batch(run: runs.Run, overrides: list[str], memory_bytes: float, cap: int) -> tuple[int, float]:
    """The largest per-GPU batch whose estimate is within FIT_SHARE of the memory, and that estimate."""
    recipe = runs.load(run, overrides)
    best = (1, sides.estimate_for(recipe, run.kind, 1).total)
    for batch in range(2, cap + 1):
        total = sides.estimate_for(recipe, run.kind, batch).total
        if total > FIT_SHARE * memory_bytes:
            break
        best = (batch, total)
    return best


def describe(run: runs.Run, overrides: list[str], raw: dict[str, Any], facts: dict[str, Any],
             lengths: dict[str, dict[str, float]], common: dict[str, Any]) -> dict[str, Any]:
    """The run's JSON: its settings, what was measured, and check's estimate next to it."""
    from zephyr_train.errors import UserError
    from zephyr_train.preflight import memory
    from zephyr_train.preflight.architectures import architecture_of

    try:
        recipe = runs.load(run, overrides)
    except UserError:  # a skipped run's key the schema does not know: describe the rest of its settings
        recipe = runs.load(run, [o for o in overrides if not o.startswith("dpo.lm_head=")])
    args, stage = recipe.stage(run.kind).trainer, recipe.stage(run.kind)
    arch = architecture_of(recipe.model.name_or_path)
    est = sides.estimate_for(recipe, run.kind)
    mean_tokens = min(lengths[run.kind]["mean"], args.get("max_length") or 1024)
    lora = memory.lora_params(arch, stage.lora) if stage.lora else None
    per_token = figures.flops_per_token(arch, mean_tokens, run.kind, lora,
                                        reference_forward=not args.get("precompute_ref_log_probs"))
    tps = raw.get("tokens_per_second")
    allocated, reserved = raw.get("max_memory_allocated"), raw.get("max_memory_reserved")
    gib = (lambda b: b / GIB if b is not None else None)  # noqa: E731
    return {
        **common, "name": run.name, "stage": run.kind, "method": run.method,
        "recipe": f"recipes/zephyr-7b-beta/{run.recipe}", "lm_head": run.lm_head,
        "status": raw.get("status"), "reason": raw.get("reason"),
        "dtype": recipe.model.dtype, "quantization": "nf4" if recipe.model.quantization else None,
        "attn_implementation": recipe.model.attn_implementation,
        "steps": args.get("max_steps"), "global_step": raw.get("global_step"),
        "per_device_train_batch_size": args.get("per_device_train_batch_size"),
        "gradient_accumulation_steps": args.get("gradient_accumulation_steps"),
        "max_length": args.get("max_length"), "gradient_checkpointing": bool(args.get("activation_checkpointing")),
        "optim": args.get("optim"), "lora_r": stage.lora.r if stage.lora else None, "trained_params": lora,
        "mean_tokens_per_example": mean_tokens,
        "tokens_per_second": tps, "measured_tokens": raw.get("measured_tokens"),
        "measured_seconds": raw.get("measured_seconds"), "train_seconds": raw.get("train_seconds"),
        "setup_seconds": raw.get("setup_seconds"), "losses": [p[3] for p in raw.get("points") or []],
        "model_flops_per_token": per_token, "peak": facts["peak"], "mfu": figures.mfu(tps, per_token, facts["peak"]),
        "max_memory_allocated_gib": gib(allocated), "max_memory_reserved_gib": gib(reserved),
        "device_used_at_end_gib": gib(raw.get("device_used_at_end")),
        "estimate_gib": est.total / GIB, "estimate_parts_gib": {k: v / GIB for k, v in est.parts.items()},
        "estimate_ratio": figures.ratio(est.total, reserved),
        "estimate_ratio_allocated": figures.ratio(est.total, allocated),
        "overrides": overrides,
    }


def write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child is not None:
        return runs.child(args.child)
    started = time.time()
    mode = "tiny" if args.tiny else "gpu"
    steps = args.steps or (3 if args.tiny else 4)
    budget = args.budget or (170.0 if args.tiny else 450.0)
    chosen = select(args.only)
    out = args.out.resolve()
    work = out / "logs"  # each run's log, spec and raw figures: small, kept with the results
    work.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="gpu-evidence-"))  # data and stage directories, removed at the end
    if args.tiny:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the CPU code path, also on a GPU machine (children inherit)
    facts = device_facts(args.tiny)
    arch, dtype = (build.TINY, "float32") if args.tiny else (build.FULL, "bfloat16")
    model_dir, build_seconds = build.build_model(arch, build.model_root(args.tiny, arch.params * 2),
                                                 facts["device"], dtype)
    scale = 1 / 8 if args.tiny else 1.0
    cap = MAX_BATCH[mode]
    data = build.write_data(scratch / "data", sft_rows=steps * cap * 3 + 32, dpo_rows=steps * 16 + 32, scale=scale)
    lengths = build.token_lengths(model_dir, data)
    attn = "flash_attention_2" if not args.tiny and importlib.util.find_spec("flash_attn") else "sdpa"
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    slug = re.sub(r"[^a-z0-9]+", "-", facts["device_name"].lower()).strip("-") or facts["device"]
    common = {"date": date, "device": facts["device"], "device_name": facts["device_name"],
              "device_memory_gib": None if args.tiny else facts["memory_bytes"] / GIB,
              "model": f"random-init {'tiny twin of ' if args.tiny else ''}Mistral-7B-v0.1 architecture, "
                       f"{arch.params / 1e6:,.1f}M parameters", "model_build_seconds": build_seconds,
              "data_token_lengths": lengths, "versions": versions()}
    print(f"gpu_evidence: {common['model']} in {model_dir} (built in {build_seconds:.0f}s); {facts['device_name']}; "
          f"{len(chosen)} runs, {steps} steps each, attention {attn}", flush=True)

    results = []
    for run in chosen:
        overrides = runs.overrides_for(run, model_dir, data[run.kind], scratch / run.name, steps, attn,
                                      args.tiny)
        raw: dict[str, Any]
        reason = runs.skip_reason(run, overrides)
        left = budget - (time.time() - started)
        if reason is None and left < MIN_RUN_SECONDS[mode]:
            reason = f"time budget: {left:.0f}s left of {budget:.0f}s"
        if reason is None and run.method == "full":  # the largest batch check says fits this device
            batch, total = largest_batch(run, overrides, facts["memory_bytes"], cap)
            overrides.append(f"{run.kind}.per_device_train_batch_size={batch}")
        if reason is not None:
            raw = {"status": "skipped", "reason": reason}
        else:
            print(f"gpu_evidence: {run.name} ...", flush=True)
            raw = runs.launch(run, overrides, work, budget - (time.time() - started))
            while run.method == "full" and raw.get("oom") and batch > 1 \
                    and budget - (time.time() - started) >= MIN_RUN_SECONDS[mode]:
                batch //= 2  # the estimate was too low: halve, and say so in the JSON
                overrides[-1] = f"{run.kind}.per_device_train_batch_size={batch}"
                raw = runs.launch(run, overrides, work, budget - (time.time() - started))
                raw["reason"] = f"out of memory at the estimator's batch; measured at {batch}"
        result = describe(run, overrides, raw, facts, lengths, common)
        write_json(out / f"{run.name}.json", result)
        results.append(result)
        print(f"gpu_evidence: {run.name}: {result['status']}"
              + (f", {result['tokens_per_second']:,.0f} tokens/s" if result.get("tokens_per_second") else "")
              + (f" ({result['reason']})" if result.get("reason") else ""), flush=True)

    shutil.rmtree(scratch, ignore_errors=True)
    header = {**common, "peak": facts["peak"], "steps": steps, "attn_implementation": attn,
              "wall_seconds": time.time() - started, "model_dir": str(model_dir)}
    text = figures.table(results, header)
    (out / f"evidence-{slug}.md").write_text(text)
    write_json(out / f"evidence-{slug}.json", {**header, "runs": results})
    print("\n" + text + f"\ngpu_evidence: done in {header['wall_seconds']:.0f}s; JSON and table in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
