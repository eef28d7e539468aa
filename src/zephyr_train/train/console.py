"""What a person sees in the terminal while a stage runs: one banner, labelled bars, compact log lines.

Before this module, `make smoke` printed 26 raw Python dicts of up to 399 characters with every
number quoted as a string (`'loss': '8.341'`), five unlabelled bars (`100/100`, `13/13`, ...) so SFT
training, evaluation and DPO held-out scoring looked alike, and nothing said what a stage was about to
do until it ended. Here:

- `banner` prints, before training, the model, precision, device and processes, rows kept and dropped,
  optimizer steps, tokens per step and the output folder;
- `StageConsole` replaces transformers' `ProgressCallback`: bars named `SFT train`, `SFT eval`,
  `DPO held-out (before training)`, ..., and one line per logging step with numbers as numbers and
  only the figures a person watches (everything stays in `log_history.json`);
- `quiet_libraries` drops, at the logger that emits it, a library warning that cannot apply to the run
  (bitsandbytes' "Failed to load CPU gemm_4bit_forward ... pip install kernels" in a run without 4-bit
  weights), and transformers' FutureWarning about `is_gradient_checkpointing`, which PEFT and TRL's DPO
  read; `attach` turns off `dataloader_pin_memory` where there is no accelerator to pin for, which
  is the cause of torch's `pin_memory` warning. No blanket `warnings.filterwarnings`.

Training throughput in the log lines counts the tokens that carry loss, as `summary.json`'s
`tokens_per_second` does, so the console, the summary and the report tell the same number.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from typing import Any

from zephyr_train.config.stage_kind import StageKind

# (log key, short name, format) in the order they are printed; anything else stays in log_history.json only
SHOWN = [
    ("loss", "loss", ".4f"), ("eval_loss", "eval_loss", ".4f"), ("train_loss", "mean_loss", ".4f"),
    ("rewards/margins", "margin", ".3f"), ("rewards/accuracies", "acc", ".2f"),
    ("eval_rewards/margins", "eval_margin", ".3f"), ("eval_rewards/accuracies", "eval_acc", ".2f"),
    ("mean_token_accuracy", "token_acc", ".3f"), ("eval_mean_token_accuracy", "eval_token_acc", ".3f"),
    ("grad_norm", "grad_norm", ".3g"), ("entropy", "entropy", ".3f"), ("learning_rate", "lr", ".2e"),
    ("tokens_per_second", "tokens/s", ",.0f"), ("train_runtime", "runtime_s", ".1f"), ("epoch", "epoch", ".2f"),
]
BITSANDBYTES_CPU_KERNEL = ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward")
GRADIENT_CHECKPOINTING_ALIAS = r"`is_gradient_checkpointing` is deprecated"


class _DropMessage(logging.Filter):
    """Drops one library message by its start; every other record of that logger passes."""

    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


def quiet_libraries(four_bit: bool) -> None:
    """Before the libraries load: silence warnings that cannot apply to this run, at their source logger.

    bitsandbytes' CPU backend warns at import that its optional 4-bit CPU kernel is missing: it matters
    only for 4-bit (QLoRA) weights, so it is kept for those runs and dropped for the others."""
    name, start = BITSANDBYTES_CPU_KERNEL
    logger = logging.getLogger(name)
    if not four_bit and not any(isinstance(f, _DropMessage) and f.start == start for f in logger.filters):
        logger.addFilter(_DropMessage(start))
    # PEFT (wrapping a LoRA model) and TRL (DPO) read transformers' deprecated `is_gradient_checkpointing`:
    # a FutureWarning about library internals no user can act on. Only that message, from that module.
    warnings.filterwarnings("ignore", message=GRADIENT_CHECKPOINTING_ALIAS, category=FutureWarning,
                            module=r"transformers\.modeling_utils")


def number(value: Any, spec: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if spec == ".2e" and value == 0:
        return "0"
    return format(value, spec)


def log_line(label: str, logs: dict[str, Any], step: int, max_steps: int | None,
             shown: tuple[tuple[str, str, str], ...] = ()) -> str:
    """One compact line for one trainer log: `SFT step 10/100 | loss 4.5120 | grad_norm 1.23 | lr 9.80e-04`;
    `shown` adds a kind's own figures (StageKind.shown: ORPO's log-odds ratio, KTO's KL) after the loss."""
    evaluation = any(key.startswith("eval_") for key in logs)
    where = f"step {step}/{max_steps}" if max_steps else f"step {step}"
    kind = " eval" if evaluation else " training ended," if "train_runtime" in logs else ""
    parts = [f"{label}{kind} {where}"]
    for key, short, spec in [*SHOWN[:3], *shown, *SHOWN[3:]]:
        if isinstance(logs.get(key), int | float) and not isinstance(logs.get(key), bool):
            parts.append(f"{short} {number(logs[key], spec)}")
    return " | ".join(parts)


def planned_steps(rows: int, per_device: int, accumulation: int, processes: int, epochs: float,
                  max_steps: int = -1) -> int:
    """Optimizer steps as transformers' Trainer counts them (a last partial accumulation is a step)."""
    if max_steps and max_steps > 0:
        return max_steps
    batches = math.ceil(rows / max(1, per_device * processes))
    per_epoch = max(batches // accumulation + int(batches % accumulation > 0), 1)
    return math.ceil(epochs * per_epoch)


def banner(info: dict[str, Any]) -> str:
    """The lines printed before a stage trains; `info` is what `describe` gathers (plain values, testable)."""
    head = f"== {info['label']}: {info['title']} "
    dropped = info.get("dropped") or {}
    dropped_text = (f"{sum(dropped.values()):,} dropped (" + ", ".join(f"{k}: {v}" for k, v in sorted(dropped.items()))
                    + ")") if dropped else "none dropped"
    unit = info["unit"]
    trainable = info["trainable_params"]
    params = (f"{info['params'] / 1e6:,.1f}M parameters, "
              + ("all trained" if trainable == info["params"] else f"{trainable / 1e6:,.2f}M trained (LoRA)"))
    per_step = info["per_device"] * info["accumulation"] * info["processes"]
    if info["sequences_per_row"] == 1:
        tokens = f"up to {per_step * info['max_length']:,} tokens per step ({per_step} rows of {info['max_length']}" \
                 f"{', packed' if info.get('packing') else ''})"
    else:
        tokens = f"{per_step} {unit} per step, each side up to {info['max_length']} tokens"
    lines = [
        head + "=" * max(4, 100 - len(head)),
        f"  model      {info['model']}: {params}",
        f"  precision  {info['weights_dtype']} weights, {info['compute']} compute; device {info['device']}, "
        f"{info['processes']} process{'es' if info['processes'] != 1 else ''}"
        + (f" ({info['distributed']})" if info.get("distributed", "none") != "none" else ""),
        f"  data       {info['rows']:,} training {unit} kept, {dropped_text}; "
        + (f"{info['eval_rows']:,} held out for eval" if info.get("eval_rows") is not None else "no eval split"),
        f"  steps      {info['steps']:,} optimizer steps ({info['epochs']:g} epoch(s); batch {info['per_device']} x "
        f"{info['accumulation']} accumulation x {info['processes']} process(es)); {tokens}",
        f"  output     {info['out']}",
    ]
    if info.get("resume"):
        lines.append(f"  resuming   from {info['resume']}")
    return "\n".join(lines)


def kind_info(kind: StageKind) -> dict[str, Any]:
    """What the banner says of a stage kind: its name, words and row shape."""
    return {"stage": kind.name, "label": kind.label, "title": kind.title, "unit": kind.unit,
            "sequences_per_row": kind.sequences_per_row}


def over_processes(count: int) -> int:
    """A per-process count summed over the processes of the launch; every process must call it."""
    from accelerate import PartialState

    state = PartialState()
    if state.num_processes == 1:
        return count
    import torch
    from accelerate.utils import reduce

    return int(reduce(torch.tensor(count, device=state.device), "sum").item())


def engine(trainer: Any) -> str:
    """How the trainer's processes share the work, in summary.json's words (read from accelerate's state,
    not from the launch: a launch can ask for what accelerate did not do)."""
    state = trainer.accelerator.state
    kind = str(state.distributed_type).split(".")[-1]
    if kind == "DEEPSPEED":
        return f"deepspeed-zero{state.deepspeed_plugin.zero_stage}"
    if kind == "FSDP":
        return "fsdp"
    return "ddp" if trainer.accelerator.num_processes > 1 else "none"


def launch_figures(trainer: Any, summary: Any) -> None:
    """Record on a stage's result what trained it: the world size and the engine."""
    summary.processes, summary.distributed = trainer.accelerator.num_processes, engine(trainer)


def describe(trainer: Any, kind: StageKind, rows: int, dropped: dict, model: str, eval_rows: int | None,
             resume: Any = None) -> dict[str, Any]:
    """Plain values for `banner`, read from the built trainer (the settings it will really use)."""
    args, net = trainer.args, trainer.model
    processes = trainer.accelerator.num_processes  # args.world_size says 1 under a MULTI_CPU (gloo) launch
    params = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    first = next(net.parameters())
    four_bit = bool(getattr(net, "is_loaded_in_4bit", False) or getattr(getattr(net, "base_model", None),
                                                                          "is_loaded_in_4bit", False))
    compute = "bf16 mixed" if args.bf16 else "fp16 mixed" if args.fp16 else str(first.dtype).replace("torch.", "")
    return {
        **kind_info(kind), "model": model, "params": params, "trainable_params": trainable,
        "weights_dtype": "4-bit NF4" if four_bit else str(first.dtype).replace("torch.", ""), "compute": compute,
        "device": str(args.device), "processes": processes, "distributed": engine(trainer), "rows": rows,
        "dropped": dict(dropped),
        "eval_rows": eval_rows, "per_device": args.per_device_train_batch_size,
        "accumulation": args.gradient_accumulation_steps, "epochs": args.num_train_epochs,
        "steps": planned_steps(len(trainer.train_dataset), args.per_device_train_batch_size,
                               args.gradient_accumulation_steps, processes, args.num_train_epochs,
                               args.max_steps),
        "max_length": getattr(args, "max_length", None), "packing": getattr(args, "packing", False),
        "out": args.output_dir, "resume": str(resume) if resume else None,
    }


class CountingCollator:
    """Wraps the trainer's collator to count the tokens that carry loss in training batches, so the log
    lines' tokens/s means what summary.json's does. Every other attribute is the wrapped collator's."""

    def __init__(self, inner: Any, model_of: Any) -> None:
        self.inner, self.model_of, self.trained_tokens = inner, model_of, 0

    def __call__(self, examples: list) -> Any:
        batch = self.inner(examples)
        model = self.model_of()
        labels = batch.get("labels") if hasattr(batch, "get") else None
        if labels is not None and (model is None or model.training):
            self.trained_tokens += int((labels != -100).sum())
        return batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["inner"], name)


def stage_console(kind: StageKind, counter: CountingCollator | None) -> Any:
    """The callback that replaces transformers' ProgressCallback (made here: transformers loads lazily)."""
    from tqdm.auto import tqdm
    from transformers.trainer_callback import ProgressCallback

    label = kind.label

    class StageConsole(ProgressCallback):
        def __init__(self) -> None:
            super().__init__()
            self.last: tuple[float, int] | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                self.training_bar = tqdm(total=state.max_steps, desc=f"{label} train", unit="step",
                                         dynamic_ncols=True)
            self.current_step = state.global_step
            if self.training_bar is not None:
                self.training_bar.update(state.global_step)
            self.last = (time.perf_counter(), over_processes(counter.trained_tokens) if counter else 0)

        def on_prediction_step(self, args: Any, state: Any, control: Any, eval_dataloader: Any = None,
                               **kwargs: Any) -> None:
            if state.is_world_process_zero and self.prediction_bar is None and eval_dataloader is not None:
                when = "" if self.training_bar is not None else \
                    " (before training)" if state.global_step == 0 else " (after training)"
                self.prediction_bar = tqdm(total=len(eval_dataloader), desc=f"{label} {kind.eval_name}{when}",
                                           unit="batch", leave=False, dynamic_ncols=True)
            if self.prediction_bar is not None:
                self.prediction_bar.update(1)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            if not logs:
                return
            # every process reaches a training log together (the trainer has just averaged the loss over them)
            if counter is not None and "loss" in logs and self.last is not None:
                now, tokens = time.perf_counter(), over_processes(counter.trained_tokens)
                if now > self.last[0] and tokens > self.last[1]:  # the first batch may be collated before the clock
                    rate = round((tokens - self.last[1]) / (now - self.last[0]), 1)
                    logs["tokens_per_second"] = state.log_history[-1]["tokens_per_second"] = rate
                self.last = (now, tokens)
            if not state.is_world_process_zero:
                return
            tqdm.write(log_line(label, logs, state.global_step, state.max_steps or None, kind.shown))

    return StageConsole()


def attach(trainer: Any, kind: StageKind, train: Any, evaluation: Any, dropped: dict, model: str,
           resume: Any = None) -> None:
    """The stages' one hook: print the banner and replace the trainer's console callback."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    if str(trainer.args.device).startswith("cpu") and trainer.args.dataloader_pin_memory:
        trainer.args.dataloader_pin_memory = False  # nothing to pin for: torch would warn at every dataloader
    counter = None
    if kind.token_throughput:
        counter = trainer.data_collator = CountingCollator(trainer.data_collator, lambda: trainer.model)
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    # first, so the tokens/s it adds to a log entry is in log_history.json when the tracking callback writes it
    trainer.callback_handler.callbacks.insert(0, stage_console(kind, counter))
    if trainer.args.process_index == 0:
        print(banner(describe(trainer, kind, len(train), dropped, model,
                              len(evaluation) if evaluation is not None else None, resume)), flush=True)
