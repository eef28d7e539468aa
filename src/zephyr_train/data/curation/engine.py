"""The curation engine behind `zephyr-train data`: stream raw rows through rules, sample, split, save.

A dataset kind (`curate_ultrachat`, `curate_ultrafeedback`) supplies a per-row function that either
drops a row under a named rule or returns the curated record with the rules that changed it. The
engine here does everything else, in bounded memory whatever the source size:

1. reads the source row by row (own line reader for .jsonl, `datasets` streaming otherwise), in
   chunks processed by `num_proc` workers in order, never more than a few chunks in flight;
2. drops exact duplicate prompts (a set of 8-byte prompt hashes: ~100 MB for 1.47M rows);
3. appends each kept record to an Arrow file on disk, with a seeded priority (a hash of the seed and
   the prompt id), so sampling and the train/test split depend on neither row order nor `num_proc`;
4. the lowest priorities form the test split, the next ones the train split up to the target size;
5. saves a `DatasetDict` to a staging directory beside DIR, moved into place only when complete:
   a missing field aborts with nothing written, and DIR is replaced only with `--overwrite`.

Same source, options and seed give byte-identical files: fingerprints are derived from the options
and the kept prompt ids, and the report holds no timings (those are printed only).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from zephyr_train.data.sources import is_hub_id
from zephyr_train.errors import UserError

CHUNK_ROWS = 500
EXAMPLES_PER_RULE = 3
EXAMPLE_CHARS = 240
READABLE = "readable row"  # the first rule: rows that are not JSON objects or have wrong types
DUPLICATE = "unique prompt"
SAMPLED = "sampled to size"
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


class CorruptRow(Exception):
    """A row with wrong types (not a list, a rating that is not a number): skipped and counted."""


@dataclass(frozen=True)
class Kind:
    """What differs between the UltraChat and UltraFeedback curations."""

    name: str
    required: tuple[str, ...]             # missing in a row: a user error, nothing written
    rules: tuple[str, ...]                # the per-row rules, in the order `process` applies them
    # (row, options) -> ("drop", rule, example) or ("keep", record, [(rule, example) of what it changed])
    process: Callable[[dict, dict], tuple[str, Any, Any]]
    features: Callable[[], Any]           # datasets.Features of a record
    splits: tuple[str, str]               # (train, test) names of the main splits
    also: tuple[str, ...] = ("sft", "gen")  # more (train_X, test_X) pairs of the same rows; gen: prompt only


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def example(text: str) -> str:
    """A short excerpt for the report."""
    text = " ".join(str(text).split())
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS - 3] + "..."


# ---- reading -------------------------------------------------------------------------------------

def _jsonl_lines(paths: list[str]) -> Iterator[tuple[str, str]]:
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    yield f"{path} line {number}", line


def _split_files(directory: Path, split: str) -> list[str]:
    """A plain directory's data files for `split`: `{split}.jsonl`, `{split}-00000-of-00002.parquet`, ..."""
    files = sorted(str(p) for p in directory.iterdir() if p.suffix in FILE_BUILDERS)
    mine = [f for f in files if Path(f).stem == split or Path(f).stem.startswith((f"{split}-", f"{split}_"))]
    return mine or (files if len({Path(f).stem.split("-")[0] for f in files}) == 1 else [])


def read_source(source: str, split: str) -> Iterator[tuple[str, Any]]:
    """(where, raw row) pairs: a JSON line as text (parsed in the workers) or a dict."""
    import datasets

    path = Path(source).expanduser()
    files = _split_files(path, split) if path.is_dir() else sorted(glob.glob(str(path)))
    try:
        if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise UserError(f"--split {split!r} is not in {source}; it has {', '.join(loaded)}")
                loaded = loaded[split]
            rows: Iterable = loaded
        elif files and all(Path(f).suffix == ".jsonl" for f in files):
            yield from _jsonl_lines(files)
            return
        elif files:
            builders = {FILE_BUILDERS.get(Path(f).suffix) for f in files}
            if None in builders or len(builders) > 1:
                raise UserError(f"--source {source}: give .jsonl, .json or .parquet files (of one kind), "
                                "a directory saved by datasets, or a Hub dataset id")
            rows = datasets.load_dataset(builders.pop(), data_files=files, split="train", streaming=True)
        elif path.is_dir():
            raise UserError(f"--source {source}: no .jsonl/.json/.parquet files for split {split!r} in it")
        elif is_hub_id(source):
            rows = datasets.load_dataset(source, split=split, streaming=True)
        else:
            raise UserError(f"--source {source} does not exist; give a local file or directory, or a Hub dataset id")
        for number, row in enumerate(rows, 1):
            yield f"{source} row {number}", row
    except UserError:
        raise
    except (ValueError, OSError, ConnectionError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"cannot read --source {source}: {first}; with HF_HUB_OFFLINE=1 a Hub dataset "
                        "must already be in the local cache") from None


def _process_chunk(kind: Kind, options: dict, chunk: list[tuple[str, Any]]) -> list[tuple[str, Any, Any]]:
    out = []
    for where, raw in chunk:
        try:
            row = json.loads(raw) if isinstance(raw, str) else raw
            if not isinstance(row, dict):
                raise CorruptRow(f"not a JSON object: {example(raw)}")
        except json.JSONDecodeError as err:
            out.append(("drop", READABLE, f"{where}: invalid JSON ({err.msg})"))
            continue
        except CorruptRow as err:
            out.append(("drop", READABLE, f"{where}: {err}"))
            continue
        for name in kind.required:
            if name not in row:
                raise UserError(f"{where} has no {name!r} field; raw {kind.name} rows need "
                                f"{', '.join(kind.required)} (it has {', '.join(map(str, row)) or 'nothing'})")
        try:
            out.append(kind.process(row, options))
        except CorruptRow as err:
            out.append(("drop", READABLE, f"{where}: {err}"))
    return out


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def processed(kind: Kind, options: dict, rows: Iterator, num_proc: int) -> Iterator[tuple[str, Any, Any]]:
    """Outcomes in source order; with workers, at most 4 chunks per worker are read ahead."""
    work = partial(_process_chunk, kind, options)
    if num_proc <= 1:
        for chunk in _chunks(rows, CHUNK_ROWS):
            yield from work(chunk)
        return
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(num_proc) as pool:
        pending: deque = deque()
        for chunk in _chunks(rows, CHUNK_ROWS):
            pending.append(pool.apply_async(work, (chunk,)))
            if len(pending) >= 4 * num_proc:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()


# ---- the run -------------------------------------------------------------------------------------

@dataclass
class Tally:
    """Per-rule counts and the first few examples, in source order."""

    removed: Counter = field(default_factory=Counter)
    changed: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def note(self, counter: Counter, rule: str, text: str) -> None:
        counter[rule] += 1
        found = self.examples.setdefault(rule, [])
        if len(found) < EXAMPLES_PER_RULE:
            found.append(text)


def priority(seed: int, prompt_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{prompt_id}".encode()).digest()[:8], "big")


def collect(kind: Kind, options: dict, rows: Iterator, num_proc: int,
            arrow_path: Path) -> tuple[Tally, list[int], int, str]:
    """Write kept, de-duplicated records to `arrow_path`: (tally, priorities, rows read, content digest)."""
    from datasets.arrow_writer import ArrowWriter

    tally, seen, priorities, read, content = Tally(), set(), [], 0, hashlib.sha256()
    started = time.perf_counter()
    with ArrowWriter(features=kind.features(), path=str(arrow_path), writer_batch_size=1000) as writer:
        for status, what, detail in processed(kind, options, rows, num_proc):
            read += 1
            if read % 200_000 == 0:
                print(f"  {read:,} rows read ({read / (time.perf_counter() - started):,.0f} rows/s)", file=sys.stderr)
            if status == "drop":
                tally.note(tally.removed, what, detail)
                continue
            key = int(what["prompt_id"][:16], 16)
            if key in seen:
                tally.note(tally.removed, DUPLICATE, what["prompt"])
                continue
            seen.add(key)
            for rule, text in detail:
                tally.note(tally.changed, rule, text)
            writer.write(what)
            content.update(what["prompt_id"].encode())
            priorities.append(priority(options["seed"], what["prompt_id"]))
        writer.finalize()
    return tally, priorities, read, content.hexdigest()


def plan_splits(priorities: list[int], size: int | None, test_size: float) -> tuple[list[int], list[int], str]:
    """(test, train) row indices, lowest priorities first (a seeded shuffle and sample in one), and a note.

    A row count that would take half the kept rows or more (the default 2000 on a small file) leaves the
    test split at 10% of them instead, and the note says so; a fraction is taken as asked."""
    import numpy as np

    order = np.argsort(np.asarray(priorities, dtype=np.uint64), kind="stable")
    total = len(order) if size is None else min(size, len(order))
    n_test, note = (round(total * test_size) if test_size < 1 else int(test_size)), ""
    if test_size >= 1 and n_test * 2 >= total and total >= 2:  # one row cannot be split: the error says so
        n_test = max(1, round(total * 0.1))
        note = (f"--test-size {int(test_size)} would take {min(int(test_size), total)} of the {total} rows kept; "
                f"the test split is {n_test} rows (10%) instead, train {total - n_test} (pass --test-size N "
                "to choose)")
    return order[:n_test].tolist(), order[n_test:total].tolist(), note


def no_train_error(kind: Kind, tally: Tally, read: int, kept: int) -> UserError:
    """Nothing left to train on: the counts per rule in the message itself (nothing is printed before it)."""
    removed = ", ".join(f"{rule} -{n:,}" for rule, n in tally.removed.items() if n) or "none removed"
    where = f"all {kept:,} kept rows went to the test split (--test-size)" if kept else "no rows were kept"
    return UserError(f"no {kind.name} rows left to train on: {read:,} read, {kept:,} kept ({removed}); {where}; "
                     "give a source with more usable rows, or a smaller --test-size")


def compact(arrow_path: Path, rows: int, test: list[int], train: list[int]) -> tuple[Path, list[int], list[int]]:
    """Copy only the sampled rows to a new Arrow file, batch by batch, and renumber the splits.

    Reading the big file of all kept rows through a memory map (as `datasets` does) would leave all
    of it resident (~9 GB for UltraChat, counted in RSS); plain reads keep one batch at a time, and
    the small file mapped afterwards holds only what gets saved.
    """
    import numpy as np
    import pyarrow as pa

    keep = np.sort(np.asarray(test + train, dtype=np.int64))
    mask = np.zeros(rows, dtype=bool)
    mask[keep] = True
    small = arrow_path.with_name("sampled.arrow")
    with pa.OSFile(str(arrow_path)) as source, pa.OSFile(str(small), "wb") as sink:
        reader = pa.ipc.open_stream(source)
        with pa.ipc.new_stream(sink, reader.schema) as writer:
            start = 0
            for batch in reader:
                part = mask[start:start + batch.num_rows]
                start += batch.num_rows
                if part.any():
                    writer.write_batch(batch.filter(pa.array(part)))
    arrow_path.unlink()
    return small, np.searchsorted(keep, test).tolist(), np.searchsorted(keep, train).tolist()


def prompt_messages(prompts: list[str]) -> dict[str, list]:
    return {"messages": [[{"content": prompt, "role": "user"}] for prompt in prompts]}


def build_splits(kind: Kind, arrow_path: Path, test: list[int], train: list[int], content: str) -> Any:
    """The DatasetDict; fingerprints hash the kept content and each split's rows, so they are reproducible."""
    import datasets

    def fingerprint(name: str, indices: list[int]) -> str:
        return hashlib.sha256(f"{content}:{name}:{indices}".encode()).hexdigest()[:16]

    rows = datasets.Dataset.from_file(str(arrow_path))
    out = {name: rows.select(indices, new_fingerprint=fingerprint(name, indices))
           for name, indices in ((kind.splits[0], train), (kind.splits[1], test))}
    for suffix in kind.also:
        pairs = ((kind.splits[0], train, f"train_{suffix}"), (kind.splits[1], test, f"test_{suffix}"))
        for base, indices, name in pairs:
            if suffix == "gen":  # the prompts to generate completions from: messages is the user turn only
                out[name] = out[base].map(prompt_messages, input_columns="prompt", batched=True,
                                          new_fingerprint=fingerprint(name, indices))
            else:
                out[name] = rows.select(indices, new_fingerprint=fingerprint(name, indices))
    return datasets.DatasetDict(out)


def stored_options(options: dict) -> dict:
    """The options the report keeps; keys starting with "_" are derived, for the workers only."""
    return {key: value for key, value in options.items() if not key.startswith("_")}


def report_of(kind: Kind, options: dict, tally: Tally, read: int, kept: int, splits: dict[str, int]) -> dict:
    steps, rows_in = [], read
    for rule in (READABLE, *kind.rules, DUPLICATE, SAMPLED):
        removed = tally.removed[rule] if rule != SAMPLED else rows_in - kept
        steps.append({"rule": rule, "rows_in": rows_in, "rows_out": rows_in - removed, "removed": removed,
                      "changed": tally.changed[rule], "examples": tally.examples.get(rule, [])})
        rows_in -= removed
    return {"dataset": kind.name, "options": stored_options(options), "rows_read": read, "rows_kept": kept,
            "steps": steps, "splits": splits}


def print_report(report: dict, seconds: float, peak_rss_mb: float) -> None:
    print(f"{report['dataset']} curation: {report['rows_read']:,} rows read, {report['rows_kept']:,} kept "
          f"in {seconds:.1f}s ({report['rows_read'] / max(seconds, 1e-9):,.0f} rows/s, peak RSS of this process "
          f"{peak_rss_mb:,.0f} MB)")
    print(f"  {'rule':<34}{'rows in':>11}{'rows out':>11}{'removed':>10}{'changed':>10}")
    for step in report["steps"]:
        print(f"  {step['rule']:<34}{step['rows_in']:>11,}{step['rows_out']:>11,}{step['removed']:>10,}"
              f"{step['changed']:>10,}")
    print("  splits: " + ", ".join(f"{name} {rows:,}" for name, rows in report["splits"].items()))


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise UserError(f"--out {out} already exists; pass --overwrite to replace it")
    if not out.parent.exists():
        raise UserError(f"--out {out}: the parent directory {out.parent} does not exist")


def curate(kind: Kind, options: dict, out: Path, *, num_proc: int = 1, overwrite: bool = False,
           parquet: bool = False, push_to_hub: str | None = None) -> dict:
    """Run a curation end to end; returns the report (also saved as DIR/curation_report.json)."""
    import datasets

    out = out.expanduser().resolve()
    check_out_dir(out, overwrite)
    datasets.disable_progress_bars()
    started = time.perf_counter()
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "_work").mkdir(parents=True)
    try:
        arrow_path = staging / "_work" / "rows.arrow"
        rows = read_source(options["source"], options["split"])
        tally, priorities, read, content = collect(kind, options, rows, num_proc, arrow_path)
        test, train, note = plan_splits(priorities, options.get("size"), options["test_size"])
        if not train:
            raise no_train_error(kind, tally, read, len(priorities))
        if note:
            print(f"note: {note}")
        arrow_path, test, train = compact(arrow_path, len(priorities), test, train)
        data = build_splits(kind, arrow_path, test, train, f"{json.dumps(stored_options(options))}:{content}")
        data.save_to_disk(str(staging / "data"))
        if parquet:
            (staging / "data" / "parquet").mkdir()
            for name, split in data.items():
                split.to_parquet(str(staging / "data" / "parquet" / f"{name}.parquet"))
        report = report_of(kind, options, tally, read, len(test) + len(train), {k: len(v) for k, v in data.items()})
        if note:
            report["note"] = note  # the test split differs from --test-size: saved with the data, not only printed
        del data
        report_text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
        (staging / "data" / "curation_report.json").write_text(report_text)
        _move_into_place(staging / "data", out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print_report(report, time.perf_counter() - started, _peak_rss_mb())
    print(f"saved to {out} (load with datasets.load_from_disk, or name it as a recipe dataset path)")
    if push_to_hub:
        push(out, push_to_hub)
    return report


def _move_into_place(done: Path, out: Path) -> None:
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    done.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def push(out: Path, repo: str) -> None:
    """Upload the saved DatasetDict and its report as a dataset repo (token from HF_TOKEN or the login)."""
    import datasets
    from huggingface_hub import HfApi

    try:
        datasets.load_from_disk(str(out)).push_to_hub(repo)
        HfApi().upload_file(path_or_fileobj=str(out / "curation_report.json"), path_in_repo="curation_report.json",
                            repo_id=repo, repo_type="dataset", commit_message="Add the curation report")
    except Exception as err:  # noqa: BLE001 - any Hub failure is the user's to fix (network, auth, name)
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"saved to {out}, but pushing to the Hub dataset {repo!r} failed: {first}") from None
    print(f"pushed to https://huggingface.co/datasets/{repo}")
