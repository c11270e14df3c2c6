"""`swirl plugin new`: the names it derives, its refusals, and the package it writes, installed and used for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from swirl_lightning.cli import main
from swirl_lightning.scaffold import PluginNames, new_plugin


def test_names_are_derived_from_the_distribution_name() -> None:
    assert PluginNames.of("swirl-word-count") == PluginNames("swirl-word-count", "swirl_word_count", "word_count",
                                                             "word_count")
    assert PluginNames.of("dice", tag="roll") == PluginNames("dice", "dice", "dice", "roll")


@pytest.mark.parametrize(("name", "tool", "tag", "message"), [
    ("Swirl_Dice", None, None, "plugin name 'Swirl_Dice': expected lower-case letters"),
    ("swirl-", None, None, "plugin name 'swirl-'"),
    ("swirl-dice", "2dice", None, "tool name '2dice': expected a Python identifier"),
    ("swirl-dice", None, "answer", "tag 'answer'"),
])
def test_bad_names_are_clear_errors(name, tool, tag, message) -> None:
    with pytest.raises(ValueError) as caught:
        PluginNames.of(name, tool, tag)
    assert message in str(caught.value)


def test_an_existing_folder_is_never_overwritten(tmp_path, capsys) -> None:
    (tmp_path / "swirl-dice").mkdir()
    assert main(["plugin", "new", "swirl-dice", "--output", str(tmp_path)]) == 2
    assert "exists: choose another name or --output folder" in capsys.readouterr().err
    with pytest.raises(FileExistsError):
        new_plugin(PluginNames.of("swirl-dice"), tmp_path)


@pytest.mark.integration
def test_the_new_plugin_installs_passes_its_tests_and_is_listed_and_called(tmp_path) -> None:
    """The acceptance test: `swirl plugin new`, `pip install -e` into a throwaway virtualenv (this one is left alone),
    the package's own tests, `swirl tools list` and `swirl tools call` there."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    made = subprocess.run([sys.executable, "-m", "swirl_lightning", "plugin", "new", "swirl-wordcount", "--output",
                           str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    assert made.returncode == 0, made.stderr
    folder = tmp_path / "swirl-wordcount"
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        "README.md", "pyproject.toml", "swirl_wordcount/__init__.py", "tests/test_wordcount.py"]

    # A virtualenv that sees this one's packages (swirl-lightning, pytest, pip, setuptools) through a .pth file: a
    # virtualenv made from a virtualenv gets the base interpreter's site-packages from --system-site-packages, not ours.
    # The .pth runs site.addsitedir rather than naming the folder, so that the .pth files there (editable installs,
    # swirl-lightning's own under `make setup`) are read too.
    throwaway = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(throwaway)
    python = throwaway / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "outer-venv.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")

    def run(*args: str, cwd: Path = tmp_path) -> subprocess.CompletedProcess:
        return subprocess.run([str(python), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)

    installed = run("-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "-e",
                    str(folder))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    tests = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", cwd=folder)
    assert tests.returncode == 0 and "5 passed" in tests.stdout, tests.stdout + tests.stderr

    listed = run("-m", "swirl_lightning", "tools", "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["wordcount"] == {"name": "wordcount", "tag": "wordcount", "distribution": "swirl-wordcount",
                                 "version": "0.1.0",
                                 "description": "Count the words of a text: the number of words and of characters."}
    called = run("-m", "swirl_lightning", "tools", "call", "wordcount", "to be or not")
    assert (called.returncode, called.stdout.strip()) == (0, "4 words, 12 characters"), called.stderr

    # This test's own environment never saw the package.
    assert subprocess.run([sys.executable, "-c", "import swirl_wordcount"], capture_output=True).returncode != 0
