"""`zephyr-train demo RUN_DIR`: the trained model in the browser (Gradio), SFT and final side by side.

Two tabs. "Chat": a streaming chat with the final model, a system prompt and sampling controls.
"SFT vs final": one prompt answered by the SFT model and the final (DPO) model at once, both
streaming, so a user sees what DPO changed -- the comparison the run report shows for four held-out
prompts, for any prompt. Each model is loaded once, when the demo starts (the tiny model: ~1 s; a 7B
in bf16 needs ~15 GB per model, so both fit one 40 GB GPU), and every request reuses it. Prompts are
rendered and encoded exactly as `zephyr-train chat` does (inference/chat.py), so the demo's greedy
answer is the chat command's greedy answer. The HTTP API is Gradio's own: `/chat` and
`/side_by_side`, callable with `gradio_client`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zephyr_train.config.stage_kind import is_final
from zephyr_train.errors import UserError
from zephyr_train.inference import chat
from zephyr_train.inference.chat import Sampling, encode, start
from zephyr_train.inference.source import resolve
from zephyr_train.run_files import SUMMARY
from zephyr_train.stages import KINDS

SFT_LABEL, FINAL_LABEL = "SFT model", "Final model (DPO)"


@dataclass
class Loaded:
    label: str
    path: Path
    model: Any = None
    tokenizer: Any = None


def model_dirs(run_dir: str | Path) -> dict[str, Path]:
    """{label: directory} for the final model and, in a run directory with a finished SFT stage, the SFT model.
    Only small JSON files are read: a wrong path is answered before anything loads."""

    run = Path(run_dir)
    final = resolve(run, "demo")
    found = {FINAL_LABEL: final.adapter or final.path}
    for kind in KINDS.values():  # the stages a final one starts from (SFT), when the run finished them
        stage = run / kind.name
        if is_final(kind.name, KINDS) or not (run / SUMMARY).exists() or not (stage / SUMMARY).exists():
            continue
        source = resolve(stage, "demo")
        if (source.adapter or source.path) != found[FINAL_LABEL]:
            found = {f"{kind.label} model": source.adapter or source.path, **found}
    return found


def load_models(dirs: dict[str, Path]) -> dict[str, Loaded]:

    loaded = {}
    for label, path in dirs.items():
        model, tokenizer = chat.load(path)
        loaded[label] = Loaded(label, path, model, tokenizer)
    return loaded


def messages_for(history: list[dict] | None, prompt: str, system: str | None) -> list[dict]:

    turns = [{"role": m["role"], "content": _text(m["content"])} for m in history or []
             if m.get("role") in ("user", "assistant")]
    return [*start(system or None), *turns, {"role": "user", "content": prompt}]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # Gradio 6 message content: a list of {"type": "text", "text": ...}
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def sampling_from(temperature: float, top_p: float, max_new_tokens: int, greedy: bool,
                  repetition_penalty: float) -> Any:

    return Sampling(max_new_tokens=int(max_new_tokens), temperature=float(temperature), top_p=float(top_p),
                    do_sample=not greedy and float(temperature) > 0, repetition_penalty=float(repetition_penalty))


def start_stream(loaded: Loaded, messages: list[dict], sampling: Any) -> Any:
    """A TextIteratorStreamer fed by generate() on a thread: the answer as it is produced."""
    from transformers import TextIteratorStreamer


    tokenizer = loaded.tokenizer
    inputs = encode(tokenizer, messages).to(loaded.model.device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs = {**inputs, **sampling.generate_kwargs(), "streamer": streamer, "pad_token_id": pad}

    def generate() -> None:  # a failure must still end the stream, or the page waits forever
        try:
            loaded.model.generate(**kwargs)
        except Exception as err:  # noqa: BLE001 - shown to the user in the answer box
            streamer.on_finalized_text(f" [generation failed: {type(err).__name__}: {err}]", stream_end=True)

    threading.Thread(target=generate, daemon=True).start()
    return streamer


def stream_one(loaded: Loaded, messages: list[dict], sampling: Any) -> Iterator[str]:
    text = ""
    for piece in start_stream(loaded, messages, sampling):
        text += piece
        yield text.strip()


def stream_many(models: list[Loaded], messages: list[dict], sampling: Any) -> Iterator[tuple[str, ...]]:
    """Every model's answer so far, each time one of them produces text; both generate at once."""
    streams = [start_stream(m, messages, sampling) for m in models]
    texts = [""] * len(models)
    live = set(range(len(models)))
    while live:
        changed = False
        for i in sorted(live):
            try:
                piece = streams[i].text_queue.get(timeout=0.02)
            except queue.Empty:
                continue
            if piece is streams[i].stop_signal:
                live.discard(i)
            else:
                texts[i] += piece
            changed = True
        if changed:
            yield tuple(t.strip() for t in texts)


def build_app(loaded: dict[str, Loaded], title: str, defaults: Any = None) -> Any:
    """The Blocks app; `defaults` (a chat.Sampling) sets the sampling controls' starting values."""
    import gradio as gr


    final = loaded[FINAL_LABEL]
    pair = [loaded[SFT_LABEL], final] if SFT_LABEL in loaded else None
    start = defaults or Sampling()

    def controls() -> list[Any]:
        return [gr.Slider(0.0, 2.0, value=start.temperature, step=0.05, label="temperature"),
                gr.Slider(0.05, 1.0, value=start.top_p, step=0.05, label="top_p"),
                gr.Slider(1, 2048, value=start.max_new_tokens, step=1, label="max new tokens"),
                gr.Checkbox(value=not start.do_sample, label="greedy (no sampling)"),
                gr.Slider(1.0, 2.0, value=start.repetition_penalty, step=0.05, label="repetition penalty")]

    def chat_fn(message: str, history: list[dict], system: str, *knobs: Any) -> Iterator[str]:
        yield from stream_one(final, messages_for(history, message, system), sampling_from(*knobs))

    def both_fn(prompt: str, system: str, *knobs: Any) -> Iterator[tuple[str, str]]:
        if not prompt.strip():
            yield "", ""
            return
        yield from stream_many(pair, messages_for(None, prompt, system), sampling_from(*knobs))

    with gr.Blocks(title=title) as app:
        gr.Markdown(f"# {title}\nFinal model: `{final.path}`" +
                    (f" - SFT model: `{pair[0].path}`" if pair else " (no SFT stage found: chat only)"))
        with gr.Tab("Chat"):
            system = gr.Textbox(label="system prompt", placeholder="optional", elem_id="chat-system", render=False)
            gr.ChatInterface(chat_fn, additional_inputs=[system, *controls()], api_name="chat",
                             additional_inputs_accordion="system prompt and sampling")
        if pair:
            with gr.Tab("SFT vs final", elem_id="tab-side-by-side"):
                prompt = gr.Textbox(label="prompt", elem_id="sbs-prompt", lines=3)
                sbs_system = gr.Textbox(label="system prompt", placeholder="optional", elem_id="sbs-system")
                with gr.Accordion("sampling", open=False):
                    knobs = controls()
                ask = gr.Button("Answer with both", variant="primary", elem_id="sbs-ask")
                with gr.Row():
                    sft_out = gr.Textbox(label=SFT_LABEL, elem_id="sbs-sft", lines=8, interactive=False)
                    final_out = gr.Textbox(label=FINAL_LABEL, elem_id="sbs-final", lines=8, interactive=False)
                inputs = [prompt, sbs_system, *knobs]
                ask.click(both_fn, inputs, [sft_out, final_out], api_name="side_by_side")
                prompt.submit(both_fn, inputs, [sft_out, final_out], api_visibility="private")
    return app


def prepare(run_dir: str | Path, defaults: Any = None) -> Any:
    """The Gradio app for `run_dir`, its models loaded (once)."""
    dirs = model_dirs(run_dir)
    try:
        import gradio  # noqa: F401
    except ImportError as err:
        raise UserError("demo needs Gradio: pip install 'zephyr-train[demo]'") from err
    return build_app(load_models(dirs), f"zephyr-train demo: {Path(run_dir).resolve().name}", defaults)


def run_demo(run_dir: str, port: int | None = None, host: str = "127.0.0.1", share: bool = False,
             defaults: Any = None) -> None:
    app = prepare(run_dir, defaults)
    app.queue().launch(server_name=host, server_port=port, share=share)
