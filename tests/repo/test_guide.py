"""The plugin authors' guide cannot rot: its Python blocks run in order in one namespace (a block marked
``python file=NAME.py`` is written to that file, importable by the blocks after it), and its TOML block parses."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import tomllib

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "writing-a-tool-plugin.md"
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks(kind: str) -> list[tuple[str, str]]:
    """The guide's ``kind`` blocks as (info after the language, code)."""
    return [(info.strip(), code) for language, info, code in BLOCK.findall(GUIDE.read_text()) if language == kind]


@pytest.mark.integration  # forks tool workers
def test_the_python_blocks_run_in_order(tmp_path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "guide"}
    python_blocks = blocks("python")
    assert len(python_blocks) >= 6
    try:
        for number, (info, code) in enumerate(python_blocks, start=1):
            if info.startswith("file="):
                (tmp_path / info.removeprefix("file=")).write_text(code)
                continue
            exec(compile(code, f"{GUIDE.name} python block {number}", "exec"), namespace)
    finally:
        sys.modules.pop("my_tools", None)
    assert namespace["trajectory"].final_answer == "blue"  # the last block ran


def test_the_toml_block_declares_the_entry_point() -> None:
    (toml,) = [code for _, code in blocks("toml")]
    project = tomllib.loads(toml)["project"]
    assert project["entry-points"]["swirl_lightning"] == {"my_tools": "my_tools"}


def test_the_guide_covers_what_the_issue_asks() -> None:
    text = GUIDE.read_text()
    for heading in ("The hook", "a string in, a string out", "`warm_up`", "hangs, crashes and floods",
                    "Tools that see their episode", "Testing with the fakes", "publishing"):
        assert heading in text, heading
    assert "swirl plugin new" in text and "plugins/swirl-mcp" in text and "plugins/swirl-python" in text
