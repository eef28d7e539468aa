"""Dataset mixtures: load each source, take its share, hold out an eval set, drop malformed rows.

A source is a `builtin:` sample, a local directory (saved by `datasets`, or holding `{split}.jsonl`
/`.json`/`.parquet` files), a data file or glob, or a Hub id. Official test splits never reach
training: naming one as a training split is an error, and any training row whose prompt also
appears in the eval set is removed and counted.
"""

from __future__ import annotations

import glob
import hashlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zephyr_train.config.recipe import DatasetSpec, EvalSpec, Stage
from zephyr_train.data import builtin
from zephyr_train.data.curation.text import repair, repair_messages
from zephyr_train.data.sources import is_builtin, is_hub_id
from zephyr_train.errors import UserError

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
ROLES = {"system", "user", "assistant"}
TIED = "tied scores (score_chosen == score_rejected)"
FIXED = "fixed: "  # a repair, counted with the drops but not dropped


def locate(spec: DatasetSpec) -> tuple[str, Path | None]:
    """("builtin" | "dir" | "files" | "hub", local path) without loading anything."""
    if is_builtin(spec.path):
        found = builtin.dataset_dir(spec.path)
        return ("dir", found) if found else ("missing", None)
    path = Path(spec.path).expanduser()
    if path.is_dir():
        return "dir", path
    if path.is_file() or glob.glob(str(path)):
        return "files", path
    return ("hub", None) if is_hub_id(spec.path) else ("missing", None)


def check_sources(stage: Stage, stage_name: str, source: str) -> None:
    """Fail on a missing local path or a test split used for training, before anything loads."""
    for i, spec in enumerate(stage.datasets):
        where = f"{source}: {stage_name}.datasets[{i}]"
        kind, _ = locate(spec)
        if kind == "missing":
            hint = ", ".join(f"builtin:{k}" for k in builtin.DATASETS) if is_builtin(spec.path) else \
                "a local directory, a .jsonl/.json/.parquet file or a Hub id"
            raise UserError(f"{where}.path {spec.path!r} does not exist; give {hint}")
        if "test" in spec.split.lower():
            raise UserError(f"{where}.split is {spec.split!r}, an official test split; training on it leaks the "
                            f"eval data. Train on the train split and set {stage_name}.eval.split: {spec.split}")
        if stage.eval and stage.eval.split == spec.split:
            raise UserError(f"{source}: {stage_name}.eval.split {spec.split!r} is also a training split; "
                            f"use a held-out split (e.g. test_sft) or eval.fraction")


def _split_files(directory: Path, split: str) -> dict[str, list[str]]:
    files: dict[str, list[str]] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix in FILE_BUILDERS:
            files.setdefault(path.stem, []).append(str(path))
    return files


def load_split(spec: DatasetSpec, split: str, where: str) -> Any:
    import datasets

    kind, path = locate(spec)
    try:
        if kind == "dir" and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.Dataset):
                return loaded
            if split not in loaded:
                raise UserError(f"{where}: split {split!r} not in {path}; it has {', '.join(loaded)}")
            return loaded[split]
        if kind == "dir":
            files = _split_files(path, split)
            if split not in files:
                raise UserError(f"{where}: no {split}.jsonl/.json/.parquet in {path}; it has {', '.join(files)}")
            builder = FILE_BUILDERS[Path(files[split][0]).suffix]
            return datasets.load_dataset(builder, data_files={split: files[split]}, split=split)
        if kind == "files":
            builder = FILE_BUILDERS.get(Path(spec.path).suffix)
            if builder is None:
                raise UserError(f"{where}.path {spec.path!r}: use a .jsonl, .json, .parquet or .csv file")
            return datasets.load_dataset(builder, data_files=sorted(glob.glob(str(path))), split="train")
        return datasets.load_dataset(spec.path, spec.name, revision=spec.revision, split=split)
    except UserError:
        raise
    except ValueError as err:  # unknown split on the Hub, unreadable file
        raise UserError(f"{where}: cannot load split {split!r} of {spec.path!r}: {str(err).splitlines()[0]}") from None
    except (FileNotFoundError, ConnectionError, OSError) as err:
        raise UserError(f"{where}: cannot load {spec.path!r} ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else 'offline?'}); with HF_HUB_OFFLINE=1 "
                        "a Hub dataset must already be in the local cache") from None


def select_columns(ds: Any, spec: DatasetSpec, needed: list[str], where: str, optional: tuple = ()) -> Any:
    """Rename per `columns`, check the needed ones exist, keep only them (so sources concatenate)."""
    renames = {src: ours for ours, src in (spec.columns or {}).items() if src != ours}
    missing_src = [src for src in renames if src not in ds.column_names]
    if missing_src:
        raise UserError(f"{where}.columns maps from {missing_src[0]!r}, which {spec.path} does not have; "
                        f"its columns are {', '.join(ds.column_names)}")
    ds = ds.rename_columns(renames) if renames else ds
    for column in needed:
        if column not in ds.column_names:
            raise UserError(f"{where}: {spec.path} has no {column!r} column (it has {', '.join(ds.column_names)}); "
                            f"map one with columns: {{{column}: <its column>}}")
    return ds.select_columns(needed + [c for c in optional if c in ds.column_names])


def take_share(ds: Any, weight: float, seed: int) -> Any:
    if weight >= 1:
        return ds
    return ds.shuffle(seed=seed).select(range(max(1, round(len(ds) * weight))))


def conversation_problem(messages: Any) -> str | None:
    """Why a conversation cannot be trained on, or None. The Zephyr template knows three roles."""
    if not isinstance(messages, list) or not messages:
        return "not a list of messages"
    turns = messages[1:] if isinstance(messages[0], dict) and messages[0].get("role") == "system" else messages
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return "unknown role"
        if not isinstance(message.get("content"), str) or not message["content"].strip():
            return "empty content"
        if message["role"] == "system" and i > 0:
            return "system turn not first"
    if not turns or turns[0]["role"] != "user":
        return "does not start with a user turn"
    if any(m["role"] != ("user" if i % 2 == 0 else "assistant") for i, m in enumerate(turns)):
        return "turns do not alternate"
    if not any(m["role"] == "assistant" for m in turns):
        return "no assistant turn"
    return None


def clean_conversations(ds: Any, column: str = "messages") -> tuple[Any, Counter]:
    """Drop malformed rows, counting why; a trailing user turn is trimmed (it has no answer to learn)."""
    trimmed = "trailing user turn trimmed"

    def mark(batch: dict) -> dict:
        problems, fixed = [], []
        for messages in batch[column]:
            problem = conversation_problem(messages) or ""
            if not problem and messages[-1]["role"] == "user":
                messages, problem = messages[:-1], trimmed
            problems.append(problem)
            fixed.append(messages if isinstance(messages, list) else [])
        return {column: fixed, "_problem": problems}

    ds = ds.map(mark, batched=True, desc="Checking conversations")
    counts = Counter(p for p in ds["_problem"] if p)
    ds = ds.filter(lambda p: p in ("", trimmed), input_columns="_problem")
    return ds.remove_columns("_problem"), counts


def prompt_key(messages: list[dict] | str) -> str:
    """The first user turn, hashed: what makes two rows the same question (a plain-text prompt is that turn)."""
    first_user = messages if isinstance(messages, str) else \
        next((m["content"] for m in messages if m.get("role") == "user"), "")
    return hashlib.sha256(first_user.strip().encode()).hexdigest()


def load_mixture(stage: Stage, stage_name: str, source: str, needed: list[str], seed: int,
                 optional: tuple = ()) -> dict[str, Any]:
    """Train and eval datasets for a stage, plus a report of what was taken and dropped."""
    import datasets

    check_sources(stage, stage_name, source)
    trains, evals, report = [], [], {"sources": [], "dropped": Counter(), "eval_overlap_removed": 0}
    for i, spec in enumerate(stage.datasets):
        where = f"{source}: {stage_name}.datasets[{i}]"
        full = select_columns(load_split(spec, spec.split, where), spec, needed, where, optional)
        part = take_share(full, spec.weight, seed)
        trains.append(part)
        report["sources"].append({"path": spec.path, "split": spec.split, "rows": len(full), "taken": len(part)})
        if stage.eval and stage.eval.split:
            held = select_columns(load_split(spec, stage.eval.split, where), spec, needed, where, optional)
            evals.append(held)
    train = datasets.concatenate_datasets(_common_columns(trains))
    evaluation = datasets.concatenate_datasets(_common_columns(evals)) if evals else None
    if stage.eval and (stage.eval.fraction or stage.eval.rows):
        train, evaluation = carve_eval(train, stage.eval, f"{source}: {stage_name}.eval")
    if evaluation is not None and stage.eval.max_samples:
        evaluation = evaluation.select(range(min(stage.eval.max_samples, len(evaluation))))
    column = needed[0]
    if evaluation is not None:
        held_out = {prompt_key(m) for m in evaluation[column]}
        before = len(train)
        train = train.filter(lambda m: prompt_key(m) not in held_out, input_columns=column)
        report["eval_overlap_removed"] = before - len(train)
    return {"train": train, "eval": evaluation, "report": report}


def _common_columns(parts: list[Any]) -> list[Any]:
    """The parts with only the columns they all have: an optional column (a `prompt`, a row's
    `chat_template_kwargs`) is kept when every source of the mixture carries it."""
    shared = set.intersection(*(set(part.column_names) for part in parts))
    return [part.select_columns([c for c in part.column_names if c in shared]) for part in parts]


def carve_eval(train: Any, spec: EvalSpec, where: str) -> tuple[Any, Any]:
    """(train, eval) split off the mixture, seeded: `rows` rows (an int to `train_test_split`) or a `fraction`.
    Asking for as many rows as there are, or more, leaves nothing to train on: a UserError with the numbers."""
    size: int | float = spec.rows if spec.rows is not None else spec.fraction
    if spec.rows is not None and spec.rows >= len(train):
        raise UserError(f"{where}.rows is {spec.rows} but the training mixture has only {len(train)} rows; "
                        f"give fewer rows (e.g. {max(1, len(train) // 10)}) or eval.fraction")
    if len(train) < 2:
        raise UserError(f"{where}: the training mixture has {len(train)} row(s), too few to carve an eval set from; "
                        "name an eval split instead")
    parts = train.train_test_split(test_size=size, seed=spec.seed)
    return parts["train"], parts["test"]


def preference_problem(row: dict) -> str | None:
    """Why a preference pair cannot be trained on, or None (ultrafeedback_binarized schema)."""
    chosen, rejected = row.get("chosen"), row.get("rejected")
    for answer in (chosen, rejected):
        if not isinstance(answer, list) or not answer or not isinstance(answer[-1], dict):
            return "not a list of messages"
        if answer[-1].get("role") != "assistant":
            return "last message is not the assistant's answer"
        if not isinstance(answer[-1].get("content"), str) or not answer[-1]["content"].strip():
            return "empty answer"
    if chosen[:-1] != rejected[:-1]:
        return "chosen and rejected follow different prompts"
    prompt = row.get("prompt")
    if chosen[:-1] and isinstance(prompt, str) and prompt.strip() and \
            next((m.get("content") for m in chosen[:-1] if m.get("role") == "user"), None) != prompt:
        return "chosen and rejected follow different prompts"
    if not chosen[:-1] and not (isinstance(prompt, str) and prompt.strip()):
        return "no prompt"
    if chosen[-1]["content"].strip() == rejected[-1]["content"].strip():
        return "identical chosen and rejected"
    scores = row.get("score_chosen"), row.get("score_rejected")
    if all(isinstance(x, int | float) for x in scores) and scores[0] == scores[1]:
        return TIED  # no preference to learn: ~11% of the published ultrafeedback_binarized pairs
    return None


def clean_preferences(ds: Any) -> tuple[Any, Counter]:
    """Drop unusable pairs (counted) and split each into TRL's prompt / chosen / rejected messages.
    CRLF line ends and literal `\\n` escapes are repaired first, each counted under "fixed: ..."."""

    fixed: Counter = Counter()

    def split(batch: dict) -> dict:
        out: dict[str, list] = {"prompt": [], "chosen": [], "rejected": [], "_problem": [], "_fixed": []}
        n = len(batch["chosen"])
        for i in range(n):
            row = {k: batch[k][i] for k in batch}
            made: list[str] = []
            for key in ("chosen", "rejected"):
                if isinstance(row[key], list) and all(isinstance(m, dict) for m in row[key]):
                    row[key], repairs = repair_messages(row[key])
                    made += [r for r in repairs if r not in made]
            if isinstance(row.get("prompt"), str):
                row["prompt"], repairs = repair(row["prompt"])
                made += [r for r in repairs if r not in made]
            problem = preference_problem(row)
            if problem is None:
                context = row["chosen"][:-1] or [{"role": "user", "content": row["prompt"]}]
                problem = conversation_problem(context + row["chosen"][-1:]) or ""
            ok = not problem
            out["prompt"].append(context if ok else [])
            out["chosen"].append(row["chosen"][-1:] if ok else [])
            out["rejected"].append(row["rejected"][-1:] if ok else [])
            out["_problem"].append(problem)
            out["_fixed"].append(made if ok else [])
        return out

    ds = ds.map(split, batched=True, remove_columns=ds.column_names, desc="Checking preference pairs")
    counts = Counter(p for p in ds["_problem"] if p)
    fixed.update(f"{FIXED}{r}" for made in ds["_fixed"] for r in made)
    ds = ds.filter(lambda p: p == "", input_columns="_problem")
    return ds.remove_columns(["_problem", "_fixed"]), counts + fixed


def long_pairs(ds: Any, max_length: int | None) -> int:
    """Pairs of a tokenized DPO dataset (TRL's prompt_ids / chosen_ids / rejected_ids) whose prompt plus the
    longer answer exceeds `max_length`: TRL's collator cuts them (keep_start), so their ends go untrained.
    Real UltraFeedback answers are long (median ~1,600 characters of prompt + chosen), so this is counted."""
    if not max_length or ds is None or "prompt_ids" not in ds.column_names:
        return 0
    import pyarrow.compute as pc

    def lengths(column: str) -> Any:
        return pc.list_value_length(ds.data.column(column))

    longest = pc.max_element_wise(lengths("chosen_ids"), lengths("rejected_ids"))
    return int(pc.sum(pc.greater(pc.add(lengths("prompt_ids"), longest), max_length)).as_py() or 0)


def length_counts(tokenized: Any, rows_before: int, max_length: int | None) -> dict[str, int]:
    """What `max_length` does to a DPO training set, counted: pairs TRL dropped because the prompt alone
    fills it, and pairs kept but cut (`long_pairs`)."""
    counts = {}
    if len(tokenized) < rows_before:
        counts[f"prompt alone fills max_length {max_length}"] = rows_before - len(tokenized)
    long = long_pairs(tokenized, max_length)
    if long:
        counts[f"kept, cut to max_length {max_length}"] = long
    return counts


def clean_splits(data: dict[str, Any], clean: Callable[[Any], tuple[Any, Counter]]) -> tuple[Any, Any, Counter]:
    """A row cleaner applied to train and eval; eval's drops are counted under "eval: <reason>"."""
    train, dropped = clean(data["train"])
    evaluation = data["eval"]
    if evaluation is not None:
        evaluation, eval_dropped = clean(evaluation)
        dropped.update({f"eval: {k}": v for k, v in eval_dropped.items()})
    return train, evaluation, dropped
