"""Two real ranks on this CPU, launched the three ways users launch: torchrun (DDP over gloo), accelerate with
the DeepSpeed ZeRO-3 config GPU users pass, and two torchrun "nodes" meeting on loopback. Each trains a few
steps of the smoke recipe; the checks are what a rank must get right (one writer, gathered figures, equal
weights, the same curve as one process with accumulation), and the guards against a silent one-rank run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, SMOKE, cli

# one launch at a time (each uses both cores), all on one pytest worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ranks")]
PROBE = str(Path(__file__).with_name("rank_probe.py"))
STEPS = ["sft.max_steps=4", "dpo.max_steps=4", "dpo.warmup_steps=0", "dpo.learning_rate=1e-3",
         "sft.logging_steps=1", "dpo.logging_steps=1",
         "sft.max_length=128", "dpo.max_length=128", "sft.eval.max_samples=16", "dpo.eval.max_samples=16",
         "sft.per_device_train_batch_size=2", "dpo.per_device_train_batch_size=2"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def job_env() -> dict[str, str]:
    """A launch's environment as a user's shell has it: no ACCELERATE_* left over from this process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def launch(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=job_env(), timeout=600)


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def summary(out: Path, stage: str) -> dict:
    return json.loads((out / stage / "summary.json").read_text())


def losses(out: Path, stage: str) -> list[float]:
    return [e["loss"] for e in json.loads((out / stage / "log_history.json").read_text()) if "loss" in e]


def checksums(ranks: Path, rank: int) -> list[float]:
    return [json.loads(line)["checksum"] for line in (ranks / f"rank{rank}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def ddp(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`torchrun --standalone --nproc_per_node 2 -m zephyr_train run`: SFT, DPO, then the eval stage (MT-Bench
    answers to one question) on 2 ranks."""
    out = tmp_path_factory.mktemp("ddp")
    questions = out.parent / "question.jsonl"
    questions.write_text(json.dumps({"question_id": 81, "category": "writing", "turns": ["Hi.", "Again."]}) + "\n")
    evaluation = ["eval.benches=[mt-bench]", "eval.models=[dpo]", f"eval.mt_bench.questions={questions}",
                  "eval.mt_bench.answers_only=true", "eval.mt_bench.max_new_tokens=4"]
    run = launch(*TORCHRUN, "--standalone", "--nproc_per_node", "2", PROBE, str(out / "ranks"), "run", str(SMOKE),
                 *STEPS, *evaluation, f"output_dir={out}")
    assert run.returncode == 0, run.stderr[-4000:]
    return out, run


def test_torchrun_trains_two_ranks_as_one_job(ddp):
    out, run = ddp
    assert run.stdout.count("the 2 processes train data-parallel on the CPU (gloo backend)") == 1
    assert run.stdout.count("SFT done") == 1 and run.stdout.count("DPO done") == 1  # rank 0 prints and writes
    assert "2 processes (ddp)" in run.stdout
    # the data is prepared once: rank 0 tokenizes first, rank 1 loads the cached result
    for split in ("train", "eval"):  # (counted at 0%: a busy machine can print a bar's 100% twice)
        assert run.stderr.count(f"Tokenizing {split} dataset:   0%") == 1, split
    for stage in ("sft", "dpo"):
        figures = summary(out, stage)
        assert (figures["processes"], figures["distributed"]) == (2, "ddp"), stage
    assert summary(out, "sft")["global_step"] == 4
    dpo = summary(out, "dpo")
    assert dpo["held_out_before"]["pairs"] == dpo["held_out_after"]["pairs"] == 16  # both ranks' 8 pairs
    answers = list((out / "eval" / "dpo" / "mt-bench" / "model_answer").glob("*.jsonl"))  # rank 0 evaluates
    assert len(answers) == 1 and len(answers[0].read_text().splitlines()) == 1
    # each rank trained its own shard, and all-reduced gradients kept the weights equal after every step
    first, second = checksums(out / "ranks", 0), checksums(out / "ranks", 1)
    assert len(first) == len(second) == 8
    assert first == pytest.approx(second, rel=1e-9)


def test_two_ranks_follow_one_process_with_accumulation(ddp, tmp_path):
    """Same global batch (2 ranks x 2 rows against 1 process x 2 rows x 2 accumulation), same data order: the
    SFT and DPO loss curves agree within 1e-4 relative (measured: equal in every printed digit, 4 steps each)."""
    out, _ = ddp
    one = cli("run", str(SMOKE), *STEPS, "sft.gradient_accumulation_steps=2", "dpo.gradient_accumulation_steps=2",
              f"output_dir={tmp_path}")
    assert one.returncode == 0, one.stderr[-3000:]
    for stage in ("sft", "dpo"):
        print(stage, losses(out, stage), losses(tmp_path, stage))
        assert losses(out, stage) == pytest.approx(losses(tmp_path, stage), rel=1e-4), stage
    assert summary(tmp_path, "sft")["processes"] == 1 and summary(tmp_path, "sft")["distributed"] == "none"
    ranks, one_process = summary(out, "sft"), summary(tmp_path, "sft")
    assert ranks["tokens_trained"] == one_process["tokens_trained"] > 0
    # summed over the ranks (one rank's share would be half); each process's data loader also collates one
    # batch ahead of the last step, counted too: 2 such batches against 1
    assert one_process["tokens_seen"] < ranks["tokens_seen"] <= one_process["tokens_seen"] + 2 * 128


def test_deepspeed_zero3_config_on_a_cpu(tmp_path):
    """The config GPU users pass, 2 ranks: gloo and torch's AdamW supplied, the sharded model gathered into one
    loadable folder, a LoRA adapter merged after DPO under ZeRO-3."""
    run = launch(sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/deepspeed_zero3.yaml",
                 "--num_processes", "2", "--main_process_port", free_port(), "-m", "zephyr_train", "run", str(SMOKE),
                 *STEPS, "dpo.lora.r=8", f"output_dir={tmp_path}")
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.stdout.count("DeepSpeed's 2 process(es) run on the CPU (gloo backend, torch's AdamW") == 1
    for stage in ("sft", "dpo"):
        assert summary(tmp_path, stage)["distributed"] == "deepspeed-zero3", stage
    from transformers import AutoModelForCausalLM

    sft = AutoModelForCausalLM.from_pretrained(tmp_path / "sft")  # whole, not a rank's shard
    assert sft.model.embed_tokens.weight.shape == (4096, 128)
    merged = summary(tmp_path, "dpo")["merged_model_dir"]
    assert AutoModelForCausalLM.from_pretrained(merged).model.embed_tokens.weight.shape == (4096, 128)


def test_two_loopback_nodes(tmp_path):
    """`torchrun --nnodes 2 --nproc_per_node 1 --node_rank R --rdzv_backend c10d`, started twice, as two machines
    would start it; `dpo` alone from the base model, its reference log-probs precomputed over both ranks' shards."""
    port = free_port()
    env = job_env()
    nodes = [subprocess.Popen([*TORCHRUN, "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(rank),
                               "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "-m", "zephyr_train",
                               "dpo", str(SMOKE), "sft=null", "dpo.precompute_ref_log_probs=true",
                               *[s for s in STEPS if s.startswith("dpo.")], f"output_dir={tmp_path}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
             for rank in (0, 1)]
    results = [node.communicate(timeout=600) for node in nodes]
    for node, (_, stderr) in zip(nodes, results, strict=True):
        assert node.returncode == 0, stderr[-3000:]
    figures = summary(tmp_path, "dpo")
    assert (figures["processes"], figures["distributed"], figures["global_step"]) == (2, "ddp", 4)
    assert "precomputed" in figures["reference"] and figures["held_out_after"]["pairs"] == 16
    assert losses(tmp_path, "dpo")[0] == pytest.approx(0.6931, abs=1e-4)  # policy == reference at step 1
    assert sum(stdout.count("DPO done") for stdout, _ in results) == 1


def test_cpu_launch_that_starts_one_process_stops(tmp_path):
    """accelerate starts `--cpu --num_processes 2` as one process: stopped before a model loads. (accelerate's
    one-process launcher then raises on its child's exit 2 with its own traceback; ours has none.)"""
    run = launch(sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "-m",
                 "zephyr_train", "sft", str(SMOKE), f"output_dir={tmp_path}")
    assert "returned non-zero exit status 2" in run.stderr, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("zephyr-train: error:")]
    assert errors == ["zephyr-train: error: accelerate launch asked for 2 processes but started 1: accelerate starts "
                      "a CPU config (--cpu, use_cpu: true or MULTI_CPU) as one process; use --config_file "
                      "configs/cpu.yaml (it starts 2 on a CPU) or torchrun --nproc_per_node 2"]
    assert "zephyr_train/" not in run.stderr and not any(tmp_path.iterdir())


def test_resume_after_kill_9_with_two_ranks(tmp_path):
    """Both ranks and their launcher killed mid-run (SIGKILL, as a lost machine); the job started again, this
    time through the shipped `configs/cpu.yaml` (which starts 2 processes), resumes from the last checkpoint on
    both ranks and finishes."""
    stage = ["-m", "zephyr_train", "sft", str(SMOKE),
            "sft.max_steps=100", "sft.save_strategy=steps", "sft.save_steps=10", "sft.save_total_limit=2",
            "sft.logging_steps=5",
            "sft.max_length=128", "sft.eval.max_samples=16", "sft.per_device_train_batch_size=2",
            f"output_dir={tmp_path}"]
    env = job_env()
    first = subprocess.Popen([*TORCHRUN, "--standalone", "--nproc_per_node", "2", *stage], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (tmp_path / "sft" / "checkpoint-10" / "trainer_state.json").exists() and first.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint-10 after 300 s"
        time.sleep(0.05)
    # every process of the job at once: torchrun starts each rank in a session of its own, so killing its
    # process group would leave the ranks training on (they would then race the resumed run)
    import psutil

    for process in [*psutil.Process(first.pid).children(recursive=True), psutil.Process(first.pid)]:
        process.send_signal(signal.SIGKILL)
    first.wait()
    assert not (tmp_path / "sft" / "summary.json").exists(), "finished before the kill: raise max_steps"
    again = launch(sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/cpu.yaml",
                   "--main_process_port", free_port(), *stage)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stdout and "checkpoint-" in again.stdout
    figures = summary(tmp_path, "sft")
    assert (figures["global_step"], figures["processes"]) == (100, 2)
