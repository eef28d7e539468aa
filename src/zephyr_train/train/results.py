"""A stage's figures as typed results, and the one formatter the console, the report and the card share.

Each stage kind has one dataclass of figures (`stages/sft.py`'s `SFTResult`, `stages/dpo.py`'s
`DPOResult`), all built on `StageResult`. They are written to the stage's `summary.json` under the same
keys as the string-keyed dicts they replace, so run folders made before them still load in `report` and
`push`: `from_json` ignores keys it does not know and fills the ones it lacks with their defaults.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from zephyr_train import run_files

T = TypeVar("T", bound="Figures")


@dataclass
class Figures:
    """A figure set: to and from the JSON of summary.json, nested figure sets included."""

    def to_json(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls: type[T], raw: dict[str, Any] | None) -> T:
        hints = typing.get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            if f.name in (raw or {}):
                values[f.name] = _typed(hints[f.name], raw[f.name])
        return cls(**values)


def _plain(value: Any) -> Any:
    if isinstance(value, Figures):
        return value.to_json()
    return value


def _typed(hint: Any, value: Any) -> Any:
    """A nested figure set from its JSON (`{}` means absent, as older summaries wrote it)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) else (hint,)
    for option in options:
        if isinstance(option, type) and issubclass(option, Figures):
            return option.from_json(value) if value else None
    return value


@dataclass
class DataReport(Figures):
    """What the mixture took and dropped (data/mixture.py's report)."""

    sources: list[dict[str, Any]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    eval_overlap_removed: int = 0


@dataclass(kw_only=True)
class StageResult(Figures):
    """What every stage reports; a kind's result class adds its own figures."""

    stage: str
    train_loss_first: float | None = None
    train_loss_last: float | None = None
    train_loss_mean: float | None = None
    global_step: int = 0
    epochs: float | None = None
    train_runtime_s: float | None = None
    wall_time_s: float | None = None
    model_dir: str = ""
    adapter: bool = False  # model_dir holds a LoRA adapter
    merged_model_dir: str | None = None  # the adapter merged into its base, loadable without PEFT
    data: DataReport = field(default_factory=DataReport)
    patches: dict[str, str] = field(default_factory=dict)  # each TRL patch: "applied" or "skipped: <reason>"
    processes: int = 1  # the world size that trained
    distributed: str = "none"  # none | ddp | deepspeed-zero2 | deepspeed-zero3 | fsdp (console.engine)

    @property
    def final_model(self) -> str:
        """The directory people load: the merged model when there is one, else the stage's own."""
        return self.merged_model_dir or self.model_dir

    def headline(self) -> str:
        """The stage's figures in one line: the end of a stage and of a run print the same words."""
        return f"train loss {fmt(self.train_loss_first)} -> {fmt(self.train_loss_last)}"

    def card_rows(self, cell: Callable[[Any], str]) -> list[tuple[str, str]]:
        """The model card's results table, each value through `cell`; empty figures left out."""
        rows = [("final train loss", self.train_loss_last), ("mean train loss", self.train_loss_mean),
                *self.loss_rows(), ("steps", self.global_step), ("epochs", self.epochs),
                ("train runtime (s)", self.train_runtime_s)]
        return [(k, cell(v)) for k, v in rows if v is not None] + self.extra_rows(cell)

    def tiles(self, label: str, cell: Callable[[Any], str]) -> list[tuple[str, str]]:
        """The report's figure tiles for this stage, `label` its kind's ("SFT")."""
        return [(f"{label} train loss", f"{cell(self.train_loss_first)} → {cell(self.train_loss_last)}"),
                *[(f"{label} {name}", cell(value)) for name, value in self.loss_rows() if value is not None],
                *self.extra_tiles(label, cell),
                (f"{label} steps / time", f"{self.global_step} / {cell(self.wall_time_s)} s")]

    def loss_rows(self) -> list[tuple[str, Any]]:
        """A kind's held-out loss rows (SFT: eval loss), shown after the train losses."""
        return []

    def extra_rows(self, cell: Callable[[Any], str]) -> list[tuple[str, str]]:
        """A kind's own card rows after the common ones (DPO: held-out preference figures)."""
        return []

    def extra_tiles(self, label: str, cell: Callable[[Any], str]) -> list[tuple[str, str]]:
        return []

    def write(self, directory: Path) -> Path:
        path = directory / run_files.SUMMARY
        path.write_text(json.dumps(self.to_json(), indent=2))
        return path


def common_figures(trainer: Any, result: Any, wall: float, out: Path, report: dict, dropped: dict) -> dict[str, Any]:
    """The `StageResult` fields every stage reads off its finished TRL trainer (`result`: `trainer.train()`'s
    output), as keyword arguments for the kind's result class."""
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"train_loss_first": losses[0] if losses else None, "train_loss_last": losses[-1] if losses else None,
            "train_loss_mean": result.metrics.get("train_loss"), "global_step": trainer.state.global_step,
            "epochs": trainer.state.epoch, "train_runtime_s": result.metrics.get("train_runtime"),
            "wall_time_s": wall, "model_dir": str(out), "adapter": hasattr(trainer.model, "peft_config"),
            "data": DataReport(sources=report["sources"], dropped=dict(dropped),
                               eval_overlap_removed=report["eval_overlap_removed"])}


def fmt(x: Any) -> str:
    """A figure as the summaries print it."""
    return f"{x:.3f}" if isinstance(x, float) else str(x)
