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
TOLERANCE = {"f16": 0.01, "q8_0": 0.08, "q4_k_m": 0.3}
TOP1 = {"f16": 0.97, "q8_0": 0.9, "q4_k_m": 0.6}
GREEDY_TOKENS = 12
NEAR_TIE = 0.01  # a top-2 gap under 1% of the largest logit: within a few times f16's measured error
SPACES = ["a  b", "x   y    z", "  two leading", "tabs\t\tand  spaces   ", "line\n  indented\n    more"]
DIGITS = ["In 1789, 3 men", "pi is 3.14159 and 2025-12-06", "call 555 0100"]


def llama_cpp_or_skip():
    try:
        import llama_cpp
    except ImportError:
        pytest.skip("llama-cpp-python (llama.cpp's library) is not installed: `make llama-cpp` builds it once")
    return llama_cpp


@pytest.fixture(scope="module")
def exports(tmp_path_factory, model_dirs) -> dict[tuple[str, str], Path]:
    """(model, quant) -> GGUF, each written by `export`, except SmolLM2's q4_k_m: quantized by the same llama.cpp
    call from its f16 file (saves writing that f16 twice). q4_k_m needs llama.cpp: there only when it is."""
    from zephyr_train.export.to_gguf import _quantize_with_llama_cpp, export, llama_cpp_library

    out = tmp_path_factory.mktemp("llama-cpp")
    have_llama_cpp = llama_cpp_library() is not None
    wanted = [(m, q) for m in ("tiny", "mistral", "smollm2") for q in QUANTS] + [("mistral-json", "f16")]
    done = {}
    for model, quant in wanted:
        path = out / f"{model}-{quant}.gguf"
        if quant == "q4_k_m" and not have_llama_cpp:
            continue
        if (model, quant) == ("smollm2", "q4_k_m"):
            _quantize_with_llama_cpp(done[("smollm2", "f16")], path, "llama-cpp-python")
            done[(model, quant)] = path
        else:
            done[(model, quant)] = export(str(model_dirs[model]), str(path), quant).path
    return done


@pytest.fixture(scope="module")
def model_dirs(tiny_model_dir, spm_model_dirs, smollm2_dir) -> dict[str, Path]:
    return {"tiny": tiny_model_dir, "mistral": spm_model_dirs["model"], "mistral-json": spm_model_dirs["json"],
            "smollm2": smollm2_dir}


def fields(path: Path, *keys: str) -> list:
    from gguf import GGUFReader

    reader = GGUFReader(path)
    return [reader.fields[key].contents() for key in keys]


# ---- what is written (no llama.cpp needed) -------------------------------------------------------------------

def test_sentencepiece_scores_rebuilt_from_tokenizer_json_are_sentencepiece_s(exports):
    """tokenizer.json carries no scores: the rebuilt ones equal those in Mistral's tokenizer.model, the 15
    whitespace-run pieces (-1e9) included."""
    import sentencepiece

    from tests.export.conftest import spm_file

    processor = sentencepiece.SentencePieceProcessor(model_file=str(spm_file()))
    real = [processor.get_score(i) for i in range(processor.get_piece_size())]
    assert fields(exports[("mistral-json", "f16")], "tokenizer.ggml.scores") == [real]
    assert fields(exports[("mistral", "f16")], "tokenizer.ggml.scores") == [real]


def test_smollm2_pre_tokenizer_is_the_converter_s(load, smollm2_dir):
    """llama.cpp's convert_hf_to_gguf.py names SmolLM2's pre-tokenizer `smollm` (so does the GGUF it ships in);
    RoPE theta and the chat template are the model's own; the tiny model's digits join ('Ġ1789'): `gpt-2`.
    Read by llama.cpp (GGUFReader parses the whole vocabulary, ~7 s here)."""
    for quant in QUANTS:
        meta = load("smollm2", quant).metadata
        assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "smollm", quant
        assert float(meta["llama.rope.freq_base"]) == 100000.0
        assert meta["tokenizer.chat_template"] == (smollm2_dir / "chat_template.jinja").read_text()
        assert meta["general.file_type"] == {"f16": "1", "q8_0": "7", "q4_k_m": "15"}[quant]
    assert load("tiny", "f16").metadata["tokenizer.ggml.pre"] == "gpt-2"


def test_legacy_false_sentencepiece_tokenizer_is_refused(spm_model_dirs, tmp_path):
    from tests.conftest import assert_user_error, cli

    done = cli("export", str(spm_model_dirs["first"]), "--gguf", str(tmp_path / "m.gguf"))
    assert_user_error(done, "legacy=False", "after special tokens such as </s>", '"legacy": true')
    assert list(tmp_path.iterdir()) == []


# ---- llama.cpp ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def load(exports):
    llama_cpp = llama_cpp_or_skip()
    loaded: dict = {}  # one thread for prompts too (its default is every core: OpenMP threads spinning on a
    # shared 2-core machine made a 40-token prompt take 5-8 s instead of 0.2 s)

    def get(model: str, quant: str):
        if (model, quant) not in loaded:
            loaded[(model, quant)] = llama_cpp.Llama(model_path=str(exports[(model, quant)]), n_ctx=512,
                                                     logits_all=True, n_threads=1, n_threads_batch=1, verbose=False)
        return loaded[(model, quant)]

    yield get
    for llm in loaded.values():  # freed here, not by the interpreter's exit (when its C library is gone)
        llm.close()


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
    for text in prompts(model_dirs[model]) + DIGITS:
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
    """transformers' logits at every position, in float32 from weights rounded to f16 as the f16 file stores them
    (so the comparison measures llama.cpp and the file's layout, not f16 rounding)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 2:  # the matrices; norms stay float32 in the file
                parameter.copy_(parameter.half().float())
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
    """Greedy decoding from each chat prompt, GREEDY_TOKENS steps: the same tokens, up to a step where
    transformers' two best logits are closer than NEAR_TIE of its largest (there f16 arithmetic may pick
    either, and the two continuations part); at most one chat may stop early at such a tie."""
    import torch

    hf, cases = references(model)
    llm = load(model, "f16")
    early = 0
    for ids, _ in cases:
        with torch.no_grad():
            done = hf.generate(torch.tensor([ids]), max_new_tokens=GREEDY_TOKENS, min_new_tokens=GREEDY_TOKENS,
                               do_sample=False, output_logits=True, return_dict_in_generate=True)
        want = done.sequences[0, len(ids):].tolist()
        llm.reset()
        llm.eval(ids)
        for step, logits in enumerate(done.logits):
            got = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            if got != want[step]:
                top2 = logits[0].topk(2).values
                gap = float((top2[0] - top2[1]) / logits[0].abs().max())
                print(f"{model}: parted at step {step} of {GREEDY_TOKENS}, top-2 gap {gap:.5f} of the largest logit")
                assert gap < NEAR_TIE, (step, got, want[step], gap)
                early += 1
                break
            llm.eval([got])
    assert early <= 1, early


def test_llama_cpp_without_jinja_does_not_render_zephyr(tokenizer):
    """Why the README and the Modelfile's docs say `--jinja`: llama.cpp's built-in formatter (what llama-server
    and llama-cli use without it) takes the Zephyr template for GLM-Edge's format, which leaves out `</s>` and
    the newlines after it."""
    import ctypes

    from zephyr_train.data.chat_template import ZEPHYR

    llama_cpp = llama_cpp_or_skip()
    for chat in CHATS:
        messages = (llama_cpp.llama_chat_message * len(chat))(
            *[llama_cpp.llama_chat_message(m["role"].encode(), m["content"].encode()) for m in chat])
        buffer = ctypes.create_string_buffer(4096)
        size = llama_cpp.llama_chat_apply_template(ZEPHYR.encode(), messages, len(chat), True, buffer, 4096)
        assert 0 < size < 4096
        builtin = buffer.raw[:size].decode()
        jinja = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        assert "</s>" in jinja and "</s>" not in builtin and builtin.replace("\n", "") == jinja.replace(
            "</s>", "").replace("\n", ""), (builtin, jinja)
