"""Curation throughput and memory: `zephyr-train data ultrachat` on a generated raw UltraChat file.

Generates N raw dialogues (default 200k) of realistic length in a temporary directory: 1-6 rounds
(mean ~3.8, as UltraChat), user turns ~80-400 characters, assistant answers ~700-1,900 (mean ~1.3k),
with ~5% casing slips, ~2% AI disclaimers, ~1% duplicate prompts and some code blocks and URLs.
Then runs the real CLI in a subprocess and reports rows/s, the child's peak RSS and the time
extrapolated to the full UltraChat (1.47M dialogues). A smaller UltraFeedback run (default 20k
prompts, 4 completions each) is timed the same way.

Usage: python benchmarks/curation.py [--rows N] [--feedback-rows N] [--num-proc P] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FULL_ULTRACHAT = 1_470_000
FULL_ULTRAFEEDBACK = 64_000
WORDS = ("the model data answer question system value time people example process result energy water "
         "history science language market city change research design policy health music method "
         "important different several common simple useful because however therefore although while").split()


def sentences(rng: random.Random, chars: int) -> str:
    out, size = [], 0
    while size < chars:
        words = rng.choices(WORDS, k=rng.randint(6, 18))
        sentence = " ".join(words).capitalize() + rng.choice(".....?!")
        out.append(sentence)
        size += len(sentence) + 1
    return " ".join(out)


def paragraphs(rng: random.Random, n: int, low: int, high: int) -> list[str]:
    pool = [sentences(rng, rng.randint(low, high)) for _ in range(n)]
    for i in range(0, n, 20):  # some code blocks, inline code and URLs for the truecaser to skip
        pool[i] += ("\n\n```python\nfor i in range(3):\n    print(i)  # done. next\n```\n"
                    "See https://example.com/a. It works, e.g. with `i`.")
    return pool


def ultrachat_rows(n: int, seed: int = 0):
    rng = random.Random(seed)
    users, answers = paragraphs(rng, 500, 80, 400), paragraphs(rng, 2000, 700, 1900)
    for i in range(n):
        rounds = rng.choices((1, 2, 3, 4, 5, 6), weights=(10, 12, 18, 25, 20, 15))[0]
        data = []
        for r in range(rounds):
            user = f"({i}) {rng.choice(users)}" if r == 0 else rng.choice(users)
            data += [user, rng.choice(answers)]
        roll = rng.random()
        if roll < 0.05:
            data[0] = "hello. " + data[0].lower() + " i wonder."
        elif roll < 0.07:
            data[1] = "As an AI language model, I don't have personal opinions. " + data[1]
        elif roll < 0.08 and i:
            data[0] = f"({i - 1}) " + data[0].split(") ", 1)[1]  # may repeat the previous prompt
        yield {"id": str(i), "data": data}


def ultrafeedback_rows(n: int, seed: int = 0):
    rng = random.Random(seed)
    answers = paragraphs(rng, 500, 300, 1500)
    aspects = ("instruction_following", "honesty", "truthfulness", "helpfulness")
    for i in range(n):
        completions = [{"model": f"m{k}", "response": rng.choice(answers), "overall_score": rng.randint(1, 10),
                        "annotations": {a: {"Rating": rng.choice("12345") if rng.random() > 0.03 else "N/A",
                                            "Rationale": "..."} for a in aspects}} for k in range(4)]
        yield {"source": rng.choice(("evol_instruct", "sharegpt", "flan_v2_niv2", "truthful_qa")),
               "instruction": f"({i}) " + sentences(rng, 200), "models": [c["model"] for c in completions],
               "completions": completions}


def write_jsonl(path: Path, rows) -> float:
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path.stat().st_size / 1e6


def timed_cli(args: list[str]) -> tuple[float, float, float, str]:
    """(wall seconds, CPU seconds, peak RSS in MB, stdout) of `python -m zephyr_train ARGS`. CPU time
    and RSS come from os.wait4's rusage of that child: CPU summed over it and its workers, RSS the
    largest of them. On a shared machine the CPU time is the fairer figure."""
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path}
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen([sys.executable, "-m", "zephyr_train", *args], stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if child.returncode:
            sys.exit(f"curation failed:\n{err.read()[-3000:]}")
        return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="raw UltraChat dialogues to generate")
    parser.add_argument("--feedback-rows", type=int, default=20_000, help="raw UltraFeedback prompts to generate")
    parser.add_argument("--num-proc", type=int, default=1, help="workers for the per-row rules (default 1)")
    parser.add_argument("--keep", help="generate into this directory and keep it (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        raw = work / "ultrachat.jsonl"
        mb = write_jsonl(raw, ultrachat_rows(args.rows))
        print(f"generated {args.rows:,} raw UltraChat dialogues: {mb:,.0f} MB ({mb * 1e6 / args.rows:,.0f} bytes each)")
        seconds, cpu, rss, out = timed_cli(["data", "ultrachat", "--source", str(raw), "--out", str(work / "uc"),
                                       "--overwrite", "--num-proc", str(args.num_proc)])
        print(out.rstrip())
        full = seconds * FULL_ULTRACHAT / args.rows
        print(f"\nULTRACHAT  {args.rows:,} rows in {seconds:.1f}s wall ({cpu:.1f}s CPU) = {args.rows / seconds:,.0f} "
              f"rows/s, peak RSS {rss:,.0f} MB, num_proc {args.num_proc}; full 1.47M extrapolated: "
              f"{full / 60:.1f} min wall, {cpu * FULL_ULTRACHAT / args.rows / 60:.1f} min CPU "
              f"(target <= 15 min, <= 4096 MB)")
        raw = work / "ultrafeedback.jsonl"
        write_jsonl(raw, ultrafeedback_rows(args.feedback_rows))
        seconds, cpu, rss, out = timed_cli(["data", "ultrafeedback", "--source", str(raw), "--out", str(work / "uf"),
                                       "--overwrite", "--num-proc", str(args.num_proc)])
        print(out.rstrip())
        print(f"\nULTRAFEEDBACK  {args.feedback_rows:,} prompts in {seconds:.1f}s wall ({cpu:.1f}s CPU) = "
              f"{args.feedback_rows / seconds:,.0f} rows/s, peak RSS {rss:,.0f} MB; "
              f"full 64k extrapolated: {seconds * FULL_ULTRAFEEDBACK / args.feedback_rows:.0f}s")


if __name__ == "__main__":
    main()
