"""Every `report_to` tracker's package is installed, checked before anything is written.

transformers looks for a tracker's package only when the trainer is built, after the model has loaded
and the output directory was claimed: `sft.report_to=trackio` without trackio installed used to end
in a 27-line traceback, exit 1, and a fingerprint file left behind. The names transformers accepts
are read from its source (`INTEGRATION_TO_CALLBACK`, no import); the packages each one needs, and
what to install, are below (the modules each `is_<name>_available` in transformers looks for).
"""

from __future__ import annotations

import ast
import importlib.util
from functools import cache

from zephyr_train.config.recipe import Recipe
from zephyr_train.config.trainer_fields import module_file

# tracker -> (modules it needs, each a tuple of alternatives), what to pip install
PACKAGES: dict[str, tuple[tuple[tuple[str, ...], ...], str]] = {
    "wandb": ((("wandb",),), "wandb"),
    "tensorboard": ((("tensorboard", "tensorboardX"),), "tensorboard"),
    "trackio": ((("trackio",),), "trackio"),
    "mlflow": ((("mlflow",),), "mlflow"),
    "comet_ml": ((("comet_ml",),), "comet-ml"),
    "clearml": ((("clearml",),), "clearml"),
    "dagshub": ((("dagshub",), ("mlflow",)), "dagshub mlflow"),
    "neptune": ((("neptune",),), "neptune"),
    "codecarbon": ((("codecarbon",),), "codecarbon"),
    "azure_ml": ((("azureml.core",),), "azureml-core"),
    "flyte": ((("flytekit",), ("flytekitplugins.deck",)), "flytekit flytekitplugins-deck-standard"),
    "dvclive": ((("dvclive",),), "dvclive"),
    "swanlab": ((("swanlab",),), "swanlab"),
    "kubeflow": ((("kubeflow",),), "kubeflow"),
}


@cache
def known_trackers() -> tuple[str, ...]:
    """The `report_to` names the installed transformers accepts, from its INTEGRATION_TO_CALLBACK mapping."""
    tree = ast.parse(module_file("transformers.integrations.integration_utils").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "INTEGRATION_TO_CALLBACK":
            return tuple(key.value for key in node.value.keys if isinstance(key, ast.Constant))
    return tuple(PACKAGES)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing
        return False


def names(value: object) -> list[str]:
    """The trackers a `report_to` value names (`none` and an empty list name none)."""
    items = [value] if isinstance(value, str) else list(value or [])
    return [str(v) for v in items if str(v) != "none"]


def problems(recipe: Recipe) -> list[str]:
    """One line per stage tracker that is unknown or whose package is missing, with the fix."""
    found = []
    for stage in recipe.stages:
        for name in names(stage.trainer.get("report_to")):
            if name == "all":
                continue  # transformers takes whatever is installed
            if name not in known_trackers():
                found.append(f"{recipe.source}: {stage.kind}.report_to {name!r} is not a tracker transformers knows; "
                             f"use none or one of {', '.join(known_trackers())}")
                continue
            needs, install = PACKAGES.get(name, (((name,),), name))
            missing = [alternatives[0] for alternatives in needs if not any(map(_installed, alternatives))]
            if missing:
                found.append(f"{recipe.source}: {stage.kind}.report_to names {name}, but {missing[0]} is not "
                             f"installed; run `pip install {install}`, or set {stage.kind}.report_to=none")
    return found
