"""One rule derives the chunk ids of framework-dispatched sub-agents, for every integration."""

from __future__ import annotations

import pytest

from spanjournal.agent_spans import input_chunk_id
from spanjournal.chunk_ids import derived_chunk_id, normalised_input
from spanjournal.claude import chunk_id_for
from spanjournal.integrations.langchain import unit_chunk_id as langchain_chunk_id
from spanjournal.integrations.openai_agents import unit_chunk_id as openai_chunk_id


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("Review  src/auth.py\n for bugs", " Review src/auth.py for bugs "),
        ("cafe\u0301", "caf\u00e9"),  # NFD and NFC
        ({"q": "gpu  prices", "n": 3}, '{"n": 3, "q": "gpu prices"}'),
        (["a", {"b": 1, "c": [1, 2]}], '["a",{"c":[1,2],"b":1}]'),
    ],
)
def test_formatting_does_not_change_the_id(one: object, other: object) -> None:
    assert normalised_input(one) == normalised_input(other)
    assert derived_chunk_id("agent", one) == derived_chunk_id("agent", other)


@pytest.mark.parametrize(
    ("name", "one", "other"),
    [
        ("agent", "price of A", "price of B"),
        ("agent", {"q": 1}, {"q": "1"}),
        ("agent", "Case", "case"),
        ("agent", ["a", "b"], ["b", "a"]),
    ],
)
def test_different_inputs_are_different_chunks(name: str, one: object, other: object) -> None:
    assert derived_chunk_id(name, one) != derived_chunk_id(name, other)


def test_names_are_shown_safely_and_hashed_whole() -> None:
    # Two names that show alike are still different units.
    one, other = derived_chunk_id("code reviewer", "x"), derived_chunk_id("code/reviewer", "x")
    assert one != other and one.startswith("code-reviewer-") and other.startswith("code-reviewer-")
    for name in ("../../etc", "a\nb\x00", "ré vue", "", "x" * 200):
        chunk = derived_chunk_id(name, "prompt")
        assert chunk.isascii() and chunk.isprintable() and "/" not in chunk and " " not in chunk
        assert len(chunk) <= 48 + 1 + 16


def test_every_integration_derives_by_the_same_rule() -> None:
    assert chunk_id_for("code-reviewer", "Review  it") == derived_chunk_id("claude-code-reviewer", "Review it")
    assert chunk_id_for("", "Review it") == derived_chunk_id("claude-general-purpose", "Review it")
    assert input_chunk_id("researcher", '{"q": "x"}') == derived_chunk_id("researcher", {"q": "x"})
    assert langchain_chunk_id("research", {"topic": "a  b"}) == derived_chunk_id("research", {"topic": "a b"})
    assert openai_chunk_id("pricing", "price of A") == derived_chunk_id(
        "pricing", [{"role": "user", "content": "price of A"}]
    )
