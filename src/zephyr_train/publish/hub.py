"""Pushing each stage's result to the Hugging Face Hub, with its model card; never losing it locally.

Repos a run fills (recipe `hub` section): the DPO result goes to `hub.repo_id`, the SFT result to
`hub.sft_repo_id` (default `<repo_id>-sft`). A LoRA stage pushes its adapter there and the adapter
merged into its base (16/32-bit) to `<that repo>-merged`. An adapter's config names its base by Hub
id, not by the local path it was trained on: the DPO adapter after LoRA SFT sits on the merged SFT
model, so its base is `<sft repo>-merged`.

The token is huggingface_hub's own (HF_TOKEN or `huggingface-cli login`): never passed, printed or
written. A push is tried a few times; if it still fails the local files stay as they are and the
message says how to push later: `zephyr-train push RUN_DIR`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zephyr_train import run_files
from zephyr_train.config.recipe import Hub, Recipe
from zephyr_train.config.secrets import scrub
from zephyr_train.config.stage_kind import is_final
from zephyr_train.errors import UserError
from zephyr_train.inference import merge, portable
from zephyr_train.publish import model_card
from zephyr_train.run_files import ADAPTER_CONFIG, RESOLVED_RECIPE
from zephyr_train.stages import KINDS, load_resolved, read_result

# Local bookkeeping and resume state that has no place in a model repo (training_args.bin is a pickle).
SKIP_DIRS = {"merged", "runs", "tensorboard", "wandb"}
SKIP_FILES = {"training_args.bin", run_files.FINGERPRINT, "merged_from.json", "README.md", "optimizer.pt",
              "scheduler.pt", "scaler.pt"}
ATTEMPTS, FIRST_WAIT_S = 3, 5.0


def repo_for(recipe: Recipe, stage: str) -> str:
    """hub.repo_id for a final stage (one no other kind starts from: DPO), else hub.sft_repo_id or <repo>-<stage>."""
    hub = recipe.hub
    return hub.repo_id if is_final(stage, recipe.kinds) else hub.sft_repo_id or f"{hub.repo_id}-{stage}"


def base_of(recipe: Recipe, stage: str) -> str | None:
    """The Hub id of the model this stage trained on: the pushed upstream result (SFT's, for DPO), else the
    recipe's model."""
    upstream = recipe.upstream(stage)
    if upstream is not None:
        repo = repo_for(recipe, upstream.kind)
        return f"{repo}-merged" if upstream.lora else repo
    return model_card.hub_id(recipe.model.name_or_path)


@dataclass
class Upload:
    """One commit: the files of `folder` (with `replace`d contents) and the card, to `repo_id`."""

    repo_id: str
    folder: Path
    kind: str  # model | adapter | merged
    card: str
    replace: dict[str, bytes] = field(default_factory=dict)

    def files(self) -> dict[str, Path | bytes]:
        found = {path.relative_to(self.folder).as_posix(): path for path in sorted(self.folder.rglob("*"))
                 if path.is_file() and published(path.relative_to(self.folder))}
        return {**found, **self.replace, "README.md": self.card.encode()}

    def operations(self) -> list[Any]:
        from huggingface_hub import CommitOperationAdd

        return [CommitOperationAdd(path_in_repo=name, path_or_fileobj=source if isinstance(source, bytes)
                                   else str(source)) for name, source in self.files().items()]


def published(rel: Path) -> bool:
    name, folders = rel.name, rel.parts[:-1]
    if name in SKIP_FILES or name.endswith(".tmp") or name.startswith("rng_state"):
        return False
    return not any(part in SKIP_DIRS or part.startswith("checkpoint-") for part in folders)


def plan(recipe: Recipe, stage: str, stage_dir: Path, in_progress: int | None = None) -> list[Upload]:
    """What a push of this stage's directory sends; merges a LoRA adapter first (once, cached)."""
    summary = read_result(stage_dir, stage)
    repo, base = repo_for(recipe, stage), base_of(recipe, stage)
    adapter_config = stage_dir / ADAPTER_CONFIG
    if not adapter_config.exists():
        card = model_card.make_card(recipe, stage, repo, "model", base, recipe.model.name_or_path, summary,
                                    in_progress)
        return [Upload(repo, stage_dir, "model", str(card))]
    config = json.loads(adapter_config.read_text())
    local_base = portable.resolve_base(stage_dir, config.get("base_model_name_or_path") or recipe.model.name_or_path)
    config["base_model_name_or_path"] = base or local_base
    card = model_card.make_card(recipe, stage, repo, "adapter", base, local_base, summary, in_progress)
    uploads = [Upload(repo, stage_dir, "adapter", str(card), {ADAPTER_CONFIG: json.dumps(config, indent=2)
                                                              .encode()})]
    if in_progress is None:

        print(f"hub: merging the {stage} adapter into {local_base} for {repo}-merged")
        merged = merge.merge_adapter(stage_dir, local_base, recipe.model)
        card = model_card.make_card(recipe, stage, f"{repo}-merged", "merged", base, local_base, summary)
        uploads.append(Upload(f"{repo}-merged", merged, "merged", str(card)))
    return uploads


def send(upload: Upload, hub: Hub, api: Any, message: str) -> str:
    """Create the repo (and branch) if needed and commit the upload in one commit; returns its URL."""
    api.create_repo(upload.repo_id, private=hub.private, exist_ok=True)
    if hub.revision != "main":
        api.create_branch(upload.repo_id, branch=hub.revision, exist_ok=True)
    info = api.create_commit(upload.repo_id, operations=upload.operations(), commit_message=message,
                             revision=hub.revision)
    return str(info.commit_url)


def send_with_retries(upload: Upload, hub: Hub, api: Any, message: str, attempts: int = ATTEMPTS,
                      wait: float = FIRST_WAIT_S) -> str:
    for attempt in range(1, attempts):
        try:
            return send(upload, hub, api, message)
        except Exception as err:  # network, HTTP, auth: all worth a retry, none may lose the run
            print(f"hub: push to {upload.repo_id} failed ({first_line(err)}); retrying in {wait:.0f}s "
                  f"({attempt}/{attempts})", file=sys.stderr)
            time.sleep(wait)
            wait *= 2
    return send(upload, hub, api, message)


def first_line(err: Exception) -> str:
    return (scrub(str(err)).splitlines() or [type(err).__name__])[0]


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def push_stage(recipe: Recipe, stage: str, stage_dir: Path | None = None, api: Any = None,
               wait: float = FIRST_WAIT_S) -> bool:
    """Push a finished stage as the recipe's `hub` section says; True when pushed (or nothing to push).
    Each card is also written next to what it describes, as README.md."""
    if recipe.hub is None:
        return True
    stage_dir = Path(stage_dir or recipe.stage_dir(stage))
    again = f"push it later with: zephyr-train push {recipe.output_dir} --repo-id {recipe.hub.repo_id}"
    if offline():
        print(f"hub: HF_HUB_OFFLINE is set, {stage} not pushed; the result stays in {stage_dir}; {again}")
        return False
    from tqdm.auto import tqdm

    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    for upload in tqdm(plan(recipe, stage, stage_dir), desc=f"Pushing {stage} to the Hub", unit="repo"):
        (upload.folder / "README.md").write_text(upload.card, encoding="utf-8")
        try:
            url = send_with_retries(upload, recipe.hub, api, f"zephyr-train: {stage} {upload.kind}", wait=wait)
        except Exception as err:
            print(f"hub: pushing the {stage} {upload.kind} to {upload.repo_id} failed after {ATTEMPTS} attempts "
                  f"({first_line(err)}); the local result is kept in {upload.folder}; {again}",
                  file=sys.stderr)
            return False
        print(f"hub: {stage} {upload.kind} pushed to {upload.repo_id} ({url})")
    return True


def push_run(run_dir: str | Path, repo_id: str | None = None, api: Any = None) -> bool:
    """`zephyr-train push RUN_DIR`: every finished stage of a run, with the recipe it was made with."""
    run_dir = Path(run_dir)
    finished = [name for name in KINDS if (run_dir / name / run_files.SUMMARY).exists()]
    if not finished:
        expected = " or ".join(f"{name}/{run_files.SUMMARY}" for name in KINDS)
        raise UserError(f"{run_dir} holds no finished stage (no {expected}); give the output_dir of a run")
    ok = True
    for name in finished:
        recipe = load_resolved(run_dir / name)
        recipe.output_dir = str(run_dir)
        if repo_id:
            recipe.hub = Hub(**{**(recipe.hub.__dict__ if recipe.hub else {}), "repo_id": repo_id})
        if recipe.hub is None:
            raise UserError(f"{run_dir / name / RESOLVED_RECIPE} has no hub section; pass --repo-id "
                            "YOUR_NAME/MODEL or add hub.repo_id to the recipe")
        ok = push_stage(recipe, name, run_dir / name, api) and ok
    return ok


def save_callbacks(recipe: Recipe, stage: str, out: Path) -> list[Any]:
    """With `hub.strategy: every_save`, a callback pushing each checkpoint as it is saved (best effort:
    a failure is reported and training goes on; the end-of-stage push is the one that must succeed)."""
    if recipe.hub is None or recipe.hub.strategy != "every_save" or offline():
        return []
    from transformers import TrainerCallback

    class PushCheckpoint(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not state.is_world_process_zero:
                return
            from huggingface_hub import HfApi

            folder = out / f"checkpoint-{state.global_step}"
            for upload in plan(recipe, stage, folder, in_progress=state.global_step):
                try:
                    send_with_retries(upload, recipe.hub, HfApi(), f"zephyr-train: {stage} step {state.global_step}",
                                      attempts=1)
                except Exception as err:
                    print(f"hub: checkpoint push to {upload.repo_id} failed ({first_line(err)}); "
                          "training goes on, the stage's result is pushed at its end", file=sys.stderr)

    return [PushCheckpoint()]
