"""The run report's curves: each series read from the stage's log history or summary.json, never computed
a second way, so the report agrees with the console and the summary.

What this fixed: the throughput chart plotted TRL's cumulative `num_tokens` (512 a step under our packed
collator: ~1,000 tokens/s against the console's 5,625); now it plots the `tokens_per_second` the console
logged (loss-carrying tokens, as summary.json counts them) with the summary's mean as a reference line.
The preference-accuracy curve started at 0.0 while the tile said 0.5 (TRL counts ties as wrong); now the
held-out accuracy before and after training comes from summary.json (ties count half) and TRL's train
batches are a separate, labelled series. Learning rates get one chart per stage (SFT's 1e-3 flattened
DPO's 5e-5 on a shared axis); grad norm and entropy are plotted; legends sit outside the plot area.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zephyr_train.stages import KINDS


def plots() -> list[tuple[str, str, str, list[tuple[str, str, str]]]]:
    """(file, title, y label, [(stage, source, label)]) of every plot: each registered kind's own
    (`StageKind.plots`), then every stage's learning rate and the gradient norms side by side."""
    out = [(name, title, ylabel, [(kind.name, source, label) for source, label in lines])
           for kind in KINDS.values() for name, title, ylabel, lines in kind.plots]
    out += [(f"{kind.name}_learning_rate.png", f"{kind.label} learning rate", "learning rate",
             [(kind.name, "log:learning_rate", kind.label)]) for kind in KINDS.values()]
    out.append(("grad_norm.png", "Gradient norm (before clipping)", "grad norm",
                [(kind.name, "log:grad_norm", kind.label) for kind in KINDS.values()]))
    return out


def series(history: list[dict], key: str) -> tuple[list, list]:
    points = [(e["step"], e[key]) for e in history if isinstance(e.get(key), int | float) and "step" in e
              and not (key == "loss" and "eval_loss" in e)]
    return [p[0] for p in points], [p[1] for p in points]


def curve(stage: Any, source: str) -> tuple[list, list]:
    """(steps, values) of one series of one stage (a `report.StageRun`)."""
    kind, key = source.split(":", 1)
    if kind == "log":
        return series(stage.history, key)
    summary = stage.summary
    last = (summary.global_step if summary else 0) or max((e.get("step", 0) for e in stage.history), default=0)
    if kind == "summary":
        value = getattr(summary, key, None)
        if not isinstance(value, int | float):
            return [], []
        return ([0, last], [value, value]) if key == "tokens_per_second" else ([last], [value])
    before, after = getattr(summary, "held_out_before", None), getattr(summary, "held_out_after", None)
    points = [(0, getattr(before, key, None)), (last, getattr(after, key, None))]
    points = [(x, y) for x, y in points if isinstance(y, int | float)]
    return [p[0] for p in points], [p[1] for p in points]


def curves(stages: dict[str, Any]) -> dict[str, dict[str, tuple[list, list]]]:
    """Every plot's series with at least one point: {file: {label: (steps, values)}}."""
    out: dict[str, dict[str, tuple[list, list]]] = {}
    for name, _, _, lines in plots():
        drawn = {}
        for stage, source, label in lines:
            if stage in stages:
                xs, ys = curve(stages[stage], source)
                if xs:
                    drawn[label] = (xs, ys)
        if drawn:
            out[name] = drawn
    return out


def plot(data: dict[str, dict[str, tuple[list, list]]], out: Path) -> list[tuple[str, str]]:
    """Draw `curves`' series as PNGs in `out`; returns (file name, title) of each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    made = []
    for name, title, ylabel, _ in plots():
        if name not in data:
            continue
        fig, ax = plt.subplots(figsize=(7.2, 3.4), dpi=100)
        for label, (xs, ys) in data[name].items():
            reference = "summary.json" in label
            ax.plot(xs, ys, marker="o" if reference or len(xs) < 3 else None,
                    linestyle=":" if "mean" in label else "--" if reference or "eval" in label else "-", label=label)
        ax.set(title=title, xlabel="step", ylabel=ylabel)
        if "learning_rate" in name:
            ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # never over a curve
        fig.tight_layout()
        fig.savefig(out / name, bbox_inches="tight")
        plt.close(fig)
        made.append((name, title))
    return made
