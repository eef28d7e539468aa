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
from zephyr_train.config.secrets import scrub
from zephyr_train.config.stage_kind import is_final
from zephyr_train.data import mixture
from zephyr_train.errors import UserError
from zephyr_train.eval import report_section as eval_report
from zephyr_train.inference import chat
from zephyr_train.publish import report_curves
from zephyr_train.run_files import LOG_HISTORY, REPORT, REPORT_FILES, RESOLVED_RECIPE
from zephyr_train.stages import KINDS, load_resolved, read_result
from zephyr_train.train.results import StageResult
from zephyr_train.train.stage_dir import last_checkpoint

FILES = REPORT_FILES
N_PROMPTS, MAX_NEW_TOKENS = 4, 64
REPETITION_PENALTY = 1.3


@dataclass
class StageRun:
    name: str
    path: Path
    summary: StageResult | None = None
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

    last = last_checkpoint(stage_dir)
    for state in (stage_dir / "trainer_state.json", last / "trainer_state.json" if last else None):
        if state and state.exists():
            return json.loads(state.read_text()).get("log_history", [])
    return []


def read_stages(run_dir: Path) -> list[StageRun]:
    found = []
    for name in KINDS:
        path = run_dir / name
        if not path.is_dir():
            continue
        resolved = path / RESOLVED_RECIPE
        found.append(StageRun(name, path, read_result(path, name), history_of(path),
                              scrub(resolved.read_text(encoding="utf-8")) if resolved.exists() else ""))
    return found


# --- sample answers ------------------------------------------------------------------------------------


def held_out_prompts(stage_dirs: list[Path], n: int = N_PROMPTS) -> list[str]:
    """The first prompts of the recipe's held-out split (SFT's, else DPO's); none if there is no split."""

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
        label = KINDS[stage.name].label
        title = f"final model ({label})" if is_final(stage.name, KINDS) else f"{label} model"
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
.note{background:#fff4d6;border-radius:8px;padding:10px 14px;font-size:14px}
"""


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def tiles(stages: list[StageRun]) -> list[tuple[str, str]]:
    """The handful of figures a person checks first."""
    out = []
    for stage in stages:
        if stage.summary:
            out += stage.summary.tiles(KINDS[stage.name].label, fmt)
    return out


def data_rows(stages: list[StageRun]) -> list[list[str]]:
    rows = []
    for stage in stages:
        if not stage.summary:
            continue
        data = stage.summary.data
        dropped = ", ".join(f"{k}: {v}" for k, v in data.dropped.items()) or "none"
        for source in data.sources:
            rows.append([stage.name, source.get("path"), source.get("split"), source.get("rows"), source.get("taken"),
                         dropped, data.eval_overlap_removed])
    return rows


def table(head: list[str], rows: list[list[Any]], answer_cols: int = 0) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = ""
    for row in rows:
        body += "<tr>" + "".join(
            f"<td{' class=answer' if i >= len(row) - answer_cols else ''}>{html.escape(fmt(v))}</td>"
            for i, v in enumerate(row)) + "</tr>"
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def stage_recipe(text: str, stage: str) -> str:
    """The resolved recipe as it concerns one stage: the shared keys and that stage's section only."""
    import yaml

    data = yaml.safe_load(text) or {}
    others = [name for name in KINDS if name != stage]
    return yaml.safe_dump({k: v for k, v in data.items() if k not in others}, sort_keys=False, allow_unicode=True)


def header(run_dir: Path, stages: list[StageRun], run: dict) -> str:
    esc = html.escape
    status = "".join(f"<span class='status{'' if s.summary else ' open'}'>{esc(s.name)}: {esc(s.status)}</span> "
                     for s in stages)
    return (f"<header><h1>zephyr-train run report</h1><p>{esc(str(run_dir.resolve()))} · written "
            f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}</p></header><main><p>{status}</p>")


def builtin_note(stages: list[StageRun]) -> str:
    for stage in stages:
        model = (load_resolved_text(stage).get("model") or {}).get("name_or_path", "")
        if str(model).startswith("builtin:"):
            return (f"<p class=note>The base model is <b>{html.escape(model)}</b>, a built-in test model (random "
                    "initialisation, ~2M parameters, trained for minutes on a CPU): the pipeline and the figures' "
                    "trends are what it tests. Its answers below are gibberish, as expected.</p>")
    return ""


def load_resolved_text(stage: StageRun) -> dict:
    import yaml

    return (yaml.safe_load(stage.recipe_text) or {}) if stage.recipe_text else {}


def results_section(run_dir: Path, stages: list[StageRun], run: dict) -> str:
    esc, figures = html.escape, tiles(stages)
    if not figures:
        return ""
    return "<h2>Results</h2><div class=tiles>" + "".join(
        f"<div class=tile><b>{esc(v)}</b><span>{esc(k)}</span></div>" for k, v in figures) + "</div>"


def models_section(run_dir: Path, stages: list[StageRun], run: dict) -> str:
    """Links to each stage's folder, its model card and (LoRA) merged model, relative to the report."""
    rows = []
    for stage in stages:
        links = [f"<a href='{stage.name}/'>{stage.name}/</a>"]
        for rel, what in (("README.md", "model card"), ("merged/", "merged model"), ("summary.json", "summary")):
            if (stage.path / rel).exists():
                links.append(f"<a href='{stage.name}/{rel}'>{what}</a>")
        final = " (final model)" if run.get("final_model") and Path(run["final_model"]).name == stage.name else ""
        rows.append(f"<li>{html.escape(stage.name)}{final}: {' · '.join(links)}</li>")
    return "<h2>Models</h2><ul>" + "".join(rows) + "</ul>"


def provenance_section(run_dir: Path, stages: list[StageRun], run: dict) -> str:
    made = run.get("provenance")
    if not made:
        return ("<h2>Provenance</h2><p class=muted>Not recorded: this folder has no run summary.json "
                "(a single stage, or a run still going); `zephyr-train env` prints this machine's versions.</p>")
    rows = [["command", made.get("command")], ["git commit", made.get("git_commit") or "not a git checkout"],
            ["total wall time (s)", made.get("wall_time_s")], ["python", made.get("python")],
            *[[name, version] for name, version in (made.get("versions") or {}).items()]]
    return "<h2>Provenance</h2>" + table(["", "value"], rows)


def samples_section(prompts: list[str], columns: dict[str, list[str]]) -> str:
    if not columns:
        return ("<h2>Sample answers to held-out prompts</h2><p class=muted>None yet: no finished model, no held-out "
                "split in the recipe, or skipped (--no-samples).</p>")
    rows = [[p, *(column[i] for column in columns.values())] for i, p in enumerate(prompts)]
    return (f"<h2>Sample answers to held-out prompts</h2><p class=muted>Greedy decoding with repetition penalty "
            f"{REPETITION_PENALTY}, at most {MAX_NEW_TOKENS} new tokens, Zephyr chat template, no system prompt.</p>"
            + table(["prompt", *columns], rows, answer_cols=len(columns)))


def curves_section(plots: list[tuple[str, str]]) -> str:
    esc = html.escape
    if not plots:
        return "<h2>Curves</h2><p class=muted>Nothing logged yet.</p>"
    return ("<h2>Curves</h2><p class=muted>Each stage on its own axes; points marked summary.json are the figures "
            "of the tiles above.</p><div class=plots>" + "".join(
                f"<figure><img src='{esc(src)}' alt='{esc(title)}'></figure>" for src, title in plots) + "</div>")


def data_section(run_dir: Path, stages: list[StageRun], run: dict) -> str:
    return "<h2>Data</h2>" + table(["stage", "dataset", "split", "rows", "used", "dropped (reason: rows)",
                                    "train rows removed (prompt in eval set)"], data_rows(stages))


def recipes_section(run_dir: Path, stages: list[StageRun], run: dict) -> str:
    esc = html.escape
    return "".join(f"<h2>Resolved recipe ({esc(s.name)})</h2><pre>{esc(stage_recipe(s.recipe_text, s.name))}</pre>"
                   for s in stages if s.recipe_text)


# The page after its header, in order: each a function (run_dir, stages, run summary) -> HTML. Another
# section (an evaluation, say) is one more entry here.
def evaluation_section(run_dir: Path, stages: list[StageRun], run: dict) -> str:
    """The run's eval stage (MT-Bench, AlpacaEval, lm-eval), SFT and final side by side; empty without one."""
    return eval_report.html_section(run_dir, FILES)


SECTIONS = [results_section, evaluation_section, models_section, data_section, provenance_section, recipes_section]


def render(run_dir: Path, stages: list[StageRun], plots: list[tuple[str, str]], prompts: list[str],
           columns: dict[str, list[str]], run: dict | None = None) -> str:
    run = run or {}
    parts = [header(run_dir, stages, run), builtin_note(stages)]
    for section in SECTIONS:
        parts.append(section(run_dir, stages, run))
        if section is results_section:
            parts += [samples_section(prompts, columns), curves_section(plots)]
    parts.append("</main>")
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>zephyr-train report: "
            f"{html.escape(run_dir.resolve().name)}</title><style>{CSS}</style></head><body>{''.join(parts)}"
            "</body></html>")


def write_report(run_dir: str | Path, samples: bool = True) -> Path:
    """Write RUN_DIR/report.html and its plots; returns the report's path."""

    run_dir = Path(run_dir)
    stages = read_stages(run_dir)
    if not stages:
        raise UserError(f"{run_dir} holds no sft/ or dpo/ stage directory; give the output_dir of a run")
    files = run_dir / FILES
    files.mkdir(parents=True, exist_ok=True)
    data = report_curves.curves({s.name: s for s in stages})
    # the plotted numbers, for anyone (and the tests) to compare with summary.json
    (files / "curves.json").write_text(json.dumps(data, indent=1))
    plots = [(f"{FILES}/{name}", title) for name, title in report_curves.plot(data, files)]
    prompts, columns = sample_answers(stages) if samples else ([], {})
    run_summary = run_dir / run_files.SUMMARY
    run = json.loads(run_summary.read_text()) if run_summary.exists() else {}
    path = run_dir / REPORT
    path.write_text(scrub(render(run_dir, stages, plots, prompts, columns, run)), encoding="utf-8")
    return path
