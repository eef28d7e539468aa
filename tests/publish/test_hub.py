"""Model cards and Hub pushes.

The Hub cannot be reached here, so these tests run huggingface_hub's real `HfApi`, `ModelCard` and
`CommitOperationAdd` with only the HTTP layer replaced: `huggingface_hub.set_client_factory` gets an
httpx client whose transport is `FakeHub` below, which answers the endpoints a push calls (create
repo, create branch, validate the card's YAML, preupload, commit) and records what was sent. Every
file is answered "regular" (inline) upload mode, so the LFS/Xet transfer path is not exercised.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import SMOKE, cli
from zephyr_train.config.recipe import save_resolved
from zephyr_train.errors import UserError
from zephyr_train.publish import hub
from zephyr_train.stages import load_recipe, result_of

TOKEN = "hf_FakeTokenForHubTests0123456789"


class FakeHub:
    def __init__(self):
        self.repos, self.branches, self.commits, self.auth = {}, set(), [], set()
        self.fail = False
        self.requests = 0

    def __call__(self, request):
        import httpx2

        self.requests += 1
        self.auth.add(request.headers.get("authorization"))
        if self.fail:
            raise httpx2.ConnectError("network is unreachable", request=request)
        path = request.url.path
        if path == "/api/repos/create":
            body = json.loads(request.content)
            repo = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
            self.repos[repo] = body
            return httpx2.Response(200, json={"url": f"https://huggingface.co/{repo}"})
        if "/branch/" in path:
            self.branches.add(path.split("/api/models/")[1])
            return httpx2.Response(200, json={})
        if path == "/api/validate-yaml":
            return httpx2.Response(200, json={})
        if "/preupload/" in path:
            files = json.loads(request.content)["files"]
            return httpx2.Response(200, json={"files": [{"path": f["path"], "uploadMode": "regular",
                                                         "shouldIgnore": False} for f in files]})
        if "/commit/" in path:
            repo, revision = path.split("/api/models/")[1].split("/commit/")
            lines = [json.loads(line) for line in request.content.decode().splitlines()]
            files = {x["value"]["path"]: base64.b64decode(x["value"]["content"]) for x in lines if x["key"] == "file"}
            self.commits.append({"repo": repo, "revision": revision, "files": files,
                                 "message": lines[0]["value"]["summary"]})
            return httpx2.Response(200, json={"commitUrl": f"https://huggingface.co/{repo}/commit/{'a' * 40}",
                                              "commitOid": "a" * 40})
        return httpx2.Response(404, json={"error": f"fake hub: no {path}"})


@pytest.fixture
def fake_hub(monkeypatch):
    import httpx2
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils._http import default_client_factory

    fake = FakeHub()
    set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(fake)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # our own check; the HTTP layer is the fake above
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    yield fake
    set_client_factory(default_client_factory)


def api():
    from huggingface_hub import HfApi

    return HfApi()


def zephyr_recipe(*extra):
    return load_recipe(SMOKE, ["model.name_or_path=mistralai/Mistral-7B-v0.1", "hub.repo_id=me/zephyr-7b",
                               "hub.license=mit", "sft.datasets.0.path=HuggingFaceH4/ultrachat_200k",
                               "dpo.datasets.0.path=HuggingFaceH4/ultrafeedback_binarized", *extra])


DPO_SUMMARY = {"stage": "dpo", "train_loss_first": 0.6931, "train_loss_last": 0.41, "train_loss_mean": 0.5,
               "held_out_before": {"accuracy": 0.5, "margin": 0.0, "loss": 0.6931},
               "held_out_after": {"accuracy": 0.78, "margin": 0.9, "loss": 0.52}, "global_step": 100, "epochs": 1.0,
               "train_runtime_s": 60.0, "data": {"sources": [{"path": "HuggingFaceH4/ultrafeedback_binarized",
                                                               "split": "train_prefs", "rows": 61135, "taken": 61135}]}}


def test_model_card_content_and_metadata():
    from huggingface_hub import ModelCard

    from zephyr_train.publish.model_card import make_card

    recipe = zephyr_recipe()
    card = ModelCard(str(make_card(recipe, "sft", "me/zephyr-7b-sft", "model", "mistralai/Mistral-7B-v0.1",
                                   "mistralai/Mistral-7B-v0.1",
                                   result_of({"stage": "sft", "train_loss_last": 1.1, "eval_loss": 1.2}))))
    meta = card.data.to_dict()
    assert meta["license"] == "mit" and meta["base_model"] == "mistralai/Mistral-7B-v0.1"
    assert meta["datasets"] == ["HuggingFaceH4/ultrachat_200k"]
    assert {"sft", "trl", "zephyr-train"} <= set(meta["tags"])
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    text = card.text
    assert 'pipeline("text-generation", model="me/zephyr-7b-sft"' in text
    assert "pipe.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)" in text
    assert "<|system|>\nS</s>\n<|user|>\nU</s>\n<|assistant|>" in text and "{% for message in messages %}" in text
    assert "| learning_rate | 0.001 |" in text and "| lr_scheduler_type | cosine |" in text
    assert "| eval loss | 1.2 |" in text and "| final train loss | 1.1 |" in text
    assert "Intended uses" in text and "not been aligned to human preferences" in text
    assert "no preference tuning" in text  # the SFT stage alone

    dpo = ModelCard(str(make_card(recipe, "dpo", "me/zephyr-7b", "adapter", "me/zephyr-7b-sft", "/local/sft",
                                  result_of(DPO_SUMMARY))))
    meta = dpo.data.to_dict()
    assert meta["base_model"] == "me/zephyr-7b-sft" and meta["library_name"] == "peft"
    assert meta["datasets"] == ["HuggingFaceH4/ultrafeedback_binarized"] and {"dpo", "lora"} <= set(meta["tags"])
    assert "| held-out preference accuracy (before -> after) | 0.5 -> 0.78 |" in dpo.text
    assert "| beta | 0.1 |" in dpo.text and "pip install transformers accelerate peft" in dpo.text


def test_card_metadata_names_no_local_or_builtin_base():
    from huggingface_hub import ModelCard

    from zephyr_train.publish.model_card import make_card

    recipe = load_recipe(SMOKE, ["hub.repo_id=me/zephyr-smoke"])
    card = ModelCard(str(make_card(recipe, "sft", "me/zephyr-smoke-sft", "model", hub.base_of(recipe, "sft"),
                                   recipe.model.name_or_path, None)))
    assert "base_model" not in card.data.to_dict() and "datasets" not in card.data.to_dict()
    assert "`builtin:tiny-mistral`" in card.text and "No results yet" in card.text
    assert hub.base_of(recipe, "dpo") == "me/zephyr-smoke-sft"
    lora = load_recipe(SMOKE, ["hub.repo_id=me/zephyr-smoke", "sft.lora.r=8", "hub.sft_repo_id=me/sft"])
    assert hub.base_of(lora, "dpo") == "me/sft-merged" and hub.repo_for(lora, "sft") == "me/sft"


def full_stage(run: Path, recipe, tiny_model_dir: Path, stage: str = "dpo") -> Path:
    """A stage directory as a finished full fine-tuning stage leaves it, plus checkpoint and bookkeeping files."""
    out = run / stage
    shutil.copytree(tiny_model_dir, out)
    (out / "summary.json").write_text(json.dumps(DPO_SUMMARY))
    (out / "fingerprint.json").write_text("{}")
    (out / "training_args.bin").write_bytes(b"pickle")
    (out / "checkpoint-2").mkdir()
    (out / "checkpoint-2" / "optimizer.pt").write_bytes(b"state")
    save_resolved(recipe, out)
    return out


def test_push_full_model(fake_hub, tmp_path, tiny_model_dir):
    recipe = load_recipe(SMOKE, ["hub.repo_id=me/zephyr-smoke", "hub.revision=dev", f"output_dir={tmp_path}"])
    out = full_stage(tmp_path, recipe, tiny_model_dir)
    assert hub.push_stage(recipe, "dpo", out, api=api(), wait=0)
    assert fake_hub.repos["me/zephyr-smoke"]["visibility"] == "private"
    assert "me/zephyr-smoke/branch/dev" in fake_hub.branches
    [commit] = fake_hub.commits
    assert commit["repo"] == "me/zephyr-smoke" and commit["revision"] == "dev"
    assert set(commit["files"]) == {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                                    "tokenizer_config.json", "chat_template.jinja", "summary.json",
                                    "recipe.resolved.yaml", "README.md"}
    assert commit["files"]["model.safetensors"] == (out / "model.safetensors").read_bytes()
    assert commit["files"]["README.md"].decode() == (out / "README.md").read_text()  # the card is also kept locally
    assert fake_hub.auth == {f"Bearer {TOKEN}"}  # the token travels in the header only


def test_push_lora_adapter_with_hub_base_and_merged_model(fake_hub, tmp_path, tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = load_recipe(SMOKE, ["hub.repo_id=me/zephyr-smoke", "sft.lora.r=4", "dpo.lora.r=4",
                                 f"output_dir={tmp_path}"])
    out = tmp_path / "dpo"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False, task_type="CAUSAL_LM"))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    (out / "summary.json").write_text(json.dumps(DPO_SUMMARY))
    save_resolved(recipe, out)
    local_config = (out / "adapter_config.json").read_text()

    assert hub.push_stage(recipe, "dpo", out, api=api(), wait=0)
    adapter, merged = fake_hub.commits
    assert adapter["repo"] == "me/zephyr-smoke" and merged["repo"] == "me/zephyr-smoke-merged"
    # on the Hub the adapter sits on the pushed merged SFT model, not on a local path
    pushed_config = json.loads(adapter["files"]["adapter_config.json"])
    assert pushed_config["base_model_name_or_path"] == "me/zephyr-smoke-sft-merged"
    assert (out / "adapter_config.json").read_text() == local_config  # the local one still loads locally
    assert "adapter_model.safetensors" in adapter["files"]
    assert "library_name: peft" in adapter["files"]["README.md"].decode()
    assert {"config.json", "model.safetensors", "README.md"} <= set(merged["files"])
    assert not any(name.startswith("adapter") for name in merged["files"])
    assert "base_model: me/zephyr-smoke-sft-merged" in merged["files"]["README.md"].decode()


def test_failed_push_keeps_the_local_result_and_says_how_to_push_again(fake_hub, tmp_path, tiny_model_dir, capsys):
    recipe = load_recipe(SMOKE, ["hub.repo_id=me/zephyr-smoke", f"output_dir={tmp_path}"])
    out = full_stage(tmp_path, recipe, tiny_model_dir)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    fake_hub.fail = True
    assert not hub.push_stage(recipe, "dpo", out, api=api(), wait=0)
    err = capsys.readouterr().err
    assert err.count("retrying") == hub.ATTEMPTS - 1
    assert f"failed after {hub.ATTEMPTS} attempts" in err and "network is unreachable" in err
    assert f"the local result is kept in {out}; push it later with: zephyr-train push {tmp_path}" in err
    assert fake_hub.commits == []
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert {p: after[p] for p in before} == before  # nothing lost or changed; only README.md was added

    fake_hub.fail = False  # the network is back: the command the message gave pushes the run
    assert hub.push_run(tmp_path, api=api())
    assert [c["repo"] for c in fake_hub.commits] == ["me/zephyr-smoke"]
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or TOKEN.encode() not in path.read_bytes(), path
    assert TOKEN not in err


def test_every_save_pushes_checkpoints_best_effort(fake_hub, tmp_path, tiny_model_dir, capsys):
    from types import SimpleNamespace

    recipe = load_recipe(SMOKE, ["hub.repo_id=me/zephyr-smoke", "hub.strategy=every_save", f"output_dir={tmp_path}"])
    assert hub.save_callbacks(load_recipe(SMOKE, ["hub.repo_id=me/z"]), "sft", tmp_path) == []  # strategy: end
    [callback] = hub.save_callbacks(recipe, "sft", tmp_path / "sft")
    checkpoint = tmp_path / "sft" / "checkpoint-2"
    shutil.copytree(tiny_model_dir, checkpoint)
    (checkpoint / "optimizer.pt").write_bytes(b"state")
    state = SimpleNamespace(is_world_process_zero=True, global_step=2)
    callback.on_save(None, state, None)
    [commit] = fake_hub.commits
    assert commit["repo"] == "me/zephyr-smoke-sft" and commit["message"] == "zephyr-train: sft step 2"
    assert "model.safetensors" in commit["files"] and "optimizer.pt" not in commit["files"]
    assert "Training in progress" in commit["files"]["README.md"].decode()
    fake_hub.fail = True  # a failing checkpoint push does not stop training
    callback.on_save(None, state, None)
    assert "training goes on" in capsys.readouterr().err


def test_hub_section_is_checked():
    with pytest.raises(UserError, match="hub.repo_id must be a Hub repo id"):
        load_recipe(SMOKE, ["hub.private=true"])
    with pytest.raises(UserError, match="hub.strategy must be end or every_save"):
        load_recipe(SMOKE, ["hub.repo_id=me/z", "hub.strategy=sometimes"])


def test_push_run_needs_a_repo(tmp_path, tiny_model_dir, fake_hub):
    recipe = load_recipe(SMOKE, [f"output_dir={tmp_path}"])
    full_stage(tmp_path, recipe, tiny_model_dir, "sft")
    with pytest.raises(UserError, match="no hub section; pass --repo-id"):
        hub.push_run(tmp_path, api=api())
    assert hub.push_run(tmp_path, repo_id="me/other", api=api())
    assert fake_hub.commits[0]["repo"] == "me/other-sft"
    done = cli("push", str(tmp_path / "nothing"))
    assert done.returncode == 2 and "holds no finished stage" in done.stderr
