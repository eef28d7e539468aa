"""The exports run in llama.cpp itself (llama-cpp-python, built by `make llama-cpp`): the tiny model, a random
Mistral with Mistral-7B's real tokenizer and the real SmolLM2-135M-Instruct, each as f16, q8_0 and q4_k_m (the
last quantized by llama.cpp's own `llama_model_quantize` from our f16 file). llama.cpp must tokenize chat
prompts (Zephyr's template and the model's own) to the ids transformers gives, generate the same greedy tokens
as transformers from the f16 file, and give logits at every position within each type's stated tolerance.

The metadata tests (GGUFReader) run without llama.cpp; the rest skip naming `make llama-cpp` (in CI, where
`.ci/run` builds it, a skip fails)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.export.conftest import CHATS

pytest.importorskip("gguf", reason="the export extra: pip install -e .[export]")
pytestmark = pytest.mark.xdist_group("llama_cpp")  # the exports below are built once, on one worker

QUANTS = ("f16", "q8_0", "q4_k_m")
# max |logit difference| over every position of the 3 chats, as a fraction of the largest |logit| there
# (measured values: docs/export.md); top-1 agreement over all positions (a random model has many near ties)
TOLERANCE = {"f16": 0.01, "q8_0": 0.04, "q4_k_m": 0.25}
TOP1 = {"f16": 0.97, "q8_0": 0.9, "q4_k_m": 0.6}
GREEDY_TOKENS = 12
SPACES = ["a  b", "x   y    z", "  two leading", "tabs\t\tand  spaces   ", "line\n  indented\n    more"]
DIGITS = ["In 1789, 3 men", "pi is 3.14159 and 2025-12-06", "call 555 0100"]


def llama_cpp_or_skip():
    try:
        import llama_cpp
    except ImportError:
        pytest.skip("llama-cpp-python (llama.cpp's library) is not installed: `make llama-cpp` builds it once")
    return llama_cpp


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_model_dir, spm_model_dirs, smollm2_dir) -> dict[tuple[str, str], Path]:
    """(model, quant) -> GGUF; q4_k_m needs llama.cpp, so it is there only when llama-cpp-python is."""
    from zephyr_train.export.to_gguf import export, llama_cpp_library

    out = tmp_path_factory.mktemp("llama-cpp")
    models = {"tiny": tiny_model_dir, "mistral": spm_model_dirs["model"], "mistral-json": spm_model_dirs["json"],
              "smollm2": smollm2_dir}
    wanted = [(m, q) for m in ("tiny", "mistral", "smollm2") for q in QUANTS] + [("mistral-json", "f16")]
    have_llama_cpp = llama_cpp_library() is not None
    return {(m, q): export(str(models[m]), str(out / f"{m}-{q}.gguf"), q).path for m, q in wanted
            if q != "q4_k_m" or have_llama_cpp}


@pytest.fixture(scope="module")
def model_dirs(tiny_model_dir, spm_model_dirs, smollm2_dir) -> dict[str, Path]:
    return {"tiny": tiny_model_dir, "mistral": spm_model_dirs["model"], "mistral-json": spm_model_dirs["json"],
            "smollm2": smollm2_dir}


def field(path: Path, key: str):
    from gguf import GGUFReader

    return GGUFReader(path).fields[key].contents()


# ---- what is written (no llama.cpp needed) -------------------------------------------------------------------

def test_sentencepiece_scores_rebuilt_from_tokenizer_json_are_sentencepiece_s(exports):
    """tokenizer.json carries no scores: the rebuilt ones equal those in Mistral's tokenizer.model, the 15
    whitespace-run pieces (-1e9) included."""
    import sentencepiece

    from tests.export.conftest import spm_file

    processor = sentencepiece.SentencePieceProcessor(model_file=str(spm_file()))
    real = [processor.get_score(i) for i in range(processor.get_piece_size())]
    assert field(exports[("mistral-json", "f16")], "tokenizer.ggml.scores") == real
    assert field(exports[("mistral", "f16")], "tokenizer.ggml.scores") == real


def test_smollm2_pre_tokenizer_is_the_converter_s(exports, smollm2_dir):
    """llama.cpp's convert_hf_to_gguf.py names SmolLM2's pre-tokenizer `smollm` (so does the GGUF it ships in);
    `add_bos_token` and the chat template are the model's own."""
    for quant in ("f16", "q8_0"):
        path = exports[("smollm2", quant)]
        assert field(path, "tokenizer.ggml.model") == "gpt2" and field(path, "tokenizer.ggml.pre") == "smollm"
        assert field(path, "llama.rope.freq_base") == 100000.0
        assert field(path, "tokenizer.chat_template") == (smollm2_dir / "chat_template.jinja").read_text()
    assert field(exports[("tiny", "f16")], "tokenizer.ggml.pre") == "gpt-2"  # its digits join: 'Ġ1789'


def test_legacy_false_sentencepiece_tokenizer_is_refused(spm_model_dirs, tmp_path):
    from tests.conftest import assert_user_error, cli

    done = cli("export", str(spm_model_dirs["first"]), "--gguf", str(tmp_path / "m.gguf"))
    assert_user_error(done, "legacy=False", "after special tokens such as </s>", '"legacy": true')
    assert list(tmp_path.iterdir()) == []


# ---- llama.cpp ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def load(exports):
    llama_cpp = llama_cpp_or_skip()
    loaded: dict = {}

    def get(model: str, quant: str):
        if (model, quant) not in loaded:
            loaded[(model, quant)] = llama_cpp.Llama(model_path=str(exports[(model, quant)]), n_ctx=512,
                                                     logits_all=True, n_threads=1, verbose=False)
        return loaded[(model, quant)]

    return get


def prompts(model_dir: Path) -> list[str]:
    """The 3 chats rendered by the Zephyr template and by the model's own (the same for our Zephyr models)."""
    from transformers import AutoTokenizer

    from zephyr_train.data.chat_template import ZEPHYR

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = []
    for template in dict.fromkeys([ZEPHYR, tokenizer.chat_template]):
        texts += [tokenizer.apply_chat_template(chat, chat_template=template, tokenize=False,
                                                add_generation_prompt=True) for chat in CHATS]
    return texts


@pytest.mark.parametrize("model", ["tiny", "mistral", "mistral-json", "smollm2"])
def test_llama_cpp_tokenizes_chats_as_transformers(load, model_dirs, model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dirs[model])
    llm = load(model, "f16")
    for text in prompts(model_dirs[model]) + SPACES[:2] + DIGITS:
        assert llm.tokenize(text.encode(), add_bos=True, special=True) == tokenizer(text).input_ids, text


@pytest.mark.parametrize("model", ["mistral", "mistral-json"])
def test_llama_cpp_tokenizes_runs_of_spaces_as_sentencepiece(load, model):
    """Mistral's own tokenizer.model, run by SentencePiece, is the reference (transformers 5's tokenizer.json
    joins two spaces first: '  a' is '▁▁' 'a' there, '▁' '▁a' in SentencePiece)."""
    import sentencepiece

    from tests.export.conftest import spm_file

    processor = sentencepiece.SentencePieceProcessor(model_file=str(spm_file()))
    llm = load(model, "f16")
    for text in SPACES:
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == processor.encode(text), text


def reference_logits(model_dir: Path, texts: list[str]):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text).input_ids
            out.append((ids, model(torch.tensor([ids])).logits[0].numpy()))
    return model, out


@pytest.fixture(scope="module")
def references(model_dirs):
    cache: dict = {}

    def get(model: str):
        if model not in cache:
            cache[model] = reference_logits(model_dirs[model], prompts(model_dirs[model])[:len(CHATS)])
        return cache[model]

    return get


@pytest.mark.parametrize("quant", QUANTS)
@pytest.mark.parametrize("model", ["tiny", "mistral", "smollm2"])
def test_llama_cpp_logits_agree_at_every_position(load, references, model, quant):
    llm = load(model, quant)
    _, cases = references(model)
    worst, agree, total = 0.0, 0, 0
    for ids, want in cases:
        llm.reset()
        llm.eval(ids)
        got = np.asarray(llm.scores[:len(ids)], dtype=np.float32)
        assert got.shape == want.shape
        worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
        agree += int((got.argmax(-1) == want.argmax(-1)).sum())
        total += len(ids)
    print(f"{model} {quant}: max |dlogit| / max |logit| = {worst:.4f}, top-1 agreement {agree}/{total}")
    assert worst < TOLERANCE[quant], (worst, TOLERANCE[quant])
    assert agree / total >= TOP1[quant], (agree, total)


@pytest.mark.parametrize("model", ["tiny", "mistral", "smollm2"])
def test_llama_cpp_greedy_tokens_equal_transformers_f16(load, references, model):
    import torch

    hf, cases = references(model)
    llm = load(model, "f16")
    for ids, _ in cases:
        want, context = [], list(ids)
        with torch.no_grad():
            for _ in range(GREEDY_TOKENS):
                want.append(int(hf(torch.tensor([context])).logits[0, -1].argmax()))
                context.append(want[-1])
        llm.reset()
        llm.eval(ids)
        got = []
        for _ in range(GREEDY_TOKENS):
            got.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
            llm.eval([got[-1]])
        assert got == want


def test_exports_record_their_quant_in_file_type(exports):
    """The file type llama.cpp reports is the one asked for (q4_k_m: set by llama_model_quantize)."""
    llama_cpp_or_skip()
    for (_, quant), path in exports.items():
        assert field(path, "general.file_type") == {"f16": 1, "q8_0": 7, "q4_k_m": 15}[quant]

