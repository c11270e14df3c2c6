"""Secrets out of text: API keys and the values of ``Authorization`` headers and ``Bearer`` tokens become
``[redacted]``.

Many servers repeat the credentials they were sent in their error bodies and headers ("Incorrect API key provided:
Bearer sk-..."). A served judge passes every text that comes from its server or its connection (errors, replies
quoted in failure reasons) through :func:`redact` before anything else sees it, so no message, log, cache row, stats
file or trajectory can hold the key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"

# "Authorization: Basic abc", '"authorization": "Bearer abc"': the whole value, up to a quote or the line's end.
_AUTHORIZATION = re.compile(r"""(?i)\b((?:proxy-)?authorization["']?\s*[:=]\s*["']?)[^"'\r\n]+""")
# A bearer token on its own: "provided: Bearer sk-abc".
_BEARER = re.compile(r"""(?i)\b(bearer\s+)[^\s"',;()\[\]{}<>]+""")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with each of ``secrets`` (the values themselves), every ``Authorization`` header's value and every
    bearer token replaced by ``[redacted]``."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):  # a longer secret may hold a shorter one
        text = text.replace(secret, REDACTED)
    text = _AUTHORIZATION.sub(lambda m: m.group(1) + REDACTED, text)
    return _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
