"""The fields of TRL's `SFTConfig`/`DPOConfig`, read from the installed source without importing it.

Importing TRL costs seconds (it pulls in torch and transformers); reading its dataclasses with `ast`
costs milliseconds and still tracks the installed version exactly, so a recipe is validated against
the trainer that will run it, field names, types, defaults and `choices` included.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

# Where each trainer config class lives, as (top-level package, module path inside it, class name).
TRAINER_CONFIGS = {
    "sft": ("trl", "trainer.sft_config", "SFTConfig"),
    "dpo": ("trl", "trainer.dpo_config", "DPOConfig"),
}
# Packages that re-export lazily from `__init__`: where the class is really defined.
_REEXPORTS = {("transformers", "TrainingArguments"): "transformers.training_args"}


@dataclass(frozen=True)
class Field:
    name: str
    annotation: str
    default: Any
    choices: tuple[Any, ...] | None = None


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # finds, does not import
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{package} is not installed; run `make install`")
    return Path(next(iter(spec.submodule_search_locations)))


def _module_file(module: str) -> Path:
    package, _, rest = module.partition(".")
    path = _package_dir(package).joinpath(*rest.split(".")) if rest else _package_dir(package)
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _resolve_import(module: str, tree: ast.Module, name: str) -> str | None:
    """The absolute module that `name` was imported from in `module`'s source."""
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any(alias.name == name for alias in node.names):
            if node.level == 0:
                return node.module
            base = module.split(".")[: -node.level]
            return ".".join(base + ([node.module] if node.module else []))
    return None


def _literal(node: ast.AST | None) -> Any:
    if node is None:
        return None
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError):
        return ast.unparse(node)  # e.g. `default_factory=list` or an enum member: keep its spelling


def _field_from(stmt: ast.AnnAssign) -> Field | None:
    name = stmt.target.id if isinstance(stmt.target, ast.Name) else None
    annotation = ast.unparse(stmt.annotation)
    if name is None or name.startswith("_") or annotation.startswith("ClassVar"):
        return None
    default, choices = _literal(stmt.value), None
    if isinstance(stmt.value, ast.Call) and getattr(stmt.value.func, "id", "") == "field":
        kwargs = {kw.arg: kw.value for kw in stmt.value.keywords}
        default = _literal(kwargs.get("default"))
        if "default_factory" in kwargs:
            default = {"list": [], "dict": {}}.get(ast.unparse(kwargs["default_factory"]))
        metadata = _literal(kwargs.get("metadata"))
        if isinstance(metadata, dict) and isinstance(metadata.get("choices"), list | tuple):
            choices = tuple(metadata["choices"])
    return Field(name, annotation, default, choices)


def _class_fields(module: str, class_name: str) -> dict[str, Field]:
    tree = ast.parse(_module_file(module).read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    fields: dict[str, Field] = {}
    for base in cls.bases:  # base classes first, so the subclass's overrides win
        base_name = ast.unparse(base)
        base_module = _resolve_import(module, tree, base_name) or module
        base_module = _REEXPORTS.get((base_module, base_name), base_module)
        fields.update(_class_fields(base_module, base_name))
    for stmt in cls.body:
        if isinstance(stmt, ast.AnnAssign) and (f := _field_from(stmt)):
            fields[f.name] = f
    return fields


@cache
def trainer_fields(stage: str) -> dict[str, Field]:
    """All dataclass fields of the trainer config used by `stage` ("sft" or "dpo")."""
    package, module, class_name = TRAINER_CONFIGS[stage]
    return _class_fields(f"{package}.{module}", class_name)


# --- type coercion -------------------------------------------------------------------------------
# YAML 1.1 reads `5e-7` as a string and command-line overrides arrive as text, so numbers and
# booleans written as strings are converted when the field's type says what they must be.

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_BOOLS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def _kinds(annotation: str) -> set[str]:
    """The plain kinds an annotation admits: bool, int, float, str, dict, list, none."""
    kinds = set()
    for part in re.split(r"[|,\[\]]| ", annotation.replace("Optional[", "None|").replace("Union[", "")):
        part = part.strip()
        if part in {"bool", "int", "float", "str", "dict", "list"}:
            kinds.add(part)
        elif part == "None":
            kinds.add("none")
        elif part.startswith(("dict", "list")):
            kinds.add(part[:4])
        elif part in {"Any", "Literal"}:
            kinds.add("any")
    if annotation.startswith(("list", "dict")):  # element types say nothing about the field itself
        kinds -= {"str", "int", "float", "bool", "any"} - ({"str"} if "| str" in annotation else set())
    if not kinds or kinds == {"none"}:
        kinds.add("str")  # an enum (`IntervalStrategy | str`) or a class we only know by name
    return kinds


def coerce(value: Any, annotation: str) -> Any:
    """`value` converted to what `annotation` admits; ValueError naming the expected kind otherwise."""
    kinds = _kinds(annotation)
    if "any" in kinds:
        return value
    if value is None:
        if "none" in kinds:
            return None
        raise ValueError("must not be null")
    if isinstance(value, bool):
        if "bool" in kinds:
            return value
        if "str" in kinds and value is False:
            return "no"  # YAML 1.1 reads an unquoted `no` (as in `save_strategy: no`) as false
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if "int" in kinds and float(value).is_integer():
            return int(value)
        if "float" in kinds:
            return float(value)
        if "str" in kinds:
            return str(value)
    elif isinstance(value, str):
        text = value.strip()
        if "bool" in kinds and text.lower() in _BOOLS:
            return _BOOLS[text.lower()]
        if _NUMBER.match(text) and ("float" in kinds or "int" in kinds):
            number = float(text)
            if "int" in kinds and number.is_integer() and ("float" not in kinds or "." not in text):
                return int(number)
            if "float" in kinds:
                return number
        if "none" in kinds and text.lower() in {"none", "null"}:
            return None
        if "str" in kinds:
            return value
    elif isinstance(value, dict) and "dict" in kinds:
        return value
    elif isinstance(value, list) and "list" in kinds:
        return value
    raise ValueError(f"expects {' or '.join(sorted(kinds - {'none'}))}, got {value!r}")
