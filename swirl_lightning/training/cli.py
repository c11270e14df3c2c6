"""``swirl fit | validate | test | predict``: LightningCLI over :class:`~swirl_lightning.training.module.SwirlModule`
and :class:`~swirl_lightning.training.data.SwirlDataModule`.

Configs are YAML files (``conf/*.yaml``) with OmegaConf ``${...}`` interpolation; every option has
``--help`` text from the config dataclasses' attribute docstrings. The groups every command shares (``policy``,
``task``, ``sampling``, ``tools``, ``judge``: :mod:`swirl_lightning.core.config`) sit at the top level, as in
``swirl generate`` and ``swirl filter``, and are linked into ``model`` and ``data``; ``model.objective`` feeds the
data module too.

Resuming: ``swirl fit --config X.yaml --ckpt_path last`` restores weights, optimizer, schedule, loop
counters and the data position (see :mod:`swirl_lightning.training.data`); the config's ModelCheckpoint needs
``save_last: true`` and a fixed ``dirpath``.
"""

from __future__ import annotations

import warnings
from dataclasses import fields
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from swirl_lightning.core.config import SHARED_GROUPS
from swirl_lightning.training.data import SwirlDataModule
from swirl_lightning.training.module import SwirlModule

# Which shared group feeds which init argument of the module and the data module.
LINKED_GROUPS = {"policy": ("model.policy",), "task": ("model.task", "data.task"), "sampling": ("model.sampling",),
                 "tools": ("model.tools", "data.tools"), "judge": ("model.judge", "data.judge")}


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

    def before_fit(self) -> None:
        """Checks that need the built trainer and module, before any weights load."""
        if self.trainer.max_steps == 0:
            raise ValueError("trainer.max_steps: expected a positive number of optimizer steps, or -1 for max_epochs")
        export = self.model.export_config
        resuming = bool(self.config[self.subcommand].get("ckpt_path"))  # the same run goes on: its export is its own
        if export.enabled and export.dir and not (export.overwrite or resuming) and Path(export.dir).exists() \
                and any(Path(export.dir).iterdir()):
            raise FileExistsError(f"model.export.dir {export.dir} holds an export already: pass "
                                  "--model.export.overwrite true to replace it, or choose another dir")

    def _parse_ckpt_path(self) -> None:
        # LightningCLI would replace the model options with those saved in a --ckpt_path checkpoint, so
        # `swirl validate/predict --model.evaluation.* ...` could not change how it evaluates. Here the config
        # and flags given are the options used; the checkpoint supplies the weights (a mismatched policy
        # fails to load them, naming the weights).
        return None


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
