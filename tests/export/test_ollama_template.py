"""The Modelfile's TEMPLATE rendered by Go's text/template (the engine Ollama runs templates with) gives
the same text as the Zephyr Jinja template with a generation prompt. Skipped without a Go toolchain
(`apt-get install golang-go`); Ollama itself is not run here."""

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


def test_modelfile_template_renders_zephyr(tmp_path, tokenizer):
    go = shutil.which("go")
    if go is None:
        pytest.skip("no Go toolchain here (apt-get install golang-go)")
    from zephyr_train.export.ollama import modelfile

    template = re.search(r'TEMPLATE """(.*?)"""', modelfile("m.gguf"), re.S).group(1)
    (tmp_path / "template.txt").write_text(template)
    (tmp_path / "render.go").write_text(RENDER)
    binary = tmp_path / "render"
    env = {"HOME": str(tmp_path), "PATH": os.environ.get("PATH", ""), "GO111MODULE": "off",
           "GOCACHE": os.path.join(os.environ["ZEPHYR_TRAIN_CACHE"], "go")}  # the build cache outlives the test
    built = subprocess.run([go, "build", "-o", str(binary), str(tmp_path / "render.go")], capture_output=True,
                           text=True, timeout=300, env=env)
    assert built.returncode == 0, built.stderr
    for chat in CHATS:
        messages = [{"Role": m["role"], "Content": m["content"]} for m in chat]
        rendered = subprocess.run([str(binary), str(tmp_path / "template.txt")], input=json.dumps(messages),
                                  capture_output=True, text=True, timeout=60).stdout
        assert rendered == tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
