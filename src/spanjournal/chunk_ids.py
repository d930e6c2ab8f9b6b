"""Chunk ids derived from what a unit was asked: one rule for every integration.

A sub-agent dispatched by a framework (Claude Code's ``Task`` tool, an OpenAI
agent called as a tool, a LangGraph node fanned out with ``Send``, an agent
span of another instrumentation) has no id the user gave. Its chunk id is
derived from its name and its input, so the same sub-agent asked the same
thing after a crash is the same chunk, and different inputs are different
chunks. An id is never a span id (new on every run).

The input is normalised first, so that formatting does not change the id:

- text: Unicode NFC, every run of whitespace made one space, trimmed; text
  that is a JSON document stands for that document;
- data (mappings, lists, numbers, ...): canonical JSON (keys sorted, no
  spaces), every string in it normalised as text; values JSON does not know
  are taken as their ``str()``.

The id is ``{name}-{16 hex digits}``: the first 64 bits of the SHA-256 of the
name and the normalised input. The name is shown with every run of
characters outside ``[A-Za-z0-9._-]`` made ``-`` and cut to 48 characters
(an id is safe in a shell, a file name and a URL); the hash covers it whole.

>>> derived_chunk_id("researcher", {"q": "gpu  prices", "n": 3}) == derived_chunk_id(
...     "researcher", '{"n":3,"q":"gpu prices"}')
True
>>> derived_chunk_id("researcher", "gpu prices")
'researcher-014a98c00eadc68a'
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

__all__ = ["HASH_HEX_DIGITS", "derived_chunk_id", "normalised_input"]

#: Hex digits of the input's hash in a derived id (64 bits: no collision in any real run).
HASH_HEX_DIGITS = 16
#: The longest name shown in a derived id.
MAX_NAME_CHARS = 48

_SPACE = re.compile(r"\s+")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def normalised_input(value: object) -> str:
    """``value`` as the text its chunk id is derived from (see the module documentation).

    >>> normalised_input("  Review\\r\\n\\tsrc/auth.py  ")
    'Review src/auth.py'
    >>> normalised_input({"b": 1, "a": "x  y"})
    '{"a":"x y","b":1}'
    """
    if isinstance(value, str):
        text = _text(value)
        try:
            value = json.loads(text)
        except ValueError:
            return text
        if isinstance(value, str):
            return _text(value)
    return json.dumps(_plain(value), sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def derived_chunk_id(name: str, value: object) -> str:
    """The chunk id of the unit ``name`` asked ``value``: ``{name}-{hash of the normalised input}``."""
    digest = hashlib.sha256(f"{name}\0{normalised_input(value)}".encode("utf-8", "surrogatepass")).hexdigest()
    shown = _UNSAFE.sub("-", name).strip("-")[:MAX_NAME_CHARS] or "unit"
    return f"{shown}-{digest[:HASH_HEX_DIGITS]}"


def _text(value: str) -> str:
    return _SPACE.sub(" ", unicodedata.normalize("NFC", value)).strip()


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
