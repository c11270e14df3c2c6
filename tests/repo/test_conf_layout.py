"""The configs in conf/ hold what differs and nothing that rots: each names its stage's base (conf/base/<stage>.yaml,
by a top-level ``config:`` key) and restates none of the base's values; no config sets a value equal to the code's
default, unless it pins it on purpose (a ``# pinned: why`` comment on the line), overrides a different value of its
base, or names what the run is (model, task, objective, judge); and no header carries a measured figure (times,
memory, accuracies live in benchmarks/README.md and the adapters' READMEs), nor does the README (its prose, its tables
and the comments of its code blocks; inline code is a command or a value, not a figure), a Makefile comment, a
script's comments or a Python script's docstring. Sizes in GiB and MiB are settings here (``engine.kv_cache_gib``),
so the detector leaves those units out."""

import ast
import contextlib
import dataclasses
import io
import re
from pathlib import Path

import pytest
import yaml

from swirl_lightning.core.config import parse_config, with_base_configs

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
STAGES = {"fit": sorted(CONF.glob("*.yaml")), "generate": sorted((CONF / "generate").glob("*.yaml")),
          "filter": sorted((CONF / "filter").glob("*.yaml"))}
BASES = {"fit": CONF / "base" / "fit.yaml", "generate": CONF / "base" / "generate.yaml"}
"""The base of each stage's configs; filter has none: its configs share nothing but the code's defaults."""
CONFIGS = [(stage, path) for stage, paths in STAGES.items() for path in paths]
NAMES_THE_RUN = {"policy.name", "task.name", "model.objective", "judge.name"}
"""What a run is: every config may name these, even where they equal the code's default."""
FIGURE = re.compile(r"\d(?:[\d.,]*\d)? ?(?:ms|s|min|minutes?|seconds?|h|hours?|GB|MB|%|(?:tokens|steps|states)/s)"
                    r"(?![\w-])"
                    r"|\d+(?:\.\d+)?x (?:faster|slower|the time)|\bp [=<] ?\d")
"""A measured figure: a time, a memory size, a share, a rate, a speed-up, a p-value."""


def flat(document: object, prefix: str = "") -> dict[str, object]:
    """``{"a.b": value}`` of a nested YAML document; lists are values (a later file replaces them whole)."""
    if not isinstance(document, dict) or not document:
        return {prefix.rstrip("."): document}
    found: dict[str, object] = {}
    for key, value in document.items():
        found.update(flat(value, f"{prefix}{key}."))
    return found


def lines(path: Path) -> dict[str, str]:
    """``{"a.b": the text of the line the key is on}`` for the leaves of a YAML file."""
    text = path.read_text().splitlines()
    found: dict[str, str] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode) and node.value:
            for key, value in node.value:
                walk(value, f"{prefix}{key.value}.")
        else:
            found[prefix.rstrip(".")] = text[node.start_mark.line]

    walk(yaml.compose(path.read_text()), "")
    return found


def own(path: Path) -> dict[str, object]:
    """A config's own values, without its ``config:`` key."""
    values = flat(yaml.safe_load(path.read_text()))
    values.pop("config", None)
    return values


def defaults(stage: str) -> dict[str, object]:
    """The code's defaults of a stage's options, flattened as a config is."""
    if stage == "fit":
        from swirl_lightning.training.cli import make_cli

        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), pytest.raises(SystemExit):
            make_cli(["fit", "--print_config"])
        return flat(yaml.safe_load(printed.getvalue()))
    from swirl_lightning.core.config import TaskConfig
    from swirl_lightning.judging.filter import FilterConfig
    from swirl_lightning.rollout.generate import GenerateConfig

    cls = GenerateConfig if stage == "generate" else FilterConfig
    config = dataclasses.asdict(parse_config(cls, ["--input", "in.jsonl", "--output", "runs/x"] if stage == "filter"
                                             else ["--output", "runs/x"], f"swirl {stage}"))
    if config.get("task") is None:  # filter's task is optional: its fields default as the task group's
        config["task"] = dataclasses.asdict(TaskConfig())
    return flat(config)


DEFAULTS: dict[str, dict[str, object]] = {}


@pytest.mark.parametrize("stage", sorted(BASES))
def test_each_base_is_not_a_run_and_says_how_it_is_used(stage):
    base = BASES[stage]
    header = "\n".join(line for line in base.read_text().splitlines() if line.startswith("#"))
    assert "config:" in header and "config" not in yaml.safe_load(base.read_text()), "a base of no base"
    assert not any(key.endswith(("default_root_dir", "output", "input")) for key in own(base)), "a base is no run"


@pytest.mark.parametrize("stage, path", CONFIGS, ids=lambda x: getattr(x, "name", x))
def test_a_config_names_its_stage_base_and_restates_none_of_it(stage, path):
    document = yaml.safe_load(path.read_text())
    if stage not in BASES:
        assert "config" not in document
        return
    assert next(iter(document)) == "config", "the base is named first, so the file's own keys read as changes to it"
    assert (path.parent / document["config"]).resolve() == BASES[stage].resolve()
    expanded = with_base_configs(["--config", str(path)])  # what swirl does with it: the base first
    assert Path(expanded[1]).resolve() == BASES[stage].resolve() and expanded[2:] == ["--config", str(path)]
    base = own(BASES[stage])
    restated = {key: value for key, value in own(path).items() if key in base and base[key] == value}
    assert not restated, f"{path.relative_to(ROOT)} restates its base: {restated}"


@pytest.mark.parametrize("stage, path", [*CONFIGS, *((stage, base) for stage, base in BASES.items())],
                         ids=lambda x: getattr(x, "name", x))
def test_a_config_sets_no_code_default_unless_it_says_why(stage, path):
    if stage not in DEFAULTS:
        DEFAULTS[stage] = defaults(stage)
    default = DEFAULTS[stage]
    base = own(BASES[stage]) if stage in BASES and path != BASES[stage] else {}
    text = lines(path)
    needless = [f"{key}: {value!r}" for key, value in own(path).items()
                if key in default and default[key] == value and key not in NAMES_THE_RUN
                and not (key in base and base[key] != value) and "# pinned" not in text[key]]
    assert not needless, f"{path.relative_to(ROOT)} sets the code's default (drop it, or say `# pinned: why`): {needless}"


@pytest.mark.parametrize("path", [*(p for _, p in CONFIGS), *BASES.values()], ids=lambda p: p.name)
def test_a_header_says_what_and_why_not_how_fast(path):
    figures = [(number, line) for number, line in enumerate(path.read_text().splitlines(), 1)
               if line.lstrip().startswith("#") and FIGURE.search(line)]
    assert not figures, f"{path.relative_to(ROOT)}: measured figures belong in benchmarks/README.md: {figures}"


def prose(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of what a file says rather than runs: the README's lines (in a fenced block, only a comment)
    without inline code; a Makefile's or a shell script's comments; a Python script's docstrings."""
    text = path.read_text()
    if path.suffix == ".py":
        return [(node.lineno, node.value.value) for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Expr)
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)]
    found, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if path.suffix == ".md":
            if line.startswith("```"):
                fenced = not fenced
                continue
            if fenced:
                line = line.partition("# ")[2]
            found.append((number, re.sub(r"`[^`]*`", "", line)))
        elif "#" in line and not line.lstrip().startswith(("echo", "@echo")):
            found.append((number, line[line.index("#"):]))
    return found


SAID = [ROOT / "README.md", ROOT / "Makefile", *sorted((ROOT / "scripts").glob("*.sh")),
        *sorted((ROOT / "scripts").glob("*.py"))]


@pytest.mark.parametrize("path", SAID, ids=lambda p: p.name)
def test_the_readme_makefile_and_scripts_say_what_and_why_not_how_fast(path):
    figures = [(number, line.strip()) for number, line in prose(path) if FIGURE.search(line)]
    assert not figures, f"{path.relative_to(ROOT)}: measured figures belong in benchmarks/README.md: {figures}"


def test_the_figure_detector_tells_figures_from_settings():
    measured = ["about 50 s here", "about 7 minutes", "26.0% to 36.5%", "5.2 GB of memory", "0.23 steps/s",
                "exact McNemar p = 0.002", "at 100x the time", "1,588 s of CPU time"]
    settings = ["`engine.kv_cache_gib` (2 GiB)", "defaults to 16384", "1 MiB or more", "20 steps of step-wise RL",
                "1 to 4 hops", "96 held-out questions", "title weighted x3"]
    assert all(FIGURE.search(text) for text in measured)
    assert not [text for text in settings if FIGURE.search(re.sub(r"`[^`]*`", "", text))]


def test_a_base_is_merged_key_by_key_and_loops_are_errors(tmp_path):
    """jsonargparse reads a ``config:`` key in place, and a group the file sets then replaces the base's whole; the
    base put first on the command line is merged key by key."""
    from swirl_lightning.rollout.generate import GenerateConfig

    (tmp_path / "base.yaml").write_text("task:\n  name: worlds\n  offset: 7\nsamples: 3\n")
    (tmp_path / "run.yaml").write_text("config: base.yaml\ntask:\n  limit: 2\noutput: runs/x\n")
    config = parse_config(GenerateConfig, ["--config", str(tmp_path / "run.yaml")], "swirl generate")
    assert (config.task.name, config.task.offset, config.task.limit, config.samples) == ("worlds", 7, 2, 3)
    (tmp_path / "base.yaml").write_text("config: run.yaml\nsamples: 3\n")
    with pytest.raises(ValueError, match="loop"):
        with_base_configs(["--config", str(tmp_path / "run.yaml")])
