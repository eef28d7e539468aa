"""One short `zephyr-train run` with W&B (offline) and TensorBoard, a hub section and fake secrets in the environment,
shared by every test here: the report, the W&B run files, the offline push message, no secret on disk."""

from __future__ import annotations

import json
import shutil
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import cli, cli_process

pytestmark = pytest.mark.slow
HF_TOKEN, WANDB_KEY = "hf_FakeTokenForTests0123456789", "wandbFakeKeyForTests0123456789abcdef"
STEPS = ["sft.max_steps=4", "dpo.max_steps=3", "sft.logging_steps=1", "dpo.logging_steps=1", "sft.eval_strategy=steps",
         "sft.eval_steps=2", "sft.eval.max_samples=16", "dpo.eval.max_samples=8", "sft.report_to=[wandb,tensorboard]",
         "dpo.report_to=[wandb,tensorboard]", "hub.repo_id=me/zephyr-smoke",
         # small batches of short rows: what is checked is what a run writes, not how much the model learns
         "sft.max_length=128", "sft.per_device_train_batch_size=2", "dpo.max_length=128",
         "dpo.per_device_train_batch_size=2"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("publish") / "smoke-run"
    done = cli_process("run", "recipes/smoke.yaml", *STEPS, f"output_dir={out}",
               env={"HF_TOKEN": HF_TOKEN, "WANDB_API_KEY": WANDB_KEY, "WANDB_MODE": "offline"})
    assert done.returncode == 0, done.stderr[-3000:]
    (out / "stdout.txt").write_text(done.stdout + done.stderr)
    return out


def test_run_ends_with_the_report_and_the_push_command(run_dir):
    output = (run_dir / "stdout.txt").read_text()
    assert f"report: {run_dir / 'report.html'}" in output
    for stage in ("sft", "dpo"):  # HF_HUB_OFFLINE=1 here: nothing pushed, the way to push later is given
        assert f"{stage} not pushed; the result stays in {run_dir / stage}; " \
               f"push it later with: zephyr-train push {run_dir} --repo-id me/zephyr-smoke" in output


class Checker(HTMLParser):
    """Collects tags, images and text; fails on a closing tag that does not match the open one."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.images, self.text, self.tags = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def test_report_files(run_dir):
    page = (run_dir / "report.html").read_text()
    checker = Checker()
    checker.feed(page)
    checker.close()
    assert checker.stack == [] and page.startswith("<!DOCTYPE html>")
    names = {Path(src).name for src in checker.images}
    assert names == {"sft_loss.png", "dpo_loss.png", "dpo_rewards.png", "dpo_accuracy.png", "sft_learning_rate.png",
                     "dpo_learning_rate.png", "grad_norm.png", "entropy.png", "throughput.png"}
    for src in checker.images:
        assert (run_dir / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = " ".join(checker.text)
    assert "sft: finished" in text and "dpo: finished" in text
    assert "held-out preference accuracy" in text
    assert "Which matters more in beekeeping: hives or swarming?" in text  # first test_sft prompt
    assert "SFT model" in text and "final model (DPO)" in text
    assert "builtin:ultrachat-sample" in text and "builtin:ultrafeedback-sample" in text  # data table
    assert "max_steps: 4" in text  # the resolved recipe
    assert "Resolved recipe (sft)" in text and "Resolved recipe (dpo)" in text
    sft_recipe = page.split("Resolved recipe (sft)")[1].split("Resolved recipe (dpo)")[0]
    assert "beta:" not in sft_recipe  # one stage's section each, not the whole recipe twice
    assert "built-in test model" in text and "Provenance" in text and "git commit" in text
    assert "zephyr-train run recipes/smoke.yaml" in text  # the command line
    assert "href='dpo/README.md'" in page and "href='sft/README.md'" in page


def test_report_of_an_unfinished_run(run_dir, tmp_path):
    """A stage still training: no summary, only its log history; `report` works on it, without samples."""
    sft = tmp_path / "sft"
    sft.mkdir()
    for name in ("log_history.json", "recipe.resolved.yaml", "fingerprint.json"):
        shutil.copy(run_dir / "sft" / name, sft / name)
    done = cli("report", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"report: {tmp_path / 'report.html'}"
    page = (tmp_path / "report.html").read_text()
    assert "sft: in progress (step 4 logged)" in page and "sft_loss.png" in page
    assert "None yet: no finished model" in page
    missing = cli("report", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "holds no sft/ or dpo/ stage directory" in missing.stderr


def test_report_renders_in_chromium(run_dir, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("no Chromium installed (apt-get install chromium); the HTML is validated in test_report_files")
    import subprocess

    shot = tmp_path / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2000",
                    (run_dir / "report.html").as_uri()], capture_output=True, timeout=120, check=True)
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        colors = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colors is None or len(colors) > 500  # plots and text, not a blank or error page


def wandb_records(path: Path):
    """Records of a W&B transaction log (.wandb): a LevelDB-style log of protobuf `Record`s in 32 KiB
    blocks, after a 7-byte file header. wandb 0.31 has no Python reader for it any more."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, head = path.read_bytes(), 32768, 7
    assert data[:4] == b":W&B"
    pos, buf = head, b""
    while pos + head <= len(data):
        left = block - pos % block
        if left < head:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + head])
        if kind == 0 and length == 0:  # zero padding to the end of the block
            pos += left
            continue
        buf += data[pos + head:pos + head + length]
        pos += head + length
        if kind in (1, 4):  # full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def test_wandb_offline_runs_hold_both_stages(run_dir):
    runs = {}
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        run, metrics, config = None, set(), {}
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = record.run
                config.update({i.key: i.value_json for i in run.config.update})
            elif kind == "config":
                config.update({i.key: i.value_json for i in record.config.update})
            elif kind == "history":
                metrics |= {i.key or "/".join(i.nested_key) for i in record.history.item}
        runs[run.job_type] = (run, metrics, config, path.parent)
    assert set(runs) == {"sft", "dpo"}
    for stage, (run, metrics, config, folder) in runs.items():
        assert run.display_name == f"smoke-run-{stage}" and run.run_group == "smoke-run"
        assert run.project == "zephyr-train"
        recipe = json.loads(config["recipe"])
        assert recipe["sft"]["max_steps"] == 4 and recipe["dpo"]["max_steps"] == 3
        assert (folder / "files" / "recipe.resolved.yaml").exists()
        assert {"train/loss", "train/learning_rate"} <= metrics
    assert "eval/loss" in runs["sft"][1]
    assert {"train/rewards/chosen", "train/rewards/rejected", "train/rewards/margins", "train/rewards/accuracies",
            "eval/rewards/accuracies"} <= runs["dpo"][1]


def test_tensorboard_has_both_stages_under_one_run(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for stage in ("sft", "dpo"):
        events = EventAccumulator(str(run_dir / "tensorboard" / stage))
        events.Reload()
        assert "train/loss" in events.Tags()["scalars"], stage
        assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 5 if stage == "sft" else 4))


def test_no_secret_in_any_written_file(run_dir):
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert len(files) > 20
    for path in files:
        data = path.read_bytes()
        assert HF_TOKEN.encode() not in data and WANDB_KEY.encode() not in data, path


def test_report_figures_are_the_summarys(run_dir):
    """Every figure the report shows is read from summary.json or the log history the summary came from."""
    curves = json.loads((run_dir / "report_files" / "curves.json").read_text())
    sft, dpo = (json.loads((run_dir / stage / "summary.json").read_text()) for stage in ("sft", "dpo"))
    train = curves["sft_loss.png"]["train"]
    assert (train[1][0], train[1][-1]) == (sft["train_loss_first"], sft["train_loss_last"])
    assert curves["sft_loss.png"]["eval (end, summary.json)"] == [[sft["global_step"]], [sft["eval_loss"]]]
    accuracy = curves["dpo_accuracy.png"]["held-out, ties count half (summary.json)"]
    before, after = dpo["held_out_before"], dpo["held_out_after"]
    assert accuracy == [[0, dpo["global_step"]], [before["accuracy"], after["accuracy"]]]
    assert accuracy[1][0] == 0.5  # the untrained policy: every pair ties, ties count half
    margin = curves["dpo_rewards.png"]["held-out margin (summary.json)"]
    assert margin[1] == [dpo["held_out_before"]["margin"], dpo["held_out_after"]["margin"]]
    mean = curves["throughput.png"]["mean over training (summary.json)"][1]
    assert mean == [sft["tokens_per_second"]] * 2
    per_interval = curves["throughput.png"]["per logging interval (console)"][1]
    assert all(rate > 0 for rate in per_interval)
    assert "sft_learning_rate.png" in curves and "dpo_learning_rate.png" in curves  # each on its own axis
    page = (run_dir / "report.html").read_text()
    assert f"{sft['tokens_per_second']:,.0f}" in page
    for value in (sft["train_loss_first"], sft["train_loss_last"], dpo["held_out_after"]["accuracy"]):
        assert f"{value:.4g}" in page


def test_console_banner_log_lines_and_next_commands(run_dir):
    output = (run_dir / "stdout.txt").read_text()
    for label in ("SFT", "DPO"):
        banner = output.split(f"== {label}: ")[1].split("\n", 7)[:7]
        assert banner[1].startswith("  model ") and "parameters" in banner[1]
        assert "device cpu, 1 process" in banner[2] and "kept" in banner[3] and "optimizer steps" in banner[4]
        assert banner[5] == f"  output     {run_dir / label.lower()}"
    assert output.index("== SFT: ") < output.index("SFT step 1/4 | loss ")
    lines = [line for line in output.replace("\r", "\n").splitlines() if " | loss " in line]
    assert len(lines) >= 7 and all(len(line) < 200 and "'" not in line for line in lines)
    assert "DPO held-out pairs (before training)" in output and "SFT train" in output
    assert "Failed to load CPU gemm_4bit_forward" not in output and "pin_memory" not in output
    assert "is_gradient_checkpointing" not in output  # transformers' FutureWarning, read by TRL's DPO
    tail = output.split("\nnext:\n")[1]
    assert f"zephyr-train chat {run_dir / 'dpo'}" in tail and f"zephyr-train report {run_dir}" in tail
    assert f"zephyr-train push {run_dir}" in tail


def test_every_stage_folder_has_the_projects_card(run_dir):
    for stage in ("sft", "dpo"):
        card = (run_dir / stage / "README.md").read_text()
        assert card.startswith("---") and "zephyr-train" in card and "[More Information Needed]" not in card
        assert "built-in test model" in card
        assert str(run_dir.parent) not in card.split("## Training data")[0]  # no absolute path as the base


def test_the_printed_next_commands_work_when_pasted(run_dir):
    """The `zephyr-train ...` hints at the end of the run, as printed (offline: push says so and keeps the run)."""
    import shlex

    tail = (run_dir / "stdout.txt").read_text().split("\nnext:\n")[1]
    commands = [shlex.split(line.split("    #")[0]) for line in tail.splitlines()
                if line.strip().startswith("zephyr-train ")]
    assert {c[1] for c in commands} >= {"chat", "report", "push"}
    from zephyr_train.cli import build_parser

    for command in commands:  # every hint parses; `report RUN_DIR` itself runs in test_report_of_an_unfinished_run
        build_parser().parse_args(command[1:])
    for command in [c for c in commands if c[1] in ("chat", "push")]:
        done = cli(*command[1:])
        output = done.stdout + done.stderr
        assert "Traceback" not in output and "zephyr-train: error" not in output, output[-2000:]
        if command[1] == "push":  # HF_HUB_OFFLINE=1 in the tests: not pushed, and it says how to push later
            assert done.returncode == 1 and "HF_HUB_OFFLINE is set" in output
        else:
            assert done.returncode == 0, output[-2000:]
