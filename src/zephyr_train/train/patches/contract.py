"""What a TRL patch relies on, checked when it installs: the contract between `train/patches/` and TRL.

Each patch changes private behaviour of TRL or transformers, and the version pin is not enough of a
guard: a renamed column or a function TRL stops calling would leave a patch silently wrong (attention
leaking across packed examples) or silently absent (the console still saying "packed pairs"). So each
patch module declares one `Patch`:
  - `needs`: the private names it reads, each a `Need` checked before the model loads (an attribute, a
    signature, a dataclass's fields);
  - `after_init`: what can only be checked on the built trainer (a dataset column, a hook TRL called);
  - `on_mismatch`: "fallback" for a speed patch (plain TRL computes the same thing, slower: printed and
    recorded), "error" for one that changes what is trained (`dpo.max_prompt_length`): a one-line error
    naming the patch, the name and the installed TRL version, since falling back would train on other data.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setup:
    """What a stage's patches need to know about its run, known before the model loads."""

    enabled: bool = True  # the recipe's `patches` key: false runs plain TRL
    device: str = "cpu"  # the trainer's device type: TRL's Triton kernels run on cuda and xpu only
    attn_implementation: str | None = None
    lm_head: str = "auto"  # dpo.lm_head
    max_prompt_length: int | None = None  # dpo.max_prompt_length
    bos_token_id: int | None = None


def _unknown() -> str | None:
    return None


@dataclass(frozen=True)
class Need:
    """One private name a patch relies on: `what` in words, `problem()` says how the installed libraries differ.
    `static()` says the same from TRL's source without importing it (7 s), for `check`; None when it cannot tell."""

    what: str
    problem: Callable[[], str | None]
    static: Callable[[], str | None] = _unknown


def _resolve(dotted: str) -> Any:
    """`package.module.Name.attr` -> the object (raises AttributeError / ImportError when it is gone)."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def attribute(dotted: str) -> Need:
    """`dotted` exists."""
    def problem() -> str | None:
        try:
            _resolve(dotted)
        except (AttributeError, ImportError):
            return f"{dotted} is gone"
        return None

    return Need(dotted, problem)


def parameters(dotted: str, names: tuple[str, ...], skip: int = 0) -> Need:
    """`dotted` is a callable whose parameters, after the first `skip`, start with `names` in this order
    (positional calls depend on the order)."""
    def problem() -> str | None:
        try:
            found = list(inspect.signature(_resolve(dotted)).parameters)[skip:]
        except (AttributeError, ImportError, TypeError, ValueError):
            return f"{dotted} is gone"
        if found[:len(names)] != list(names):
            return f"{dotted} takes ({', '.join(found)}), not ({', '.join(names)})"
        return None

    def static() -> str | None:
        found = _source_parameters(dotted)
        if found is None or found[skip:][:len(names)] == list(names):
            return None
        return f"{dotted} takes ({', '.join(found[skip:])}), not ({', '.join(names)})"

    return Need(f"{dotted}({', '.join(names)})", problem, static)


def _source_parameters(dotted: str) -> list[str] | None:
    """The parameter names of `module.Class.method` or `module.function`, read from the installed source;
    None when the source does not define it there (imported or inherited: only the import can tell)."""
    import ast

    from zephyr_train.config.trainer_fields import module_file

    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            path = module_file(".".join(parts[:cut]))
        except ModuleNotFoundError:
            return None
        if not path.is_file():
            continue
        body: list[ast.stmt] = ast.parse(path.read_text(encoding="utf-8")).body
        for name in parts[cut:]:
            node = next((n for n in body if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name == name), None)
            if node is None:
                return None
            body = node.body if isinstance(node, ast.ClassDef) else []
        if not isinstance(node, ast.FunctionDef):
            return None
        return [a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)]
    return None


def fields(dotted: str, names: tuple[str, ...]) -> Need:
    """`dotted` is a dataclass (a transformers `ModelOutput`) with at least these fields."""
    def problem() -> str | None:
        import dataclasses

        try:
            have = {f.name for f in dataclasses.fields(_resolve(dotted))}
        except (AttributeError, ImportError, TypeError):
            return f"{dotted} is gone"
        missing = [n for n in names if n not in have]
        return f"{dotted} has no field {', '.join(missing)}" if missing else None

    return Need(f"{dotted} fields {', '.join(names)}", problem)


def unwrapped(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (TRL patches that one's forward), else the model itself.
    (`peft_config` is no test: a base model with adapters injected has one too.)"""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def fused_forward_problem(model: Any) -> str | None:
    """The forward TRL's `add_fused_lm_head` left on `model` takes the keywords our heads take over.
    (`functools.wraps` shows the model's own signature; the function itself is read, not its wrapper's.)"""
    forward = getattr(model.forward, "__func__", model.forward)
    params = inspect.signature(forward, follow_wrapped=False).parameters
    missing = [p for p in ("fused_lm_head", "labels", "shift_labels", "num_items_in_batch") if p not in params]
    return f"the model's forward after TRL's add_fused_lm_head takes no {', '.join(missing)}" if missing else None


@dataclass(frozen=True)
class Unwanted:
    """What `after_init` returns when the built trainer shows the patch has nothing to do (packing is off)."""

    reason: str


def _no_context(_: Setup) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def _nothing_after(_trainer: Any, _setup: Setup) -> str | Unwanted | None:
    return None


def _always(_: Setup) -> str | None:
    return None


@dataclass(frozen=True, kw_only=True)
class Patch:
    """One patch: what it does, what it relies on, when it is not wanted, and how it installs."""

    name: str
    does: str  # in words, for the console: "packed rows with block-diagonal attention"
    needs: Callable[[Setup], tuple[Need, ...]]  # the private names this run's use of it reads
    on_mismatch: str = "fallback"  # "fallback": plain TRL instead, printed and recorded; "error": stop
    fix: str = ""  # the error's advice, for on_mismatch="error"
    unwanted: Callable[[Setup], str | None] = _always  # why it does not apply to this run (None: it does)
    during_init: Callable[[Setup], contextlib.AbstractContextManager] = _no_context  # around the trainer's __init__
    # installs on the built trainer; returns a contract problem (-> on_mismatch), `Unwanted`, or None when applied
    after_init: Callable[[Any, Setup], str | Unwanted | None] = _nothing_after
    when_off: Callable[[Setup], str | None] = _always  # what `patches: false` changes beyond speed, to print

    def problems(self, setup: Setup, static: bool = False) -> list[str]:
        """How the installed TRL differs from what this patch relies on (`static`: from its source, no import)."""
        return [p for p in ((need.static if static else need.problem)() for need in self.needs(setup)) if p]
