"""The run report: RUN_DIR/report.html with PNG curves, data sizes, the recipe and sample answers.

Written at the end of `zephyr-train run` and by `zephyr-train report RUN_DIR` for any run, finished
or not: it reads only what the stages leave on disk (summary.json, the log history that `tracking`
keeps, or a checkpoint's trainer_state.json, and recipe.resolved.yaml), so a run still training can
be looked at. The answers of the SFT and the final model to a few held-out prompts (greedy, short)
are shown side by side: that comparison, not the loss, is what tells a person whether DPO helped.
One self-contained HTML file; plots under RUN_DIR/report_files/.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zephyr_train import run_files
from zephyr_train.config.recipe import STAGES, load_resolved
from zephyr_train.config.secrets import scrub
from zephyr_train.eval import report_section as eval_report
from zephyr_train.run_files import LOG_HISTORY, REPORT, REPORT_FILES, RESOLVED_RECIPE

FILES = REPORT_FILES
N_PROMPTS, MAX_NEW_TOKENS = 4, 64
REPETITION_PENALTY = 1.3


@dataclass
class StageRun:
    name: str
    path: Path
    summary: dict | None = None
    history: list[dict] = field(default_factory=list)
    recipe_text: str = ""

    @property
    def status(self) -> str:
        if self.summary:
            return "finished"
        step = max((e.get("step", 0) for e in self.history), default=0)
        return f"in progress (step {step} logged)" if self.history else "started, nothing logged yet"


def history_of(stage_dir: Path) -> list[dict]:
    """The stage's log history: tracking's log file, else the newest trainer_state.json there is."""
    if (stage_dir / LOG_HISTORY).exists():
        return json.loads((stage_dir / LOG_HISTORY).read_text())
    last = stage_dir.last_checkpoint(stage_dir)
    for state in (stage_dir / "trainer_state.json", last / "trainer_state.json" if last else None):
        if state and state.exists():
            return json.loads(state.read_text()).get("log_history", [])
    return []


def read_stages(run_dir: Path) -> list[StageRun]:
    found = []
    for name in STAGES:
        path = run_dir / name
        if not path.is_dir():
            continue
        summary_file, resolved = path / run_files.SUMMARY, path / RESOLVED_RECIPE
        found.append(StageRun(
            name, path, json.loads(summary_file.read_text()) if summary_file.exists() else None, history_of(path),
            scrub(resolved.read_text(encoding="utf-8")) if resolved.exists() else ""))
    return found


# --- plots -------------------------------------------------------------------------------------------


def series(history: list[dict], key: str) -> tuple[list, list]:
    points = [(e["step"], e[key]) for e in history if isinstance(e.get(key), int | float) and "step" in e]
    return [p[0] for p in points], [p[1] for p in points]


def throughput(history: list[dict]) -> tuple[list, list]:
    """Tokens per second between consecutive training logs (TRL logs cumulative num_tokens)."""
    logs = [e for e in history if "num_tokens" in e and "time" in e and "loss" in e]
    steps, rates = [], []
    for prev, cur in zip(logs, logs[1:], strict=False):
        if cur["time"] > prev["time"]:
            steps.append(cur["step"])
            rates.append((cur["num_tokens"] - prev["num_tokens"]) / (cur["time"] - prev["time"]))
    return steps, rates


# (file, title, y label, [(stage, history key, label)], kind): "line" for train logs, eval keys as markers
PLOTS = [
    ("sft_loss.png", "SFT loss", "loss", [("sft", "loss", "train"), ("sft", "eval_loss", "eval")]),
    ("dpo_loss.png", "DPO loss", "loss", [("dpo", "loss", "train"), ("dpo", "eval_loss", "eval")]),
    ("dpo_rewards.png", "DPO rewards", "reward", [
        ("dpo", "rewards/chosen", "chosen"), ("dpo", "rewards/rejected", "rejected"),
        ("dpo", "rewards/margins", "margin (chosen - rejected)"), ("dpo", "eval_rewards/margins", "eval margin")]),
    ("dpo_accuracy.png", "DPO preference accuracy", "accuracy", [
        ("dpo", "rewards/accuracies", "train"), ("dpo", "eval_rewards/accuracies", "eval")]),
    ("learning_rate.png", "Learning rate", "learning rate", [
        ("sft", "learning_rate", "SFT"), ("dpo", "learning_rate", "DPO")]),
    ("throughput.png", "Throughput", "tokens / s", [("sft", "throughput", "SFT"), ("dpo", "throughput", "DPO")]),
]


def plot(stages: dict[str, StageRun], out: Path) -> list[tuple[str, str]]:
    """Every plot with at least one point, as (file name relative to the report, title)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    made = []
    for name, title, ylabel, lines in PLOTS:
        fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
        drawn = 0
        for stage, key, label in lines:
            if stage not in stages:
                continue
            history = stages[stage].history
            xs, ys = throughput(history) if key == "throughput" else series(history, key)
            if xs:
                eval_key = key.startswith("eval_")
                ax.plot(xs, ys, marker="o" if eval_key or len(xs) < 3 else None, linestyle="--" if eval_key else "-",
                        label=label)
                drawn += 1
        if drawn:
            ax.set(title=title, xlabel="step", ylabel=ylabel)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            fig.savefig(out / name)
            made.append((f"{FILES}/{name}", title))
        plt.close(fig)
    return made


# --- sample answers ------------------------------------------------------------------------------------


def held_out_prompts(stage_dirs: list[Path], n: int = N_PROMPTS) -> list[str]:
    """The first prompts of the recipe's held-out split (SFT's, else DPO's); none if there is no split."""
    from zephyr_train.data import mixture

    for stage_dir in stage_dirs:
        recipe = load_resolved(stage_dir)
        spec = recipe.stage(stage_dir.name)
        if spec is None or spec.eval is None or spec.eval.split is None:
            continue
        rows = mixture.load_split(spec.datasets[0], spec.eval.split, f"{stage_dir.name}.eval")
        prompts = []
        for row in rows.select(range(min(len(rows), 4 * n))):
            text = row.get("prompt") or next((m["content"] for m in row.get("messages") or row.get("chosen") or []
                                              if m.get("role") == "user"), None)
            if text and text not in prompts:
                prompts.append(text)
        if prompts:
            return prompts[:n]
    return []


def answers(model_dir: Path, prompts: list[str]) -> list[str]:
    from tqdm.auto import tqdm

    from zephyr_train.publish import chat

    model, tokenizer = chat.load(model_dir)
    # greedy decoding of small or briefly trained models falls into loops (the tiny smoke model repeats
    # newlines); a mild repetition penalty shows what the model knows instead
    sampling = chat.Sampling(max_new_tokens=MAX_NEW_TOKENS, do_sample=False, repetition_penalty=REPETITION_PENALTY)
    return [chat.reply(model, tokenizer, [{"role": "user", "content": p}], sampling)
            for p in tqdm(prompts, desc=f"Sample answers of {model_dir.parent.name}/{model_dir.name}")]


def model_dir_of(stage: StageRun) -> Path | None:
    return stage.path if stage.summary else None


def sample_answers(stages: list[StageRun]) -> tuple[list[str], dict[str, list[str]]]:
    """(prompts, {column title: answers}) for the SFT model and the final model, when finished."""
    finished = [s for s in stages if model_dir_of(s)]
    if not finished:
        return [], {}
    prompts = held_out_prompts([s.path for s in stages if (s.path / RESOLVED_RECIPE).exists()])
    if not prompts:
        return [], {}
    columns = {}
    for stage in finished:
        title = "SFT model" if stage.name == "sft" else "final model (DPO)"
        columns[title] = answers(stage.path, prompts)
    return prompts, columns


# --- HTML --------------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:20px 32px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;color:#b9c0cc;font-size:14px}main{padding:16px 32px 40px;max-width:1400px}
h2{font-size:18px;margin:28px 0 10px}.tiles{display:flex;flex-wrap:wrap;gap:12px}
.tile{background:#fff;border-radius:8px;padding:12px 16px;min-width:150px;box-shadow:0 1px 2px #0002}
.tile b{display:block;font-size:20px}.tile span{font-size:12px;color:#5b6475}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:12px}
.plots figure{margin:0;background:#fff;border-radius:8px;padding:8px;box-shadow:0 1px 2px #0002}
.plots img{width:100%;height:auto}table{border-collapse:collapse;background:#fff;width:100%;font-size:14px}
th,td{border:1px solid #dde1e7;padding:6px 10px;text-align:left;vertical-align:top}th{background:#eef0f4}
td.answer{white-space:pre-wrap;font-family:ui-monospace,Menlo,monospace;font-size:13px}
pre{background:#fff;border-radius:8px;padding:12px;overflow:auto;font-size:12px;box-shadow:0 1px 2px #0002}
.status{display:inline-block;padding:2px 8px;border-radius:10px;font-size:12px;background:#e4f4e8;color:#17652b}
.status.open{background:#fff4d6;color:#7a5500}.muted{color:#5b6475;font-size:13px}
"""


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def tiles(stages: list[StageRun]) -> list[tuple[str, str]]:
    """The handful of figures a person checks first."""
    out = []
    for stage in stages:
        s, label = stage.summary or {}, stage.name.upper()
        if not s:
            continue
        out.append((f"{label} train loss", f"{fmt(s.get('train_loss_first'))} → {fmt(s.get('train_loss_last'))}"))
        if s.get("eval_loss") is not None:
            out.append((f"{label} eval loss", fmt(s["eval_loss"])))
        before, after = s.get("held_out_before") or {}, s.get("held_out_after") or {}
        if after.get("accuracy") is not None:
            out.append(("held-out preference accuracy", f"{fmt(before.get('accuracy'))} → {fmt(after['accuracy'])}"))
            out.append(("held-out reward margin", f"{fmt(before.get('margin'))} → {fmt(after.get('margin'))}"))
        out.append((f"{label} steps / time", f"{s.get('global_step')} / {fmt(s.get('wall_time_s'))} s"))
    return out


def data_rows(stages: list[StageRun]) -> list[list[str]]:
    rows = []
    for stage in stages:
        data = (stage.summary or {}).get("data") or {}
        dropped = ", ".join(f"{k}: {v}" for k, v in (data.get("dropped") or {}).items()) or "none"
        for source in data.get("sources") or []:
            rows.append([stage.name, source.get("path"), source.get("split"), source.get("rows"), source.get("taken"),
                         dropped, data.get("eval_overlap_removed")])
    return rows


def table(head: list[str], rows: list[list[Any]], answer_cols: int = 0) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = ""
    for row in rows:
        body += "<tr>" + "".join(
            f"<td{' class=answer' if i >= len(row) - answer_cols else ''}>{html.escape(fmt(v))}</td>"
            for i, v in enumerate(row)) + "</tr>"
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def render(run_dir: Path, stages: list[StageRun], plots: list[tuple[str, str]], prompts: list[str],
           columns: dict[str, list[str]]) -> str:
    esc = html.escape
    status = "".join(f"<span class='status{'' if s.summary else ' open'}'>{esc(s.name)}: {esc(s.status)}</span> "
                     for s in stages)
    parts = [f"<header><h1>zephyr-train run report</h1><p>{esc(str(run_dir.resolve()))} · written "
             f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}</p></header><main>", f"<p>{status}</p>"]
    figures = tiles(stages)
    if figures:
        parts.append("<h2>Results</h2><div class=tiles>" + "".join(
            f"<div class=tile><b>{esc(v)}</b><span>{esc(k)}</span></div>" for k, v in figures) + "</div>")
    parts.append("<h2>Sample answers to held-out prompts</h2>")
    if columns:
        rows = [[p, *(column[i] for column in columns.values())] for i, p in enumerate(prompts)]
        parts.append(f"<p class=muted>Greedy decoding with repetition penalty {REPETITION_PENALTY}, "
                     f"at most {MAX_NEW_TOKENS} new tokens, Zephyr chat template, "
                     "no system prompt.</p>" + table(["prompt", *columns], rows, answer_cols=len(columns)))
    else:
        parts.append("<p class=muted>None yet: no finished model, no held-out split in the recipe, or skipped "
                     "(--no-samples).</p>")
    parts.append(eval_report.html_section(run_dir, FILES))
    parts.append("<h2>Curves</h2>")
    parts.append("<div class=plots>" + "".join(
        f"<figure><img src='{esc(src)}' alt='{esc(title)}'></figure>" for src, title in plots) + "</div>"
        if plots else "<p class=muted>Nothing logged yet.</p>")
    parts.append("<h2>Data</h2>" + table(["stage", "dataset", "split", "rows", "used", "dropped (reason: rows)",
                                          "train rows removed (prompt in eval set)"], data_rows(stages)))
    for stage in stages:
        if stage.recipe_text:
            parts.append(f"<h2>Resolved recipe ({esc(stage.name)})</h2><pre>{esc(stage.recipe_text)}</pre>")
            break  # each stage records the whole recipe; the last stage's would repeat it
    parts.append("</main>")
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>zephyr-train report: "
            f"{esc(run_dir.resolve().name)}</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>")


def write_report(run_dir: str | Path, samples: bool = True) -> Path:
    """Write RUN_DIR/report.html and its plots; returns the report's path."""
    from zephyr_train.errors import UserError

    run_dir = Path(run_dir)
    stages = read_stages(run_dir)
    if not stages:
        raise UserError(f"{run_dir} holds no sft/ or dpo/ stage directory; give the output_dir of a run")
    files = run_dir / FILES
    files.mkdir(parents=True, exist_ok=True)
    plots = plot({s.name: s for s in stages}, files)
    prompts, columns = sample_answers(stages) if samples else ([], {})
    path = run_dir / REPORT
    path.write_text(scrub(render(run_dir, stages, plots, prompts, columns)), encoding="utf-8")
    return path
