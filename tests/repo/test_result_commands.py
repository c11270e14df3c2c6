"""Every result in ``benchmarks/results/`` names the command that measured it; that command must still be one its
benchmark takes (a renamed flag means the stated command is updated, with the result)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = sorted((ROOT / "benchmarks" / "results").glob("*.json"))


def stated_command(path: Path) -> tuple[str, list[str]]:
    """The benchmark script a result names and the arguments it was run with."""
    command = json.loads(path.read_text())["command"]
    words = shlex.split(command)
    assert Path(words[0]).name.startswith("python"), f"{path.name}: {command!r} does not start with python"
    script = Path(words[1])
    assert script.parent.name == "benchmarks" and (ROOT / "benchmarks" / script.name).exists(), \
        f"{path.name}: {words[1]} is no benchmark"
    return script.stem, words[2:]


def print_config(script: str, arguments: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    """Benchmark ``script``'s ``main`` with ``arguments`` and ``--print-config`` (parsed, printed, nothing run):
    its exit code, what it printed and what it said on stderr."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.chdir(ROOT)
    module = __import__(script)
    with pytest.raises(SystemExit) as exit:
        module.main([*arguments, "--print-config"])
    printed = capsys.readouterr()
    return exit.value.code, printed.out, printed.err


def assert_parses(where: str, script: str, arguments: list[str], capsys, monkeypatch) -> None:
    code, out, err = print_config(script, arguments, capsys, monkeypatch)
    assert code == 0, f"{where}: {err.strip().splitlines()[-1:]}"
    assert isinstance(json.loads(out), dict)


@pytest.mark.parametrize("result", RESULTS, ids=[p.name for p in RESULTS])
def test_stated_command_parses(result, capsys, monkeypatch):
    """The command a result states is one its benchmark takes."""
    assert_parses(result.name, *stated_command(result), capsys, monkeypatch)


def test_every_result_states_its_command():
    assert RESULTS
    for path in RESULTS:
        assert "command" in json.loads(path.read_text()), path.name


def test_a_renamed_flag_fails_the_parse(capsys, monkeypatch):
    """The check above bites: a benchmark refuses a flag it no longer takes, with the name that replaced it."""
    code, _, err = print_config("judge_agreement_bench", ["--judge", "served"], capsys, monkeypatch)
    assert code == 2 and "--judge is renamed --judge.name" in err


def documented_commands() -> list[tuple[str, str]]:
    """Every ``python benchmarks/<name>.py ...`` the READMEs and docs show, in backticks (wrapped lines joined) or on a
    code block's line (its ``# comment`` and a trailing ``&`` dropped); those with ``...`` for elided flags are
    left out."""
    found = []
    for doc in [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        parts = doc.read_text().split("```")  # prose, a fenced code block, prose, ...
        code_line = re.compile(r"^ *(python benchmarks/\w+\.py.*)$", re.MULTILINE)  # fenced, or indented code
        outside_fences = "\n".join(parts[0::2])
        prose = code_line.sub("", outside_fences)  # indented code lines are code, not prose
        code = "\n".join(parts[1::2] + code_line.findall(outside_fences))
        spans = [" ".join(m.group(1).split()) for m in re.finditer(r"`([^`]*python benchmarks/[^`]*)`", prose)]
        lines = [m.group(1).split("#")[0].strip().removesuffix("&").strip() for m in code_line.finditer(code)]
        for command in spans + lines:
            command = command[command.index("python benchmarks/"):]
            if " ... " not in command:
                found.append((doc.relative_to(ROOT).as_posix(), command))
    return sorted(set(found))


DOCUMENTED = documented_commands()


@pytest.mark.parametrize(("doc", "command"), DOCUMENTED, ids=[f"{doc}:{command[18:60]}" for doc, command in DOCUMENTED])
def test_documented_command_parses(doc, command, capsys, monkeypatch):
    """A benchmark command the docs show is one the benchmark takes."""
    words = shlex.split(command)
    assert_parses(f"{doc}: {command}", Path(words[1]).stem, words[2:], capsys, monkeypatch)
