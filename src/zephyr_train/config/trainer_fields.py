"""The fields of TRL's `SFTConfig`/`DPOConfig` (and PEFT's `LoraConfig`), read from the installed source
without importing it.

Importing TRL costs seconds (it pulls in torch and transformers); reading its dataclasses with `ast`
costs milliseconds and still tracks the installed version exactly, so a recipe is validated against
the trainer that will run it, field names, types, defaults and `choices` included. What the configs'
`__post_init__` do to a value is read from the same source, so a recipe is taken as TRL takes it:
`loss_type: ipo` becomes `[ipo]` (TRL's `if isinstance(self.loss_type, str): self.loss_type = [...]`),
`lr_scheduler_type`/`optim`/`*_strategy` are checked against the enum that `__post_init__` converts them
to, and `pad_to_multiple_of` takes the strings its `int(...)` conversion takes. List items are checked
against the values the trainer compares them with (DPO's `loss_type == "ipo"` branches), since
DPOConfig's `loss_type` has no `choices` metadata. tests/config/test_trainer_fields.py compares all of
it with the real dataclasses, so a TRL upgrade that changes them fails a test the same day.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

# Packages that re-export lazily from `__init__`: where the class is really defined.
_REEXPORTS = {("transformers", "TrainingArguments"): "transformers.training_args"}


@dataclass(frozen=True)
class Field:
    name: str
    annotation: str
    default: Any
    choices: tuple[Any, ...] | None = None  # metadata `choices`, a `Literal[...]`, or the enum __post_init__ uses
    wraps: bool = False  # __post_init__ turns a single value into a one-item list (`self.x = [self.x]`)
    item_choices: tuple[Any, ...] | None = None  # for lists: the values each item may take
    int_strings: tuple[str, ...] | None = None  # __post_init__ runs int() on a str except these (pad_to_multiple_of)
    computed: bool = False  # the default is an expression (`default=default_optim`, which depends on torch)


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # finds, does not import
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{package} is not installed; run `make install`")
    return Path(next(iter(spec.submodule_search_locations)))


def module_file(module: str) -> Path:
    package, _, rest = module.partition(".")
    path = package_dir(package).joinpath(*rest.split(".")) if rest else package_dir(package)
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
    default, choices, kwargs = _literal(stmt.value), None, {}
    if isinstance(stmt.value, ast.Call) and getattr(stmt.value.func, "id", "") == "field":
        kwargs = {kw.arg: kw.value for kw in stmt.value.keywords}
        default = _literal(kwargs.get("default"))
        if "default_factory" in kwargs:
            factory = kwargs["default_factory"]
            default = _literal(factory.body) if isinstance(factory, ast.Lambda) else \
                {"list": [], "dict": {}}.get(ast.unparse(factory))
        metadata = _literal(kwargs.get("metadata"))
        if isinstance(metadata, dict) and isinstance(metadata.get("choices"), list | tuple):
            choices = tuple(metadata["choices"])
    value_node = kwargs.get("default") if isinstance(stmt.value, ast.Call) and \
        getattr(stmt.value.func, "id", "") == "field" else stmt.value
    computed = isinstance(value_node, ast.Name | ast.Call | ast.Attribute) and \
        not (isinstance(value_node, ast.Name) and value_node.id in ("True", "False", "None"))
    if choices is None and "str" not in re.split(r"\W+", re.sub(r"Literal\[.*?\]", "", annotation)):
        choices = _literal_choices(stmt.annotation)  # a plain str beside the Literal admits any text
    return Field(name, annotation, default, choices, computed=computed)


def _literal_choices(annotation: ast.AST) -> tuple[Any, ...] | None:
    """The values of a `Literal[...]` inside an annotation (PEFT's `bias: Literal["none", "all", "lora_only"]`)."""
    for node in ast.walk(annotation):
        if isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("Literal"):
            inner = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            return tuple(_literal(e) for e in inner)
    return None


def _self_attr(node: ast.AST) -> str | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return node.attr
    return None


def _enum_values(module: str, tree: ast.Module, name: str) -> tuple[str, ...] | None:
    """String members of the enum class `name` as imported in `module` (e.g. transformers' SchedulerType)."""
    found = _resolve_import(module, tree, name) or module
    try:
        source = ast.parse(module_file(found).read_text(encoding="utf-8"))
    except (OSError, ModuleNotFoundError):
        return None
    cls = next((n for n in source.body if isinstance(n, ast.ClassDef) and n.name == name), None)
    if cls is None:
        return None
    values = tuple(stmt.value.value for stmt in cls.body if isinstance(stmt, ast.Assign)
                   and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str))
    return values or None


def _post_init(module: str, tree: ast.Module, cls: ast.ClassDef, fields: dict[str, Field]) -> None:
    """Apply what `cls.__post_init__` does to single fields: wrap in a list, convert to an enum, int()."""
    method = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__post_init__"), None)
    if method is None:
        return
    compared: dict[str, list[str]] = {}
    for node in ast.walk(method):
        if isinstance(node, ast.Compare) and (name := _self_attr(node.left)):
            compared.setdefault(name, []).extend(c.value for c in node.comparators
                                                 if isinstance(c, ast.Constant) and isinstance(c.value, str))
    for node in ast.walk(method):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and (name := _self_attr(node.targets[0])):
            value = node.value
            if name not in fields:
                continue
            if isinstance(value, ast.List) and len(value.elts) == 1 and _self_attr(value.elts[0]) == name:
                fields[name] = dataclasses.replace(fields[name], wraps=True)
            elif (isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id[:1].isupper()
                  and value.args and _self_attr(value.args[0]) == name):
                enum = _enum_values(module, tree, value.func.id)
                if enum:
                    fields[name] = dataclasses.replace(fields[name], choices=enum)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "int"
                and node.args and (name := _self_attr(node.args[0])) in fields):
            fields[name] = dataclasses.replace(fields[name], int_strings=tuple(dict.fromkeys(compared.get(name, []))))


def _item_choices(module: str, fields: dict[str, Field]) -> None:
    """For list fields without choices: the string constants the trainer compares an item with
    (`for loss_type in self.loss_types: if loss_type == "sigmoid": ...`)."""
    tree = ast.parse(module_file(module).read_text(encoding="utf-8"))
    seen: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and len(node.ops) == 1 \
                and isinstance(node.ops[0], ast.Eq | ast.NotEq) and isinstance(node.comparators[0], ast.Constant):
            value = node.comparators[0].value
            if isinstance(value, str) and value not in seen.setdefault(node.left.id, []):
                seen[node.left.id].append(value)
    for name, field in fields.items():
        if field.annotation.startswith("list[str]") and field.choices is None and len(seen.get(name, [])) > 1:
            fields[name] = dataclasses.replace(field, item_choices=tuple(seen[name]))


def class_fields(module: str, class_name: str) -> dict[str, Field]:
    try:
        tree = ast.parse(module_file(module).read_text(encoding="utf-8"))
    except (OSError, ModuleNotFoundError):
        return {}  # a base outside the dataclass hierarchy (e.g. PEFT's PushToHubMixin)
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name), None)
    if cls is None:
        return {}
    fields: dict[str, Field] = {}
    for base in cls.bases:  # base classes first, so the subclass's overrides win
        base_name = ast.unparse(base)
        base_module = _resolve_import(module, tree, base_name) or module
        base_module = _REEXPORTS.get((base_module, base_name), base_module)
        fields.update(class_fields(base_module, base_name))
    for stmt in cls.body:
        if isinstance(stmt, ast.AnnAssign) and (f := _field_from(stmt)):
            if f.name in fields and f.choices is None:  # a redeclared field keeps what its base's post-init does
                f = dataclasses.replace(f, choices=fields[f.name].choices, wraps=fields[f.name].wraps,
                                        int_strings=fields[f.name].int_strings)
            fields[f.name] = f
    _post_init(module, tree, cls, fields)
    return fields


def dataclass_fields(module: str, class_name: str) -> dict[str, Field]:
    """The fields of any installed dataclass, read from its source (e.g. `peft.tuners.lora.config`, `LoraConfig`)."""
    return class_fields(module, class_name)


@cache
def trainer_fields(config: str, trainer_module: str) -> dict[str, Field]:
    """All dataclass fields of a trainer config (dotted: `trl.trainer.sft_config.SFTConfig`); list items are
    checked against the constants the trainer in `trainer_module` compares them with. A stage kind names
    both (`config.stage_kind.StageKind`)."""
    module, _, class_name = config.rpartition(".")
    fields = class_fields(module, class_name)
    _item_choices(trainer_module, fields)
    return fields


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


def _matches(value: Any, choices: tuple[Any, ...]) -> bool:
    """`value` is one of `choices`; a choice spelled `name_[what]` (PEFT's `pissa_niter_[number of iters]`)
    admits any value starting `name_`."""
    return value in choices or any(isinstance(c, str) and "[" in c and isinstance(value, str)
                                   and value.startswith(c.split("[")[0]) for c in choices)


def _show(choices: tuple[Any, ...]) -> str:
    return ", ".join(map(str, choices))


def check_value(field: Field, value: Any) -> Any:
    """`value` as the config's dataclass and `__post_init__` will take it; ValueError saying what is wrong.

    Applies, in TRL's order: the single-value-to-list wrap, the annotation's type, each list item's
    type and allowed values, the field's choices (None and booleans beside a Literal pass), and the
    strings an `int()` in `__post_init__` accepts.
    """
    kinds = _kinds(field.annotation)
    if field.wraps and value is not None and not isinstance(value, list) and "list" in kinds \
            and not ({"str", "any"} & kinds and isinstance(value, str)):
        value = [value]
    value = coerce(value, field.annotation)
    if isinstance(value, list):
        item = re.match(r"list\[([\w. |]+)\]", field.annotation)
        if item:
            value = [coerce(v, item.group(1)) for v in value]
        allowed = field.item_choices or (field.choices if field.wraps else None)
        bad = [v for v in value if allowed and not _matches(v, allowed)]
        if bad:
            raise ValueError(f"has {bad[0]!r}; each item must be one of {_show(allowed)}")
    elif field.choices and value is not None and not (isinstance(value, bool) and "bool" in kinds) \
            and not _matches(value, field.choices):
        raise ValueError(f"must be one of {_show(field.choices)}, got {value!r}")
    if field.int_strings is not None and isinstance(value, str) and value not in field.int_strings \
            and value.lower() not in ("none", "null") and not value.strip().lstrip("+-").isdigit():
        raise ValueError(f"expects an int or {_show(field.int_strings)}, got {value!r}")
    return value
