"""The eval stage in the run report and the model card: a table of every score for the SFT model and the
final model side by side (the paper's ablation table), the paper's own numbers next to them, and a
per-category MT-Bench bar chart. Reads OUTPUT_DIR/eval/summary.json only; kept out of report.py so the
report can be rewritten without touching it."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from zephyr_train.eval import mt_bench, stage
from zephyr_train.eval.harness import main_metric

TITLES = {"sft": "SFT model", "dpo": "final model (SFT + DPO)"}
# Zephyr paper, ablation (MT-Bench / AlpacaEval win %): SFT only 6.64 / 85.65; SFT then DPO 7.00 / 86.07.
# Judged by GPT-4 (MT-Bench) and GPT-4 (AlpacaEval): comparable to ours only under the same judge.
PAPER = {("mt-bench", "sft"): 6.64, ("mt-bench", "dpo"): 7.00, ("alpaca-eval", "sft"): 85.65,
         ("alpaca-eval", "dpo"): 86.07}
PAPER_COLUMN = "Zephyr-7B paper (judge: GPT-4)"
ALPACA = "AlpacaEval win rate"
CHART = "eval_mt_bench_categories.png"


def rows(results: dict) -> tuple[list[str], list[list[Any]]]:
    """(model columns, [metric, value per model, paper values]) from the eval summary. The MT-Bench score's
    row names its judge (and says partial after --limit); the paper's GPT-4-judged figures stand in their
    own column."""
    models = list(results.get("models", {}))
    metrics: dict[str, dict[str, Any]] = {}
    paper_of: dict[str, str] = {}

    def put(name: str, kind: str, value: Any) -> None:
        if value is not None:
            metrics.setdefault(name, {})[kind] = value

    for kind, benches in results.get("models", {}).items():
        mt = benches.get("mt-bench") or {}
        if mt.get("judged"):
            paper_of[mt_bench.title(mt)] = "mt-bench"
            put(mt_bench.title(mt), kind, mt.get("score"))
            put("MT-Bench turn 1", kind, mt.get("turn_1"))
            put("MT-Bench turn 2", kind, mt.get("turn_2"))
            for category, value in (mt.get("categories") or {}).items():
                put(f"MT-Bench {category}", kind, value)
            put("MT-Bench verdicts at -1 (left out)", kind, mt.get("failed"))
        elif mt:
            put(mt_bench.title(mt), kind, f"{mt.get('questions')} answered, not judged")
        alpaca = benches.get("alpaca-eval") or {}
        if alpaca:
            paper_of[ALPACA] = "alpaca-eval"
            put(ALPACA, kind, alpaca.get("win_rate") if alpaca.get("judged") else "outputs only")

        for task, task_metrics in ((benches.get("lm-eval") or {}).get("tasks") or {}).items():
            found = main_metric(task_metrics)
            if found:
                put(f"{task} ({found[0]})", kind, found[1])
    body = [[name, *(values.get(k) for k in models), _paper(paper_of.get(name), models)]
            for name, values in metrics.items()]
    return models, body


def _paper(bench: str | None, models: list[str]) -> str:
    found = [f"{TITLES.get(k, k)}: {PAPER[(bench, k)]:.2f}" for k in models if (bench, k) in PAPER]
    return "; ".join(found) if found else ""


def chart(results: dict, out: Path) -> Path | None:
    """Grouped bars: MT-Bench score per category, one bar per model."""
    judged = {k: b["mt-bench"]["categories"] for k, b in results.get("models", {}).items()
              if (b.get("mt-bench") or {}).get("judged") and b["mt-bench"].get("categories")}
    if not judged:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    categories = sorted({c for cats in judged.values() for c in cats})
    fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=100)
    width = 0.8 / len(judged)
    for i, (kind, cats) in enumerate(judged.items()):
        xs = [j + i * width for j in range(len(categories))]
        ax.bar(xs, [cats.get(c) or 0 for c in categories], width, label=TITLES.get(kind, kind))
    ax.set_xticks([j + width * (len(judged) - 1) / 2 for j in range(len(categories))], categories, rotation=20)
    ax.set(title="MT-Bench score per category", ylabel="score (1-10)", ylim=(0, 10))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / CHART)
    plt.close(fig)
    return out / CHART


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "-" if value is None else str(value)


def html_section(run_dir: str | Path, files_dir: str = "report_files") -> str:
    """The report's "Evaluation" section; empty when the run has no eval results."""
    results = stage.load(run_dir)
    if not results or not results.get("models"):
        return ""
    models, body = rows(results)
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in ["metric", *(TITLES.get(k, k) for k in models), PAPER_COLUMN])
    cells = "".join("<tr>" + "".join(f"<td>{esc(_cell(v))}</td>" for v in row) + "</tr>" for row in body)
    parts = ["<h2>Evaluation</h2>", "<p class=muted>MT-Bench: single-answer grading by the judge named in the row, "
             "mean of the verdicts not at -1 (1-10), as FastChat's show_result. The paper's column is Zephyr-7B's "
             "ablation, judged by GPT-4: comparable only when the judge is GPT-4 and the run is not partial.</p>",
             f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>"]
    made = chart(results, Path(run_dir) / files_dir)
    if made:
        parts.append(f"<div class=plots><figure><img src='{esc(files_dir)}/{CHART}' "
                     "alt='MT-Bench score per category'></figure></div>")
    return "".join(parts)


def card_rows(run_dir: str | Path, kind: str) -> list[tuple[str, str]]:
    """The model card's results rows for one stage's model."""
    results = stage.load(run_dir)
    if not results or kind not in results.get("models", {}):
        return []
    models, body = rows({"models": {kind: results["models"][kind]}})
    return [(str(row[0]), _cell(row[1])) for row in body if row[1] is not None]
