"""DPO log-probs on packed pairs, completion positions only: the same numbers as TRL's own head, pair by pair."""

from __future__ import annotations

import copy
import json

import pytest

from zephyr_train.train.patches import dpo_log_probs, pair_packing

OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")


def test_best_fit_packs_longest_first_into_the_fullest_row():
    rows = pair_packing.best_fit([10, 3, 7, 2, 8], width=10)
    assert rows == [[0], [4, 3], [2, 1]]
    assert all(sum([10, 3, 7, 2, 8][i] for i in row) <= 10 for row in rows)


def test_pack_relays_tokens_and_restarts_positions():
    import torch

    ids = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0], [1, 0, 0, 0], [2, 3, 0, 0]])
    packed = pair_packing.pack(ids, (ids != 0).long())
    assert packed.input_ids.tolist() == [[5, 6, 7], [8, 9, 1], [2, 3, 0]]  # rows as wide as the longest
    assert packed.position_ids.tolist() == [[0, 1, 2], [0, 1, 0], [0, 1, 0]]
    flat = packed.input_ids.reshape(-1)
    assert (flat[packed.index] * (ids != 0)).tolist() == ids.tolist()
    assert (packed.real_tokens, packed.positions) == (8, 9)


def test_pack_shares_a_pairs_prompt_when_the_tokens_are_the_same():
    import torch

    # pair 0: prompt [5, 6] shared; pair 1: prompts differ ([8, 9] vs [8, 1]): two sequences
    ids = torch.tensor([[5, 6, 7, 0], [8, 9, 4, 0], [5, 6, 3, 3], [8, 1, 4, 4]])
    completion = torch.tensor([[0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 1, 1], [0, 0, 1, 1]])
    prompts = pair_packing.prompt_lengths(ids.masked_fill(completion == 0, -100))
    packed = pair_packing.pack(ids, (ids != 0).long(), prompts=prompts)
    assert packed.shared_prompts == 1 and packed.real_tokens == 3 + 2 + 3 + 4
    flat = packed.input_ids.reshape(-1)
    assert (flat[packed.index] * (ids != 0)).tolist() == ids.tolist()
    rejected = packed.index[2, :4].tolist()  # its prompt is chosen 0's, its answer a branch at positions 2, 3
    assert rejected[:2] == packed.index[0, :2].tolist()
    assert packed.position_ids.reshape(-1)[rejected[2:]].tolist() == [2, 3]


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tokenizer):
    """The tiny model with TRL's fused head, and 6 real pairs tokenized as TRL's DPO tokenizes them."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer.dpo_trainer import DataCollatorForPreference
    from trl.trainer.utils import add_fused_lm_head

    from zephyr_train.data.builtin import dataset_dir
    from zephyr_train.data.chat_template import ZEPHYR

    torch.manual_seed(0)
    tokenizer.chat_template = ZEPHYR
    rows = [json.loads(line) for line in
            (dataset_dir("builtin:ultrafeedback-sample") / "test_prefs.jsonl").read_text().splitlines()[:6]]
    examples = []
    def ids(messages: list, **kwargs) -> list:
        return tokenizer(tokenizer.apply_chat_template(messages, tokenize=False, **kwargs),
                         add_special_tokens=False)["input_ids"]

    for i, row in enumerate(rows):  # long-tailed lengths, as in UltraFeedback
        prompt = ids(row["chosen"][:-1], add_generation_prompt=True)
        def answer(messages: list, cap: int, prompt: list = prompt) -> list:
            return ids(messages)[len(prompt):][:cap]
        examples.append({"prompt_ids": prompt[-(8 + 50 * (i % 2)):], "chosen_ids": answer(row["chosen"], 6 + 7 * i),
                         "rejected_ids": answer(row["rejected"], 40 - 6 * i)})
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    add_fused_lm_head(model, outputs=OUTPUTS)
    return model, examples, DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)


def run(model, batch):
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                 fused_lm_head=True, use_cache=False)


@pytest.mark.parametrize("head", ["dense", "trl"])
def test_packed_completion_head_equals_trl_head_with_its_gradients(setup, head):
    """Policy (with gradients) and reference (no grad) alike: every output TRL's loss and metrics read."""
    import torch

    model, examples, collate = setup
    batch = collate(examples)
    model.zero_grad(set_to_none=True)
    ours = copy.deepcopy(model)
    dpo_log_probs.install(ours, head, OUTPUTS)
    expected, got = run(model, batch), run(ours, batch)
    assert batch["attention_mask"].float().mean() < 0.9  # the batch has padding to skip
    mask = expected.label_mask
    assert torch.equal(got.label_mask, mask)
    torch.testing.assert_close(got.log_probs, expected.log_probs, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(got.entropy, expected.entropy, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(got.mean_logits, expected.mean_logits, atol=2e-5, rtol=1e-5)
    assert torch.equal(got.is_top1 & mask, expected.is_top1 & mask)
    expected.loss.backward()
    got.loss.backward()
    for (name, a), b in zip(model.named_parameters(), ours.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)
    with torch.no_grad():  # the reference's call
        torch.testing.assert_close(run(ours, batch).log_probs, expected.log_probs.detach(), atol=2e-5, rtol=1e-5)
    assert dpo_log_probs.padding_fraction(ours) < 0.6 * (1 - batch["attention_mask"].float().mean())
    assert ours.__dict__[dpo_log_probs.STATS]["shared_prompts"] == 2 * len(examples)  # every pair, in both calls


def test_packed_pairs_equal_one_pair_at_a_time(setup):
    import torch

    model, examples, collate = setup
    ours = copy.deepcopy(model)
    dpo_log_probs.install(ours, "dense", OUTPUTS)
    with torch.no_grad():
        together = run(ours, collate(examples)).log_probs.sum(1)
        alone = torch.cat([run(ours, collate([e])).log_probs.sum(1).view(2, 1) for e in examples], dim=1)
    n = len(examples)
    torch.testing.assert_close(together[:n], alone[0], atol=1e-4, rtol=1e-5)  # chosen
    torch.testing.assert_close(together[n:], alone[1], atol=1e-4, rtol=1e-5)  # rejected


def test_other_calls_keep_trls_forward(setup):
    import torch

    model, examples, collate = setup
    ours = copy.deepcopy(model)
    dpo_log_probs.install(ours, "dense", OUTPUTS)
    batch = collate(examples[:2])
    with torch.no_grad():  # a plain forward (generation, evaluation without the fused head) is untouched
        plain = model(input_ids=batch["input_ids"]).logits
        torch.testing.assert_close(ours(input_ids=batch["input_ids"]).logits, plain)
    assert dpo_log_probs.padding_fraction(ours) is None


def test_auto_picks_dense_without_triton():
    assert dpo_log_probs.choose("auto", "cpu") == "dense"
    assert dpo_log_probs.choose("trl", "cpu") == "trl"


def test_lm_head_recipe_key():
    from tests.conftest import SMOKE
    from zephyr_train.config.recipe import to_dict
    from zephyr_train.errors import UserError
    from zephyr_train.stages import load_recipe

    smoke = load_recipe(SMOKE)
    assert smoke.stage("dpo").options.lm_head == "auto" and "lm_head" not in to_dict(smoke)["dpo"]
    assert to_dict(load_recipe(SMOKE, ["dpo.lm_head=dense"]))["dpo"]["lm_head"] == "dense"
    with pytest.raises(UserError, match="dpo.lm_head must be auto, dense or trl, got 'fast'"):
        load_recipe(SMOKE, ["dpo.lm_head=fast"])


def test_dense_head_under_cpu_autocast_matches_autograds_log_softmax():
    """The backward recomputes the logits in the forward's autocast precision (bf16 mixed precision)."""
    import torch

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(40, 16, generator=g).requires_grad_()
    weight = torch.randn(50, 16, generator=g).requires_grad_()
    targets = torch.randint(0, 50, (40,), generator=g)
    grads = []
    for head in ("dense", "autograd"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            if head == "dense":
                log_probs = dpo_log_probs.dense_head(hidden, weight, None, targets, ("log_probs",))[0]
            else:
                logits = torch.nn.functional.linear(hidden, weight).float()
                log_probs = torch.log_softmax(logits, -1).gather(-1, targets[:, None])[:, 0]
        log_probs.sum().backward()
        grads.append((log_probs.detach(), hidden.grad, weight.grad))
        hidden.grad = weight.grad = None
    for got, expected in zip(*grads, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-2, rtol=1e-2)
