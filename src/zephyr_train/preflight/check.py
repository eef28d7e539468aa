"""`zephyr-train check`: what will go wrong with a recipe, found in seconds before any GPU time is spent.

Offline, no weights, no downloads, no torch: the recipe's cross-field rules, its local data (columns,
roles, the first rows rendered with the chat template), and per-GPU memory, optimizer steps, tokens
and global batch of each stage on the hardware named. The same rules run at the start of every stage
command and `run`, so a bad recipe fails before the model loads. What is particular to a stage kind
(its columns, rows, learning-rate range, rules) is read from its `StageKind`, through `Stage.spec`.
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from zephyr_train.config import lora
from zephyr_train.config.recipe import Recipe
from zephyr_train.data import chat_template, mixture, packaged
from zephyr_train.errors import UserError
from zephyr_train.preflight import intended, launcher, memory, trackers
from zephyr_train.preflight.architectures import KNOWN, Architecture, architecture_of, lora_target_problem
from zephyr_train.preflight.launcher import Launch

# Memory (GiB) and bf16 support of the GPUs users name with --gpu.
GPU_TYPES = {"t4": (15, False), "v100": (32, False), "v100-16": (16, False), "a10g": (24, True), "l4": (24, True),
             "rtx3090": (24, True), "rtx4090": (24, True), "a6000": (48, True), "l40s": (48, True),
             "a100-40": (40, True), "a100": (80, True), "h100": (80, True), "h200": (141, True)}
# Published split sizes (dataset cards), for step counts when the data is on the Hub.
PUBLISHED_ROWS = {("HuggingFaceH4/ultrachat_200k", "train_sft"): 207_865,
                  ("HuggingFaceH4/ultrachat_200k", "test_sft"): 23_110,
                  ("HuggingFaceH4/ultrafeedback_binarized", "train_prefs"): 61_135,
                  ("HuggingFaceH4/ultrafeedback_binarized", "test_prefs"): 2_000}
FIRST_ROWS = 5


@dataclass
class Hardware:
    gpus: int = 1
    memory_gib: float | None = None
    bf16: bool | None = None  # None: not known
    name: str | None = None


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    fits: bool | None = None  # None when no memory was given or the model is unknown


# --- rules that need neither data nor weights -------------------------------------------------------


def rules(recipe: Recipe, launch: Launch, hardware: Hardware, arch: Architecture | None, report: Report) -> None:
    src, quant = recipe.source, recipe.model.quantization
    four_bit = bool(quant and quant.load_in_4bit)
    sharded = launch.sharding in ("zero3", "fsdp")
    if four_bit and sharded and quant.bnb_4bit_quant_storage != quant.bnb_4bit_compute_dtype:
        report.errors.append(
            f"{src}: 4-bit weights under {launch.name} are sharded as {quant.bnb_4bit_quant_storage or 'uint8'} "
            f"tensors; set model.quantization.bnb_4bit_quant_storage: {quant.bnb_4bit_compute_dtype} (the compute "
            "dtype) so they shard and gather with the rest of the model")
    for stage in recipe.stages:
        _stage_rules(recipe, stage.kind, launch, hardware, arch, report)
    report.errors.extend(trackers.problems(recipe))  # every report_to package installed, before anything is written
    report.errors.extend(f"{src}: {p}" for s in recipe.stages if s.lora and arch and (p := lora_target_problem(
        arch, s.lora.target_modules, f"{s.kind}.lora")))


def _stage_rules(recipe: Recipe, name: str, launch: Launch, hardware: Hardware, arch: Architecture | None,
                 report: Report) -> None:
    _precision_rules(recipe, name, launch, hardware, report)
    _objective_rules(recipe, name, report)
    _length_rules(recipe, name, arch, report)


def _precision_rules(recipe: Recipe, name: str, launch: Launch, hardware: Hardware, report: Report) -> None:
    src, bf16 = recipe.source, recipe.stage(name).trainer.get("bf16")
    if bf16 and hardware.bf16 is False:
        report.errors.append(f"{src}: {name}.bf16 is on but the {hardware.name} has no bfloat16; set {name}.bf16=false "
                             f"{name}.fp16=true and model.dtype=float16, or use an Ampere or newer GPU")
    if bf16 and launch.on_cpu:
        report.warnings.append(f"{src}: {name}.bf16 on a CPU launch ({launch.source}) runs several times slower "
                               "than fp32")
    if memory.pure_low_precision(recipe, name, launch):
        report.warnings.append(
            f"{src}: {name} fine-tunes {recipe.model.dtype} weights fully with no fp32 master copy ({launch.name}): "
            "AdamW updates smaller than bf16's precision are lost; launch with a DeepSpeed or FSDP config "
            "(configs/deepspeed_zero3.yaml) or set model.dtype=float32")


def _objective_rules(recipe: Recipe, name: str, report: Report) -> None:
    """The loss can learn something: the kind's rules (template spans, beta), the learning rate, an eval set
    when one is asked for."""
    src, stage = recipe.source, recipe.stage(name)
    args = stage.trainer
    report.errors.extend(stage.spec.rules(recipe, stage))
    lr = args.get("learning_rate")
    low, high = stage.spec.lr_sane(stage.lora is not None)
    if lr is not None and not recipe.model.name_or_path.startswith("builtin:") and not low <= lr <= high:
        kind = "LoRA" if stage.lora is not None else "full fine-tuning"
        report.warnings.append(f"{src}: {name}.learning_rate {lr:g} is outside {low:g}-{high:g}, the usual range "
                               f"for {stage.spec.label} with {kind} (Zephyr: SFT 2e-5 full / 2e-4 LoRA, DPO 5e-7 / "
                               "5e-6)")
    evaluates = str(args.get("eval_strategy", "no")).lower() not in ("no", "none", "false") or args.get("do_eval")
    if evaluates and stage.eval is None:
        report.errors.append(f"{src}: {name}.eval_strategy asks for evaluation but {name} has no eval section; add "
                             f"{name}.eval.split (e.g. {stage.spec.eval_split}) or set "
                             f"{name}.eval_strategy=no")


def _length_rules(recipe: Recipe, name: str, arch: Architecture | None, report: Report) -> None:
    src, stage = recipe.source, recipe.stage(name)
    max_length = stage.trainer.get("max_length")
    if arch is not None and max_length and max_length > arch.max_position_embeddings:
        report.errors.append(f"{src}: {name}.max_length {max_length} is above the model's context of "
                             f"{arch.max_position_embeddings} tokens")


# --- data ----------------------------------------------------------------------------------------


def first_rows(path: Path, split: str, limit: int = FIRST_ROWS) -> tuple[list[dict], list[str], int | None]:
    """(first `limit` rows, columns, row count or None) of a local split, read without loading it whole."""
    if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        import datasets

        loaded = datasets.load_from_disk(str(path))
        ds = loaded if isinstance(loaded, datasets.Dataset) else loaded[split] if split in loaded else None
        if ds is None:
            raise UserError(f"split {split!r} not in {path}; it has {', '.join(loaded)}")
        return ds.select(range(min(limit, len(ds)))).to_list(), ds.column_names, len(ds)
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.stem == split and f.suffix in mixture.FILE_BUILDERS)
        if not files:
            raise UserError(f"no {split}.jsonl/.json/.parquet in {path}")
        path = files[0]
    elif not path.is_file():
        path = Path(sorted(glob.glob(str(path)))[0])
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        rows = next(pf.iter_batches(batch_size=limit)).to_pylist()
        return rows, pf.schema_arrow.names, pf.metadata.num_rows
    if path.suffix == ".jsonl":
        rows = []
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip() and len(rows) < limit:
                    rows.append(json.loads(line))
        with path.open("rb") as handle:
            count = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 24), b""))
        return rows, list(rows[0]) if rows else [], count
    data = json.loads(path.read_text(encoding="utf-8"))
    data = data if isinstance(data, list) else next(iter(data.values()))
    return data[:limit], list(data[0]) if data else [], len(data)


def render_problem(messages: list[dict], template: str, needs_spans: bool) -> str | None:
    """Why `messages` does not render well with `template`, or None."""
    if template is None:  # chat_template auto with a tokenizer not yet downloaded: checked when the stage starts
        return None
    text, spans = chat_template.render(template, messages)
    for message in messages:
        if message["content"] not in text:
            return f"render: a {message['role']} message does not appear in the rendered text"
    if needs_spans:
        trained = "".join(text[a:b] for a, b in spans)
        if any(m["content"] not in trained for m in messages if m["role"] == "assistant"):
            return "render: an assistant reply falls outside the template's {% generation %} spans"
    return None


def check_data(recipe: Recipe, name: str, report: Report) -> dict[str, int | None]:
    """Check the local datasets of a stage; returns the training rows per source (None: unknown)."""
    stage, src = recipe.stage(name), recipe.source
    inference, training = chat_template.resolve(recipe.chat_template, src, recipe.model) or (None, None)
    try:
        mixture.check_sources(stage, name, src)  # missing paths, test splits trained on
    except UserError as err:
        report.errors.append(str(err))
        return {}
    rows: dict[str, int | None] = {}
    for i, spec in enumerate(stage.datasets):
        where = f"{src}: {name}.datasets[{i}]"
        kind, path = mixture.locate(spec)
        if kind == "hub":
            count = PUBLISHED_ROWS.get((spec.path, spec.split))
            rows[spec.path] = round(count * spec.weight) if count else None
            report.lines.append(f"  data: {spec.path} {spec.split} is on the Hub: not opened (checks read local "
                                f"data only){f'; {count:,} rows published' if count else ''}")
            continue
        try:
            first, columns, count = first_rows(path, spec.split)
        except (UserError, ValueError, OSError, IndexError, StopIteration) as err:
            report.errors.append(f"{where}: cannot read split {spec.split!r} of {spec.path}: {err}")
            continue
        renames = {ours: theirs for ours, theirs in (spec.columns or {}).items()}
        missing = [c for c in stage.spec.columns if renames.get(c, c) not in columns]
        if missing:
            report.errors.append(f"{where}: {spec.path} has no {missing[0]!r} column (it has {', '.join(columns)}); "
                                 f"map one with columns: {{{missing[0]}: <its column>}}")
            continue
        wanted = [*stage.spec.columns, *stage.spec.optional_columns]
        first = [{ours: row.get(renames.get(ours, ours)) for ours in wanted} for row in first]
        problems = [stage.spec.row_problem(row, (inference, training), stage) for row in first]
        rendering = [p for p in problems if p and p.startswith("render: ")]
        if rendering:  # the template itself is wrong for this data: every row will be
            report.errors.append(f"{where}: the first rows do not render with the chat template: {rendering[0][8:]}")
        elif any(problems):
            dropped = [p for p in problems if p]
            report.warnings.append(f"{where}: {len(dropped)} of the first {len(first)} rows will be dropped "
                                   f"({dropped[0]})")
        if stage.eval is not None and stage.eval.split:
            try:
                first_rows(path, stage.eval.split)
            except (UserError, ValueError, OSError, IndexError, StopIteration) as err:
                report.errors.append(f"{where}: no eval split {stage.eval.split!r} ({err}); set {name}.eval.split "
                                     f"to one it has, or {name}.eval.fraction to carve one from train")
        rows[spec.path] = round(count * spec.weight) if count is not None else None
        report.lines.append(f"  data: {spec.path} {spec.split}: {count if count is not None else '?'} rows, "
                            f"columns ok, first {len(first)} rows render with the {recipe.chat_template[:20]} template")
    return rows


# --- memory, steps, batch ------------------------------------------------------------------------


def _fit(est: memory.Estimate, hardware: Hardware) -> str:
    if hardware.memory_gib is None:
        return ""
    verdict = "fits" if est.total <= hardware.memory_gib * memory.GIB else "does NOT fit"
    return f" -> {verdict} in {hardware.memory_gib:g} GiB"


def alternatives(arch: Architecture, recipe: Recipe, name: str, launch: Launch, hardware: Hardware) -> list[str]:
    """Setups that would fit where the recipe's does not: smaller micro-batches (same global batch), ZeRO-3,
    CPU offload, more GPUs; the cheapest change first."""
    memory_gib = hardware.memory_gib or 80
    stage = recipe.stage(name)
    batch = stage.setting("per_device_train_batch_size")
    zero3 = Launch(source="configs/deepspeed_zero3.yaml", distributed_type="DEEPSPEED", sharding="zero3")
    offload = replace(zero3, source="configs/deepspeed_zero3_offload.yaml", offload=True)
    setups = [] if memory.pure_low_precision(recipe, name, launch) else [(launch, hardware.gpus)]
    setups += [(zero3, hardware.gpus), (zero3, 8), (offload, 8)]
    found = []
    for setup, gpus in setups:
        for micro in sorted({batch, *[b for b in (8, 4, 2, 1) if b < batch]}, reverse=True):
            est = memory.estimate(arch, recipe, name, setup, gpus, micro)
            if est.total <= memory_gib * memory.GIB:
                meant = memory.global_batch(stage, intended.gpus_of(recipe) or hardware.gpus)  # on its GPUs
                accumulation = max(1, meant // (micro * gpus))
                change = [] if micro == batch and gpus == hardware.gpus else [
                    f"{name}.per_device_train_batch_size={micro}", f"{name}.gradient_accumulation_steps={accumulation}"]
                config = setup.source if setup.source != "<none>" else \
                    "configs/single_gpu.yaml" if gpus == 1 else "configs/multi_gpu.yaml"
                found.append(f"{setup.name} on {gpus} x {memory_gib:g} GiB: {est.total / memory.GIB:.1f} GiB per GPU, "
                             f"global batch {micro * accumulation * gpus}:\n      "
                             + intended.setup_flags(recipe, config, gpus, change, hardware.memory_gib))
                break
        if len(found) == 2:
            break
    if recipe.model.quantization is None:
        found.append("or QLoRA: 4-bit base + LoRA (recipes/zephyr-7b-beta/qlora.yaml fits one 24 GiB GPU)")
    return found


def plan(recipe: Recipe, arch: Architecture | None, launch: Launch, hardware: Hardware, rows: dict,
         name: str, report: Report) -> None:
    stage = recipe.stage(name)
    args, gpus = stage.trainer, hardware.gpus
    gb = memory.global_batch(stage, gpus)
    seq = stage.setting("max_length")
    known = None if any(v is None for v in rows.values()) else sum(rows.values())
    steps = memory.optimizer_steps(known, stage, gpus)
    packed = stage.spec.packs_rows and args.get("packing")
    steps_text = f"{'up to ' if packed else ''}{steps:,} optimizer steps" if steps else \
        "steps unknown (row count unknown)"
    report.lines.append(f"{name}: global batch {gb} = {stage.setting('per_device_train_batch_size')} per GPU x "
                        f"{stage.setting('gradient_accumulation_steps')} accumulation x {gpus} GPU(s); {steps_text}"
                        f"{' (packing merges rows)' if packed and steps else ''}; up to {gb * seq:,} tokens per step"
                        f"{f', {gb * seq * steps:,} in all' if steps else ''}")
    if arch is None:
        report.lines.append(f"  memory: unknown architecture for {recipe.model.name_or_path} (not shipped, not a "
                            "local path, not in the Hub cache); estimate skipped")
        return
    est = memory.estimate(arch, recipe, name, launch, gpus)
    report.lines.append(f"  memory ({launch.name}, GiB): {est.describe()}{_fit(est, hardware)}")
    on = bool(args.get("activation_checkpointing"))
    other = memory.estimate(arch, recipe, name, launch, gpus, checkpointing=not on)
    report.lines.append(f"  gradient checkpointing is {'on' if on else 'off'}; {'off' if on else 'on'}: activations "
                        f"{other.parts['activations'] / memory.GIB:.1f} GiB, {other.total / memory.GIB:.1f} GiB per GPU"
                        + (f" (set {name}.gradient_checkpointing=true)" if not on and other.total < est.total else ""))
    if hardware.memory_gib is not None:
        fits = est.total <= hardware.memory_gib * memory.GIB
        report.fits = fits if report.fits is None else report.fits and fits
        if not fits:
            for line in alternatives(arch, recipe, name, launch, hardware):
                report.lines.append(f"  would fit: {line}")


def hardware_from(gpus: int | None, gpu_memory: float | None, gpu: str | None, launch: Launch) -> Hardware:
    if gpu is not None and gpu.lower() not in GPU_TYPES:
        raise UserError(f"--gpu {gpu!r} is not one we know; use one of {', '.join(GPU_TYPES)} or give --gpu-memory")
    known_memory, bf16 = GPU_TYPES.get((gpu or "").lower(), (None, None))
    count = gpus or (launch.processes if launch.source != "<none>" else 1)
    if gpus is not None and gpus < 1:
        raise UserError(f"--gpus must be 1 or more, got {gpus}")
    return Hardware(gpus=count, memory_gib=gpu_memory or known_memory, bf16=bf16, name=gpu)


def check(recipe: Recipe, launch: Launch | None = None, hardware: Hardware | None = None, data: bool = True,
          estimate: bool = True, stages: tuple[str, ...] | None = None) -> Report:
    """Everything `zephyr-train check` finds, as lines to print (of `stages`, default all the recipe's);
    raises nothing for recipe problems."""
    launch = launch or Launch(source="<none>")
    hardware = hardware or Hardware(gpus=launch.processes)
    report = Report()
    arch = architecture_of(recipe.model.name_or_path, recipe.model.revision)
    rules(recipe, launch, hardware, arch, report)
    gguf = Path(recipe.model.name_or_path).expanduser()
    if gguf.suffix == ".gguf" and gguf.is_file():  # read from its header; rebuilt as a model when a stage starts
        try:
            packaged.gguf_architecture(gguf, recipe.source)
        except UserError as err:
            report.errors.append(str(err))
    report.warnings.extend(launcher.notes(launch))
    name = recipe.model.name_or_path
    where = "shipped" if name in KNOWN else "built-in" if name.startswith("builtin:") else "read from its config"
    size = "" if arch is None else f"{arch.params / 1e9:.2f}B" if arch.params >= 1e9 else f"{arch.params / 1e6:.1f}M"
    report.lines.append(f"model: {name}: " + (f"{size} parameters ({where}), context {arch.max_position_embeddings}"
                                              if arch else "architecture unknown offline"))
    report.lines.append(chat_template.describe(recipe.chat_template, recipe.model))
    shown = "" if launch.source == "<none>" else f" ({launch.source})"
    report.lines.append(f"launch: {launch.name}{shown}, {hardware.gpus} "
                        f"{'CPU process(es)' if launch.on_cpu else 'GPU(s)'}"
                        + (f" x {hardware.memory_gib:g} GiB" if hardware.memory_gib else ""))
    for name in stages or [stage.kind for stage in recipe.stages]:
        if recipe.stage(name) is None:
            continue
        mark = len(report.lines)
        rows = check_data(recipe, name, report) if data else {}
        data_lines, report.lines[mark:] = report.lines[mark:], []
        if estimate:
            plan(recipe, arch, launch, hardware, rows, name, report)
        report.lines[mark + 1:mark + 1] = data_lines  # under the stage's heading line
    return report


def before_stage(recipe: Recipe, stages: tuple[str, ...]) -> None:
    """The preflight's rules and data checks at the start of a stage command or `run`: the first error is
    raised, warnings printed once (by the main process)."""
    launcher.started_as_asked()
    on_cpu = launcher.on_cpu_machine()
    for stage in recipe.stages if on_cpu else ():
        for key, value in on_cpu.trainer.items():
            stage.trainer.setdefault(key, value)
    kernels = [launcher.liger_kernel(stage.trainer, stage.kind, recipe.source) for stage in recipe.stages]
    report = check(recipe, launcher.from_env(), estimate=False, stages=stages)
    if not report.errors:  # PEFT's own LoraConfig rules (imports torch), still before any model loads
        lora.check_with_peft([recipe.stage(name) for name in stages if recipe.stage(name)], recipe.source)
    if len(report.errors) == 1:
        raise UserError(report.errors[0])
    if report.errors:  # all of them at once, as `check` lists them; each already names the recipe file
        raise UserError(f"{len(report.errors)} problems: " + " | ".join(report.errors))
    bf16 = [name for name in stages if recipe.stage(name) and recipe.stage(name).trainer.get("bf16")]
    if bf16:  # torch loads here only when the recipe asks for bf16, and only once the rules passed
        import torch

        if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            raise UserError(f"{recipe.source}: {bf16[0]}.bf16 is on but {torch.cuda.get_device_name()} has no "
                            f"bfloat16; set {bf16[0]}.bf16=false {bf16[0]}.fp16=true model.dtype=float16")
    if launcher.main_process():
        if on_cpu:
            print(f"zephyr-train: note: {on_cpu.note}")
        for warning in [*filter(None, kernels), *report.warnings]:
            print(f"zephyr-train: warning: {warning}")
