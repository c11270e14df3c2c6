"""Every training config in conf/ parses over its base (conf/base/fit.yaml), resolves its interpolations and builds the
model, data and trainer; every tools-group overlay (conf/mcp/) applies on top of a run's config."""

from pathlib import Path

import pytest
import yaml

from swirl_lightning.training.cli import make_cli
from swirl_lightning.training.data import SwirlDataModule
from swirl_lightning.training.module import SwirlModule

pytestmark = pytest.mark.integration  # starts processes or runs whole stages: not in make test-fast

CONF = Path(__file__).resolve().parents[2] / "conf"
CONFIGS = sorted(CONF.glob("*.yaml"))
# Configs written for GPUs are built on the CPU with these overrides (the parse itself is unchanged).
CPU_OVERRIDES = {"gsm8k_fsdp.yaml": ["--trainer.accelerator", "cpu", "--trainer.devices", "2",
                                     "--trainer.strategy.init_args.data_parallel_size", "2",
                                     "--trainer.precision", "32-true"]}


def test_the_training_configs_are_there():
    assert {p.name for p in CONFIGS} >= {"quickstart.yaml", "gsm8k_calculator.yaml", "hotpotqa_search.yaml",
                                         "gsm8k_warmup.yaml", "gsm8k_fsdp.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_starts_with_what_it_runs_how_long_and_the_command(path):
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    assert len(header) >= 3 and "Time here:" in text and f"--config conf/{path.name}" in text


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_prints_resolved(path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        make_cli(["fit", "--config", str(path), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert "${" not in yaml.safe_dump(printed)  # every interpolation resolved
    root = printed["trainer"]["default_root_dir"]
    for callback in printed["trainer"].get("callbacks") or []:
        if callback["class_path"].endswith("Checkpoint"):
            assert callback["init_args"]["save_last"] and callback["init_args"]["dirpath"].startswith(root)
    assert printed["model"]["objective"] in ("sft", "offline", "swirl")


def merged(path: Path) -> dict:
    """A config over its base (``config:``, conf/base/fit.yaml), group by group, as ``swirl fit`` reads them."""
    def merge(base: dict, over: dict) -> dict:
        return {**base, **{key: merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict)
                           else value for key, value in over.items()}}

    document = yaml.safe_load(path.read_text())
    return merge(merged(path.parent / document.pop("config")), document) if "config" in document else document


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_builds_model_data_and_trainer(path):
    cli = make_cli(["--config", str(path), *CPU_OVERRIDES.get(path.name, [])], run=False)
    raw = merged(path)
    assert isinstance(cli.model, SwirlModule) and isinstance(cli.datamodule, SwirlDataModule)
    assert cli.model.objective.name == cli.datamodule.objective.name == raw["model"]["objective"]
    assert cli.datamodule.tokenizer_name == cli.model.policy.name == raw["policy"]["name"]  # linked
    assert cli.model.task == cli.datamodule.task and cli.model.task.name == raw["task"]["name"]
    assert cli.model.judge == cli.datamodule.judge and cli.model.tools == cli.datamodule.tools
    assert cli.trainer.default_root_dir.endswith(raw["trainer"]["default_root_dir"])


def test_a_later_flag_reaches_the_interpolations(tmp_path):
    cli = make_cli(["--config", str(CONF / "quickstart.yaml"), "--trainer.default_root_dir", str(tmp_path)], run=False)
    assert cli.trainer.checkpoint_callback.dirpath == str(tmp_path / "checkpoints")
    assert cli.trainer.logger.save_dir == str(tmp_path)


OVERLAYS = sorted((CONF / "mcp").glob("*.yaml"))
"""Tools-group overlays: added with a second ``--config`` to a run's config, or given to ``swirl tools``."""


@pytest.mark.parametrize("path", OVERLAYS, ids=lambda p: p.name)
def test_a_tools_overlay_applies_to_generate_fit_and_swirl_tools(path, capsys):
    from swirl_lightning.commands.tools import ToolsListConfig
    from swirl_lightning.core.config import parse_config
    from swirl_lightning.rollout.generate import GenerateConfig

    raw = yaml.safe_load(path.read_text())
    header = path.read_text().split("\ntools:")[0]
    assert set(raw) == {"tools"} and f"--config conf/mcp/{path.name}" in header, "an overlay of the tools group only"
    base = CONF / "generate" / "gsm8k.yaml"
    generate = parse_config(GenerateConfig, ["--config", str(base), "--config", str(path)], "swirl generate")
    alone = parse_config(GenerateConfig, ["--config", str(base)], "swirl generate")
    assert generate.tools.plugins == raw["tools"]["plugins"] and generate.tools.names == alone.tools.names
    with pytest.raises(SystemExit) as exit_info:
        make_cli(["fit", "--config", str(CONF / "quickstart.yaml"), "--config", str(path), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert yaml.safe_load(capsys.readouterr().out)["tools"]["plugins"] == raw["tools"]["plugins"]
    listed = parse_config(ToolsListConfig, ["--config", str(path)], "swirl tools list", only_own_groups=True)
    assert listed.tools.plugins == raw["tools"]["plugins"]
