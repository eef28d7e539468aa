"""`zephyr-train demo`: the Gradio app on a run directory with two different models (SFT and final),
through Gradio's own HTTP API with `gradio_client`, and in headless Chromium when it is installed
(`apt-get install chromium`; skipped otherwise). The answers are checked against `chat.reply`, the
terminal chat's greedy answers, so the demo shows what the models really say."""

from __future__ import annotations

import json
import shutil
import socket

import pytest

from tests.conftest import assert_user_error, cli

pytest.importorskip("gradio", reason="the demo extra: pip install -e .[demo]")

PROMPT = "How do I keep basil fresh?"
SYSTEM = "You are a helpful gardener."
# temperature, top_p, max new tokens, greedy, repetition penalty: greedy keeps the answers comparable
KNOBS = (0.7, 0.95, 12, True, 1.3)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir):
    """A finished run's layout: sft/ the tiny model, dpo/ the same with seeded changes to its weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp_path_factory.mktemp("run")
    shutil.copytree(tiny_model_dir, run / "sft")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    model.save_pretrained(run / "dpo")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(run / "dpo")
    for stage in ("sft", "dpo"):
        (run / stage / "summary.json").write_text(json.dumps({"stage": stage}))
    (run / "summary.json").write_text(json.dumps({"final_model": str(run / "dpo")}))
    return run


@pytest.fixture(scope="module")
def expected(run_dir):
    """The terminal chat's greedy answers of each model to PROMPT."""
    from zephyr_train.inference import chat
    from zephyr_train.publish import demo

    sampling = demo.sampling_from(*KNOBS)
    answers = {}
    for label, path in demo.model_dirs(run_dir).items():
        model, tokenizer = chat.load(path)
        answers[label] = chat.reply(model, tokenizer, demo.messages_for(None, PROMPT, SYSTEM), sampling)
    assert answers[demo.SFT_LABEL] != answers[demo.FINAL_LABEL]  # the comparison shows a difference
    return answers


@pytest.fixture(scope="module")
def served(run_dir, expected, monkeypatch_module):
    """The demo app, launched in this process on a free port, its controls starting at KNOBS; records
    every model load (a wrapper around the real loader, not a mock)."""
    from zephyr_train.inference import chat
    from zephyr_train.publish import demo

    loads = []
    real_load = chat.load
    monkeypatch_module.setattr(chat, "load", lambda path: loads.append(path) or real_load(path))
    app = demo.prepare(run_dir, demo.sampling_from(*KNOBS))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/", loads
    app.close()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_model_dirs_of_a_run(run_dir):
    from zephyr_train.publish import demo

    assert demo.model_dirs(run_dir) == {demo.SFT_LABEL: run_dir / "sft", demo.FINAL_LABEL: run_dir / "dpo"}
    # a single model directory: chat only
    assert demo.model_dirs(run_dir / "sft") == {demo.FINAL_LABEL: run_dir / "sft"}


def test_demo_bad_directory_is_one_line(tmp_path):
    assert_user_error(cli("demo", str(tmp_path / "missing")), "no such directory")
    assert_user_error(cli("demo", str(tmp_path)), "holds no model")


def test_streaming_yields_growing_text(run_dir, expected):
    from zephyr_train.publish import demo

    (loaded,) = demo.load_models({demo.FINAL_LABEL: run_dir / "dpo"}).values()
    steps = list(demo.stream_one(loaded, demo.messages_for(None, PROMPT, SYSTEM), demo.sampling_from(*KNOBS)))
    assert len(steps) > 1 and steps[-1] == expected[demo.FINAL_LABEL]
    assert all(later.startswith(earlier) for earlier, later in zip(steps, steps[1:], strict=False))


@pytest.mark.slow
def test_gradio_client_side_by_side_and_chat(served, expected):
    from gradio_client import Client

    from zephyr_train.publish import demo

    url, loads = served
    client = Client(url, verbose=False)
    for _ in range(2):  # a second request reuses the loaded models
        sft, final = client.predict(PROMPT, SYSTEM, *KNOBS, api_name="/side_by_side")
        assert (sft, final) == (expected[demo.SFT_LABEL], expected[demo.FINAL_LABEL])
    answer = client.predict(PROMPT, SYSTEM, *KNOBS, api_name="/chat")
    assert answer == expected[demo.FINAL_LABEL]
    assert sorted(loads) == sorted(demo.model_dirs(loads[0].parent).values())  # each model loaded once


@pytest.mark.slow
def test_in_headless_chromium(served, expected):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("no Chromium here (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    from zephyr_train.publish import demo

    url, _ = served
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(url)
            page.get_by_role("tab", name="SFT vs final").click()
            page.locator("#sbs-prompt textarea").fill(PROMPT)
            page.locator("#sbs-system textarea").fill(SYSTEM)
            page.locator("#sbs-ask").click()  # the controls start greedy, 12 new tokens (KNOBS)
            for elem, label in (("#sbs-sft", demo.SFT_LABEL), ("#sbs-final", demo.FINAL_LABEL)):
                page.wait_for_function("([sel, want]) => document.querySelector(sel + ' textarea').value === want",
                                       arg=[elem, expected[label]], timeout=60_000)
        finally:
            browser.close()


def test_a_failed_generation_ends_the_stream(run_dir):
    """generate() raising on its thread (here: a negative max_new_tokens) shows the error instead of hanging."""
    from zephyr_train.publish import demo

    (loaded,) = demo.load_models({demo.FINAL_LABEL: run_dir / "dpo"}).values()
    steps = list(demo.stream_one(loaded, demo.messages_for(None, PROMPT, None), demo.sampling_from(0.7, 0.95, -1,
                                                                                                      True, 1.0)))
    assert steps and "[generation failed: ValueError" in steps[-1]
