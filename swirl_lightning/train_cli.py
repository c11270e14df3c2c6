"""``swirl fit | validate | test | predict``: LightningCLI over :class:`~swirl_lightning.module.SwirlModule`
and :class:`~swirl_lightning.data.SwirlDataModule`.

Configs are YAML files (``conf/*.yaml``) with OmegaConf ``${...}`` interpolation; every option has
``--help`` text from the config dataclasses' attribute docstrings. Three values are written once and
linked: ``model.objective`` and ``model.policy.name`` feed the data module (objective, tokenizer), and
``data.task`` feeds the module (tools and prompt format of the live evaluation).

Resuming: ``swirl fit --config X.yaml --ckpt_path last`` restores weights, optimizer, schedule, loop
counters and the data position (see :mod:`swirl_lightning.data`); the config's ModelCheckpoint needs
``save_last: true`` and a fixed ``dirpath``.
"""

from __future__ import annotations

import warnings
from dataclasses import fields

from lightning.pytorch.cli import LightningCLI

from .data import SwirlDataModule, TaskConfig
from .module import SwirlModule


class SwirlCLI(LightningCLI):
    """LightningCLI with the model <-> data links of swirl-lightning."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.objective", "data.objective")
        parser.link_arguments("model.policy.name", "data.tokenizer")
        # jsonargparse links fields, not whole dataclass groups.
        for task_field in fields(TaskConfig):
            parser.link_arguments(f"data.task.{task_field.name}", f"model.task.{task_field.name}")

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
