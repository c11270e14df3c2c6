"""The served judges' prompts: versioned text files, rendered into chat messages, and the verdicts read back.

A prompt file (``swirl_lightning/judging/prompts/*.txt``, or any file of the same form) starts with
``version: NAME-vN``, may have ``#`` comment lines, then sections ``=== system``, ``=== user`` and optionally
``=== user_group`` (one request judging several candidate steps of one state). Each section is a Jinja2 template
(sandboxed; an undefined name is an error) given ``transcript`` and ``step`` (``user``), ``transcript``, ``steps``
and ``count`` (``user_group``), or ``question``, ``answer_key`` and ``prediction`` (the grader's ``user``):
``{{ transcript }}``. Single braces are text; a placeholder in the older single-brace form (``{transcript}``) is an
error naming the line, so that an old file is never sent with its placeholders unfilled. The version, plus a digest
of the file and of the decoding settings, is the ``prompt_version`` of every judgement (and so part of the cache
key): editing a prompt never reuses the old verdicts.

The verdict is the last ``Verdict: GOOD``/``Verdict: BAD`` line (any case, markdown allowed), else the last word
GOOD or BAD in capitals. No verdict is a judge failure, never a BAD.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from jinja2.sandbox import SandboxedEnvironment

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
SECTIONS = ("system", "user", "user_group")
PLACEHOLDERS = ("transcript", "step", "steps", "count", "question", "answer_key", "prediction")
_OLD_PLACEHOLDER = re.compile(r"(?<!\{)\{(" + "|".join(PLACEHOLDERS) + r")\}(?!\})")
# No autoescaping: the prompts are plain text, not HTML. StrictUndefined: a misspelt name is an error, not "".
_TEMPLATES = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)


def shorten(text: str, limit: int) -> str:
    """At most about ``limit`` characters: the head and tail of a long text with the cut marked."""
    if len(text) <= limit:
        return text
    half = max(limit // 2 - 10, 1)
    return f"{text[:half]} [... {len(text) - 2 * half} characters cut ...] {text[-half:]}"


@dataclass(frozen=True)
class JudgePrompt:
    """One prompt file: its version, its sections and a digest of its text."""

    path: Path
    version: str
    sections: dict[str, str]
    digest: str
    templates: dict[str, jinja2.Template] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, name: str, kind: str) -> JudgePrompt:
        """The shipped prompt ``<kind>_<name>.txt`` (e.g. kind ``process``, name ``math``), or the file ``name``."""
        shipped = PROMPTS_DIR / f"{kind}_{name}.txt"
        path = shipped if shipped.exists() else Path(name)
        if not path.is_file():
            known = sorted(p.stem.removeprefix(f"{kind}_") for p in PROMPTS_DIR.glob(f"{kind}_*.txt"))
            raise ValueError(f"prompt: expected one of {', '.join(known)} or a prompt file, got {name!r}")
        return cls.parse(path.read_text(encoding="utf-8"), path)

    @classmethod
    def parse(cls, text: str, path: Path) -> JudgePrompt:
        """A prompt from the text of a prompt file (module docstring); errors name the file."""
        sections: dict[str, list[str]]
        version, current, sections = None, None, {}
        for number, line in enumerate(text.splitlines(), start=1):
            header = re.fullmatch(r"===\s*(\w+)\s*", line)
            if header:
                current = header.group(1)
                if current not in SECTIONS:
                    raise ValueError(f"{path}:{number}: unknown section {current!r}; expected {', '.join(SECTIONS)}")
                sections[current] = []
            elif current is not None:
                old = _OLD_PLACEHOLDER.search(line)
                if old:
                    raise ValueError(f"{path}:{number}: write the placeholder {old.group(0)} as "
                                     f"{{{{ {old.group(1)} }}}} (prompt files are Jinja2 templates)")
                sections[current].append(line)
            elif line.startswith("version:"):
                version = line.partition(":")[2].strip()
            elif line.strip() and not line.startswith("#"):
                raise ValueError(f"{path}:{number}: expected 'version: ...', a '#' comment or a '=== section' line")
        if not version:
            raise ValueError(f"{path}: no 'version: ...' line before the first section")
        missing = [s for s in ("system", "user") if s not in sections]
        if missing:
            raise ValueError(f"{path}: missing section(s) {', '.join(missing)}")
        texts = {k: "\n".join(v).strip() for k, v in sections.items()}
        try:
            templates = {k: _TEMPLATES.from_string(v) for k, v in texts.items()}
        except jinja2.TemplateSyntaxError as error:
            raise ValueError(f"{path}: a section is no valid Jinja2 template: {error.message} "
                             f"(its line {error.lineno})") from None
        return cls(path, version, texts, hashlib.sha256(text.encode("utf-8")).hexdigest(), templates)

    def messages(self, section: str, **values: object) -> list[dict[str, str]]:
        """The chat messages: the system section, then ``section`` with its placeholders filled in."""
        if section not in self.sections:
            raise ValueError(f"{self.path}: no '=== {section}' section (needed to judge several steps in one request)")
        try:
            system, user = self.templates["system"].render(**values), self.templates[section].render(**values)
        except jinja2.UndefinedError as error:
            raise ValueError(f"{self.path}: section {section!r}: {error.message}") from None
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def prompt_version(self, *settings: object) -> str:
        """``version#digest``: the digest covers the file's text and the decoding ``settings``."""
        payload = repr((self.digest, settings)).encode("utf-8")
        return f"{self.version}#{hashlib.sha256(payload).hexdigest()[:8]}"


def transcript(messages: list[dict[str, str]], max_chars: int) -> str:
    """The state as the judge reads it: every non-system message as ``Role: text``, long ones shortened."""
    return "\n\n".join(f"{m['role'].capitalize()}: {shorten(m['content'], max_chars)}"
                       for m in messages if m["role"] != "system")


def parse_verdict(reply: str, positive: str, negative: str) -> str | None:
    """``positive`` or ``negative`` as the reply concludes (module docstring), or ``None`` when it has no verdict."""
    words = f"{re.escape(positive)}|{re.escape(negative)}"
    labelled = re.findall(rf"verdict\W{{0,6}}({words})\b", reply, flags=re.IGNORECASE)
    if labelled:
        return labelled[-1].upper()
    bare = re.findall(rf"\b({words})\b", reply)
    return bare[-1] if bare else None


def parse_group_verdicts(reply: str, count: int, positive: str, negative: str) -> dict[int, str]:
    """Candidate number (1-based) -> verdict, from lines ``Step N: GOOD``; the last line for a number wins and
    a candidate the reply does not conclude on is missing."""
    words = f"{re.escape(positive)}|{re.escape(negative)}"
    verdicts = {}
    for number, verdict in re.findall(rf"step\s*#?\s*(\d+)\W{{0,6}}({words})\b", reply, flags=re.IGNORECASE):
        if 1 <= int(number) <= count:
            verdicts[int(number)] = verdict.upper()
    return verdicts
