"""The policy saved at the end of ``fit`` (``model.export``), in Hugging Face format: :class:`PolicyExport`, the
callback that writes it, :func:`export_policy`, what it writes, and :func:`check_export_folder`, the check before
training that it will overwrite nothing of the user's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch

from swirl_lightning.core.config import PolicyConfig
from swirl_lightning.core.models import EXPORT_RECORD
from swirl_lightning.training.config import ExportConfig, LoraConfig
from swirl_lightning.training.policy import ActionScorer


class PolicyExport(L.Callback):
    """At the end of ``fit``, rank 0 exports the policy to ``export.dir`` (default: ``<default_root_dir>/export``,
    beside the logs, not in them: TensorBoard would scan the weights' folder)."""

    def __init__(self, export: ExportConfig) -> None:
        self.export = export

    def on_fit_end(self, trainer: L.Trainer, module: Any) -> None:
        from torch.distributed.fsdp import FSDPModule

        if not self.export.enabled:
            return
        if isinstance(module.scorer, FSDPModule):
            print("export skipped under FSDP2: convert the sharded checkpoint instead", flush=True)
        elif trainer.global_rank == 0:
            trained_on = [t.example_id for t in getattr(trainer.datamodule, "train_trajectories", [])]
            export_policy(module.scorer, module.tokenizer, self.export.dir or Path(trainer.default_root_dir) / "export",
                          policy=module.policy, lora=module.lora, export=self.export, objective=module.objective.name,
                          training_questions=trained_on)


def export_policy(scorer: ActionScorer, tokenizer, directory: str | Path, *, policy: PolicyConfig, lora: LoraConfig,
                  export: ExportConfig, objective: str, training_questions: Sequence[str] = ()) -> Path:
    """Save the policy in Hugging Face format: the LoRA adapter, or the whole model; plus the tokenizer, a
    ``swirl_export.json`` saying what it is, and ``training_questions.txt``, the ids of the questions it was trained
    on (so that an evaluation can show it never saw its questions).

    A LoRA trained on a merged warm start is saved alone, small enough to ship, and ``swirl_export.json`` names the
    warm start (``merged_adapter``): loading the export merges the warm start first, then this adapter
    (:func:`~swirl_lightning.core.models.merge_adapter`), which is the policy that trained.

    ``swirl_export.json`` lists the files the export wrote (``files``): a resumed run may replace those, and only
    those (:func:`check_export_folder`)."""
    directory = Path(directory)
    before = _stats(directory)
    ours_before = exported_files(directory)
    lm = scorer.lm
    adapter_only = lora.r > 0
    lm.save_pretrained(directory)
    if adapter_only and export.dtype:
        cast_safetensors(directory / "adapter_model.safetensors", getattr(torch, export.dtype))
    if adapter_only:
        # The base as the user named it (an alias or a hub id), not this machine's cache folder.
        config_path = directory / "adapter_config.json"
        adapter_config = json.loads(config_path.read_text())
        adapter_config["base_model_name_or_path"] = policy.name
        config_path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(directory)
    if training_questions:
        (directory / "training_questions.txt").write_text("\n".join(sorted(set(training_questions))) + "\n")
    # Ours: what is new or rewritten now, and what an earlier export of this folder wrote; never a file of the user's.
    after = _stats(directory)
    written = {name for name, stat in after.items() if before.get(name) != stat or name in ours_before}
    (directory / EXPORT_RECORD).write_text(json.dumps(
        {"base_model": policy.name, "merged_adapter": policy.adapter, "adapter_only": adapter_only,
         "objective": objective, "files": sorted(written | {EXPORT_RECORD})}, indent=2) + "\n")
    print(f"exported the policy to {directory}", flush=True)
    return directory


def _stats(directory: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of each entry of ``directory`` (none when it does not exist)."""
    if not directory.is_dir():
        return {}
    return {entry.name: (entry.stat().st_size, entry.stat().st_mtime_ns) for entry in directory.iterdir()}


def exported_files(directory: str | Path) -> set[str]:
    """The names of the files an export wrote into ``directory``, as its ``swirl_export.json`` lists them (none for no
    export, or one from before the list was kept)."""
    from swirl_lightning.core.safe_load import loads_json

    record = Path(directory) / EXPORT_RECORD
    try:  # bounded: a deep or huge record is no export's
        data = loads_json(record.read_bytes()) if record.is_file() else None
    except ValueError:  # not JSON, not text, or over a bound: nothing there is known to be an export's
        return set()
    files = data.get("files") if isinstance(data, dict) else None
    return {name for name in files if isinstance(name, str)} if isinstance(files, list) else set()


def check_export_folder(directory: str | Path, *, resuming: bool, overwrite: bool) -> None:
    """Refuse, before training starts, an export folder whose files the export at the end would overwrite without
    leave: for a new run, any file (an earlier run's export, or the user's); for a resumed one (its export may be there
    already), any file no export wrote. ``overwrite`` gives that leave."""
    directory = Path(directory)
    present = sorted(entry.name for entry in directory.iterdir()) if directory.is_dir() else []
    if overwrite or not present:
        return
    foreign = [name for name in present if name not in exported_files(directory)]
    if foreign:
        raise FileExistsError(f"export folder {directory} holds files no export wrote ({', '.join(foreign[:3])}"
                              f"{', ...' if len(foreign) > 3 else ''}): the export at the end of fit would overwrite "
                              "them; choose another --model.export.dir, or pass --overwrite true to replace them")
    if not resuming:
        raise FileExistsError(f"export folder {directory} holds the export of an earlier run: pass --overwrite true to "
                              "start over (it is replaced), --ckpt_path last to resume that run, or choose another "
                              "--model.export.dir")


def cast_safetensors(path: Path, dtype: torch.dtype) -> None:
    """Rewrite a safetensors file with its floating-point tensors cast to ``dtype``."""
    from safetensors.torch import load_file, save_file

    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in load_file(path).items()}
    save_file(tensors, path, metadata={"format": "pt"})
