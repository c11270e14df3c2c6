"""``swirl fit | validate | test | predict``: LightningCLI over :class:`~swirl_lightning.training.module.SwirlModule`
and :class:`~swirl_lightning.training.data.SwirlDataModule`.

Configs are YAML files (``conf/*.yaml``) with OmegaConf ``${...}`` interpolation; every option has
``--help`` text from the config dataclasses' attribute docstrings. The groups every command shares (``policy``,
``task``, ``sampling``, ``tools``, ``judge``: :mod:`swirl_lightning.core.config`) sit at the top level, as in
``swirl generate`` and ``swirl filter``, and are linked into ``model`` and ``data``; ``model.objective`` feeds the
data module too.

Runs are named for what they are: a logger's ``name`` (``tb`` in the shipped configs) gets the config file's name and
the stage appended, so ``swirl fit --config conf/quickstart.yaml`` logs to ``<root>/tb/quickstart/fit/version_N``
and ``swirl validate`` with it to ``tb/quickstart/validate/version_N`` (:func:`run_name`; :func:`log_dirs` finds
them). The resolved config, trainer included, is each run's HPARAMS in TensorBoard, with the evaluation figures
(``val/*``, or ``test/*``) as its metrics (:class:`SwirlConfigCallback`).

Resuming: ``swirl fit --config X.yaml --ckpt_path last`` restores weights, optimizer, schedule, loop
counters and the data position (see :mod:`swirl_lightning.training.data`); the config's ModelCheckpoint needs
``save_last: true`` and a fixed ``dirpath``.
"""

from __future__ import annotations

import json
import re
import sys
import warnings
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from swirl_lightning.core.config import SHARED_GROUPS, with_base_configs
from swirl_lightning.core.safe_load import check_config_arguments
from swirl_lightning.training.callbacks import EVALUATION_FIGURES
from swirl_lightning.training.data import SwirlDataModule
from swirl_lightning.training.export import check_export_folder
from swirl_lightning.training.module import SwirlModule

# Which shared group feeds which init argument of the module and the data module.
LINKED_GROUPS = {"policy": ("model.policy",), "task": ("model.task", "data.task"), "sampling": ("model.sampling",),
                 "engine": ("model.engine",),
                 "tools": ("model.tools", "data.tools"), "judge": ("model.judge", "data.judge")}


NAMED_LOGGERS = ("TensorBoardLogger", "CSVLogger")
"""Loggers whose ``name`` gets the run name appended (their log folder is ``save_dir/name/version_N``)."""


def config_files(argv: Sequence[str]) -> list[Path]:
    """The files given with ``--config`` (not YAML strings given inline)."""
    found = []
    for i, token in enumerate(argv):
        value = token.split("=", 1)[1] if token.startswith("--config=") else (
            argv[i + 1] if token == "--config" and i + 1 < len(argv) else None)
        if value is not None and Path(value).suffix in (".yaml", ".yml", ".json") and Path(value).is_file():
            found.append(Path(value))
    return found


def run_name(configs: Sequence[Path], stage: str | None) -> str:
    """``<config name>/<stage>``, e.g. ``quickstart/fit``: the config files' names (joined by ``+``), then the stage;
    just the stage without a config file (``run`` when neither is known)."""
    return "/".join(filter(None, ["+".join(path.stem for path in configs), stage])) or "run"


def log_dirs(root: str | Path, stage: str | None = None) -> list[Path]:
    """The log folders (``.../<stage>/version_N``) under ``root``, of one stage or all, oldest first (by the time
    in their event files' names, then the version number)."""
    def started(folder: Path) -> tuple[int, int]:
        times = [int(p.name.split(".")[3]) for p in folder.glob("events.out.tfevents.*")
                 if len(p.name.split(".")) > 3 and p.name.split(".")[3].isdigit()]
        return min(times, default=0), int(folder.name.split("_")[1])

    folders = [p for p in Path(root).rglob("version_*") if p.is_dir() and re.fullmatch(r"version_\d+", p.name)
               and (stage is None or p.parent.name == stage)]
    return sorted(folders, key=started)


def flat_config(config: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"a.b.c": value}``, each value a number, bool or string (lists and empty values as
    JSON), as TensorBoard's HPARAMS takes them."""
    items = config.as_dict() if isinstance(config, Namespace) else config
    flat: dict[str, Any] = {}
    for key, value in items.items():
        name = f"{prefix}{key}"
        if isinstance(value, Namespace):
            value = value.as_dict()
        if isinstance(value, dict) and value:
            flat.update(flat_config(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, default=str)
    return flat


class SwirlConfigCallback(SaveConfigCallback):
    """Saves the resolved config to the log folder (``config.yaml``, as LightningCLI does) and logs it as the run's
    hyperparameters in TensorBoard, with the evaluation figures of the stage (``val/*``; ``test/*`` for ``test``)
    as the HPARAMS metrics: TensorBoard shows their last values. No placeholder ``hp_metric`` is written."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        from lightning.pytorch.loggers import TensorBoardLogger
        from torch.utils.tensorboard.summary import hparams

        prefix = {"fit": "val", "validate": "val", "test": "test"}.get(stage)
        metrics = {f"{prefix}/{name}": 0.0 for name in EVALUATION_FIGURES} if prefix else {}
        params = flat_config(self.config)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                # As TensorBoardLogger.log_hyperparams writes them, without its scalar for each metric.
                writer = logger.experiment._get_file_writer()
                for summary in hparams(params, metrics):
                    writer.add_summary(summary)


class SwirlCLI(LightningCLI):
    """LightningCLI with the shared groups (``policy``, ``task``, ``sampling``, ``tools``, ``judge``) at the top level,
    spelled as every other command spells them, and linked into the module and the data module."""

    def add_arguments_to_parser(self, parser) -> None:
        for group, cls in SHARED_GROUPS.items():
            parser.add_class_arguments(cls, group)
            # jsonargparse links fields, not whole dataclass groups.
            for target in LINKED_GROUPS[group]:
                for field in fields(cls):
                    parser.link_arguments(f"{group}.{field.name}", f"{target}.{field.name}")
        parser.link_arguments("model.objective", "data.objective")
        parser.link_arguments("policy.name", "data.tokenizer")
        parser.link_arguments("model.evaluation.sampling.batch_size", "data.validation_batch_size")
        # Every subcommand takes it, so that a fit's saved config.yaml also configures validate, test and predict.
        parser.add_argument("--overwrite", type=bool, default=False,
                            help="fit: start over in folders an earlier run wrote: its checkpoints in the checkpoint "
                                 "folder are removed and its export is replaced (without it, fit refuses to start "
                                 "there); the other subcommands ignore it")

    def parse_arguments(self, parser, args) -> None:
        # The config files' names make the run's name; with `${...}` in them jsonargparse keeps no `config` key.
        argv = sys.argv[1:] if args is None else args
        self.config_files = config_files(argv) if isinstance(argv, (list, tuple)) else []
        if isinstance(argv, (list, tuple)):  # an alias bomb is stopped before jsonargparse expands it
            check_config_arguments(argv)
            args = with_base_configs(argv)  # a config's base (its `config:` key) first, merged key by key
        super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        """Append the run name (config name and stage) to each named logger's ``name``; the default logger (none
        configured) becomes a TensorBoard one in ``lightning_logs/<run name>``."""
        # Without a subcommand (`run=False`: the caller picks the stage), the config name alone.
        config = self.config[self.subcommand] if self.subcommand else self.config
        name = run_name(self.config_files, self.subcommand)
        if config.trainer.logger in (None, True):
            config.trainer.logger = Namespace(
                class_path="lightning.pytorch.loggers.TensorBoardLogger",
                init_args=Namespace(save_dir=config.trainer.default_root_dir or ".", name=f"lightning_logs/{name}"))
            return
        loggers = config.trainer.logger if isinstance(config.trainer.logger, list) else [config.trainer.logger]
        for logger in loggers:
            if isinstance(logger, Namespace) and str(logger.get("class_path", "")).rsplit(".", 1)[-1] in NAMED_LOGGERS:
                base = logger.init_args.get("name")
                logger.init_args.name = f"{base}/{name}" if base else name

    def before_fit(self) -> None:
        """Checks that need the built trainer and module, before any weights load."""
        self.model.sampler.check_trainable()
        if self.trainer.max_steps == 0:
            raise ValueError("trainer.max_steps: expected a positive number of optimizer steps, or -1 for max_epochs")
        config = self.config[self.subcommand]
        resuming = bool(config.get("ckpt_path"))  # the same run goes on: its checkpoints and export are its own
        overwrite = bool(config.get("overwrite"))
        if resuming:  # its checkpoint folder holds its own checkpoints: Lightning's warning is for a fresh run there
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        export = self.model.export_config
        if export.enabled:
            check_export_folder(export.dir or Path(self.trainer.default_root_dir) / "export", resuming=resuming,
                                overwrite=overwrite or export.overwrite)
        if not resuming:
            clear_earlier_checkpoints(self.trainer, overwrite)

    def _parse_ckpt_path(self) -> None:
        # LightningCLI would replace the model options with those saved in a --ckpt_path checkpoint, so
        # `swirl validate/predict --model.evaluation.* ...` could not change how it evaluates. Here the config
        # and flags given are the options used; the checkpoint supplies the weights (a mismatched policy
        # fails to load them, naming the weights).
        return None


def clear_earlier_checkpoints(trainer: Any, overwrite: bool) -> None:
    """A new run (no ``--ckpt_path``) in a checkpoint folder holding an earlier run's checkpoints: refuse, or with
    ``overwrite`` remove them. Left there, they would be overwritten one by one (``last.ckpt`` first), and a pruning
    that keeps the newest by step would keep the earlier run's and remove the new run's."""
    import shutil

    for callback in trainer.checkpoint_callbacks:
        folder = Path(callback.dirpath) if getattr(callback, "dirpath", None) else None  # None: a new version folder
        earlier = sorted(folder.glob("*.ckpt")) if folder is not None and folder.is_dir() else []
        if earlier and not overwrite:
            raise FileExistsError(f"checkpoint folder {folder} holds an earlier run's checkpoints ("
                                  f"{', '.join(p.name for p in earlier[:3])}{', ...' if len(earlier) > 3 else ''}): "
                                  "pass --ckpt_path last to resume that run, --overwrite true to start over (they are "
                                  "removed), or choose another --trainer.default_root_dir")
        for path in earlier:  # a sharded (FSDP2) checkpoint is a folder
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def make_cli(args: list[str] | None, run: bool = True) -> SwirlCLI:
    """Build (and with ``run``, execute) the CLI for ``args`` (a subcommand first when ``run``); ``None``
    reads ``sys.argv``."""
    from jsonargparse import set_parsing_settings

    # "omegaconf+" resolves ${...} after every file and flag is applied, so a flag such as
    # --trainer.default_root_dir also moves the paths interpolated from it; absolute paths (${trainer.x})
    # are read from the config's root, not from the subcommand's.
    set_parsing_settings(docstring_parse_attribute_docstrings=True, omegaconf_absolute_to_relative_paths=True)
    with warnings.catch_warnings():
        # Passing args from Python is this function's purpose; LightningCLI warns when sys.argv is also set.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        # `swirl` steps its optimizer itself, and a checkpoint after the update is what resuming needs; Lightning
        # would print a page of sample code about saving the state before it.
        warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
        return SwirlCLI(
            SwirlModule,
            SwirlDataModule,
            args=args,
            run=run,
            parser_kwargs={"parser_mode": "omegaconf+"},
            auto_configure_optimizers=False,  # the optimizer is model.optimizer (8-bit AdamW, LoRA-only parameters)
            save_config_callback=SwirlConfigCallback,
            save_config_kwargs={"overwrite": True},
        )


def _command(name: str):
    def main(argv: list[str]) -> int:
        make_cli([name, *argv])
        return 0

    main.__name__ = f"{name}_main"
    main.__doc__ = f"``swirl {name} --config FILE.yaml [--key value ...]``."
    return main


fit_main = _command("fit")
validate_main = _command("validate")
test_main = _command("test")
predict_main = _command("predict")
