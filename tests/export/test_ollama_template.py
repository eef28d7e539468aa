"""The Modelfile's TEMPLATE rendered by Go's text/template (the engine Ollama runs templates with) gives
the same text as the model's own Jinja template with a generation prompt, for every template `auto` can
pick: Zephyr's (template-less bases), SmolLM2's own (the real built-in model) and TRL's families (the
templates of the instruct models `check` knows); a template Go cannot say gets no TEMPLATE and a comment
saying why. Skipped without a Go toolchain (`apt-get install golang-go`); Ollama itself is not run here."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from tests.export.conftest import CHATS

RENDER = """package main

import (
	"encoding/json"
	"os"
	"text/template"
)

type Message struct {
	Role    string
	Content string
}

func main() {
	source, _ := os.ReadFile(os.Args[1])
	var messages []Message
	json.NewDecoder(os.Stdin).Decode(&messages)
	tmpl := template.Must(template.New("ollama").Parse(string(source)))
	tmpl.Execute(os.Stdout, map[string]any{"Messages": messages})
}
"""


def go_renderer(tmp_path):
    go = shutil.which("go")
    if go is None:
        pytest.skip("no Go toolchain here (apt-get install golang-go)")
    (tmp_path / "render.go").write_text(RENDER)
    binary = tmp_path / "render"
    env = {"HOME": str(tmp_path), "PATH": os.environ.get("PATH", ""), "GO111MODULE": "off",
           "GOCACHE": os.path.join(os.environ["ZEPHYR_TRAIN_CACHE"], "go")}  # the build cache outlives the test
    built = subprocess.run([go, "build", "-o", str(binary), str(tmp_path / "render.go")], capture_output=True,
                           text=True, timeout=300, env=env)
    assert built.returncode == 0, built.stderr

    def render(template: str, chat: list[dict]) -> str:
        (tmp_path / "template.txt").write_text(template)
        messages = [{"Role": m["role"], "Content": m["content"]} for m in chat]
        done = subprocess.run([str(binary), str(tmp_path / "template.txt")], input=json.dumps(messages),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    return render


def test_modelfile_template_renders_zephyr(tmp_path, tokenizer):
    from zephyr_train.export.ollama import modelfile

    render = go_renderer(tmp_path)
    template = re.search(r'TEMPLATE """(.*?)"""', modelfile("m.gguf"), re.S).group(1)
    for chat in CHATS:
        assert render(template, chat) == tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)


def own_templates() -> dict[str, tuple[str, str, str]]:
    """name -> (Jinja template, BOS text, EOS text): SmolLM2's and TRL's families."""
    from zephyr_train.data import packaged
    from zephyr_train.data.chat_template import ZEPHYR, trl_templates

    templates = {"zephyr": (ZEPHYR, "<s>", "</s>")}
    smollm2 = packaged.template("smollm2-135m")
    if smollm2:
        templates["smollm2"] = (smollm2, "<|im_start|>", "<|im_end|>")
    for name, path in trl_templates().items():
        templates[name] = (path.read_text(encoding="utf-8"), "<bos>", "<eos>")
    return templates


def test_modelfile_template_renders_each_model_s_own(tmp_path):
    """Go's rendering equals Jinja's (transformers' environment) on the 3 chats for every template the
    exporter writes a TEMPLATE for; those it cannot (reasoning templates, Phi-3's, Gemma's without a system
    role) have a comment instead, and no TEMPLATE Ollama would render wrongly."""
    from zephyr_train.data.chat_template import _environment
    from zephyr_train.export.ollama import modelfile

    render = go_renderer(tmp_path)
    templates = own_templates()
    assert "smollm2" in templates and "llama3" in templates and "qwen2_5" in templates
    written = []
    for name, (jinja, bos, eos) in templates.items():
        text = modelfile("m.gguf", eos, template=jinja, bos=bos)
        found = re.search(r'TEMPLATE """(.*?)"""', text, re.S)
        if found is None:
            assert "# no TEMPLATE: the model's chat template cannot be written in Ollama's syntax" in text, name
            continue
        written.append(name)
        compiled = _environment().from_string(jinja)
        for chat in CHATS:
            want = compiled.render(messages=chat, bos_token=bos, eos_token=eos, add_generation_prompt=True)
            assert render(found.group(1), chat) == want, name
    for name in ("zephyr", "smollm2", "llama3", "llama3_1", "qwen2_5"):
        assert name in written
    print(f"TEMPLATE written and checked for {len(written)} of {len(templates)}: {', '.join(written)}")
