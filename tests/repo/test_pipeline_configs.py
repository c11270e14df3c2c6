"""Every `swirl generate` / `swirl filter` YAML in conf/ parses into its typed config."""

from pathlib import Path

import pytest

from swirl_lightning.core.config import parse_config
from swirl_lightning.judging.filter import FilterConfig
from swirl_lightning.rollout.generate import GenerateConfig

CONF = Path(__file__).resolve().parents[2] / "conf"
KINDS = {"generate": GenerateConfig, "filter": FilterConfig}


@pytest.mark.parametrize("path", sorted(p for kind in KINDS for p in (CONF / kind).glob("*.yaml")), ids=lambda p: p.name)
def test_config_parses(path):
    cls = KINDS[path.parent.name]
    assert path.read_text().startswith("#"), "each config starts with a comment saying how to run it"
    config = parse_config(cls, ["--config", str(path)], f"swirl {path.parent.name}")
    assert isinstance(config, cls)
    assert config.output.startswith("runs/")


def test_flags_override_the_config_file():
    config = parse_config(GenerateConfig, ["--config", str(CONF / "generate" / "gsm8k.yaml"), "--task.limit", "3"],
                          "swirl generate")
    assert config.task.limit == 3 and config.samples == 4 and config.task.name == "gsm8k"


def test_bad_value_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        parse_config(GenerateConfig, ["--samples", "many"], "swirl generate")
    assert "samples" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value", [("--samples", "0"), ("--sampling.top_p", "0"), ("--sampling.temperature", "-1"),
                                         ("--task.limit", "0")])
def test_out_of_range_values_are_usage_errors(flag, value, capsys):
    with pytest.raises(SystemExit):
        parse_config(GenerateConfig, [flag, value], "swirl generate")
    assert flag.lstrip("-") in capsys.readouterr().err
