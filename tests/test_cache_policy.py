"""What the response cache may answer and under which key: pure rules, tested by tables."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.cache.policy import CacheMode, cache_key, is_cacheable, parse_ttl


def body(**extra: Any) -> dict[str, Any]:
    """A deterministic chat request, with `extra` fields added or replaced."""
    base: dict[str, Any] = {
        "model": "selam-turbo",
        "messages": [{"role": "user", "content": "Say hi"}],
        "temperature": 0,
    }
    return {**base, **extra}


def test_key_is_a_sha256_hex_digest() -> None:
    key = cache_key(body())
    assert len(key) == 64
    assert int(key, 16) >= 0


def test_key_ignores_key_order_at_every_level() -> None:
    a = {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0}
    b = {"temperature": 0, "messages": [{"content": "x", "role": "user"}], "model": "m"}
    assert cache_key(a) == cache_key(b)


def test_key_ignores_whitespace_of_the_request_text() -> None:
    compact = b'{"model":"m","messages":[{"role":"user","content":"x"}]}'
    spaced = b'{ "messages" : [ {"content": "x",\n "role": "user"} ],\t"model": "m" }'
    assert cache_key(orjson.loads(compact)) == cache_key(orjson.loads(spaced))


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"stream": True}, id="stream"),
        pytest.param({"stream_options": {"include_usage": True}}, id="stream_options"),
        pytest.param({"user": "alice"}, id="user"),
        pytest.param({"metadata": {"batch": "7"}}, id="metadata"),
        pytest.param({"store": True}, id="store"),
    ],
)
def test_fields_that_cannot_change_the_answer_do_not_change_the_key(extra: dict[str, Any]) -> None:
    assert cache_key(body(**extra)) == cache_key(body())


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"model": "selam-pro"}, id="model"),
        pytest.param({"temperature": 0.7}, id="temperature"),
        pytest.param({"max_tokens": 16}, id="max_tokens"),
        pytest.param({"messages": [{"role": "user", "content": "Say bye"}]}, id="messages"),
        pytest.param({"seed": 42}, id="seed"),
        pytest.param({"tools": [{"type": "function", "function": {"name": "f"}}]}, id="tools"),
        pytest.param({"response_format": {"type": "json_object"}}, id="response_format"),
        pytest.param({"top_p": 0.5}, id="top_p"),
        pytest.param({"stop": ["\n"]}, id="stop"),
        pytest.param({"n": 1}, id="n"),
        pytest.param({"metadata_extra": 1}, id="unknown-field"),
    ],
)
def test_every_other_field_changes_the_key(extra: dict[str, Any]) -> None:
    assert cache_key(body(**extra)) != cache_key(body())


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=8), _json, max_size=6))
def test_key_is_the_same_for_any_order_of_the_same_fields(fields: dict[str, Any]) -> None:
    reversed_order = dict(reversed(list(fields.items())))
    assert cache_key(reversed_order) == cache_key(fields)


WEB_SEARCH_TOOL = {"tools": [{"type": "web_search"}]}
ALL_MODES: tuple[CacheMode, ...] = ("auto", "always", "off")


@pytest.mark.parametrize(
    ("request_body", "expected"),
    [
        # (auto, always, off)
        pytest.param(body(), (True, True, False), id="temperature-0"),
        pytest.param(body(temperature=0.0), (True, True, False), id="temperature-0.0"),
        pytest.param(body(temperature=0, top_p=0.3), (True, True, False), id="top_p-ignored"),
        pytest.param(body(n=1), (True, True, False), id="n-1"),
        pytest.param(body(temperature=0.9), (False, True, False), id="temperature-0.9"),
        pytest.param(body(temperature=0.9, seed=7), (False, True, False), id="seed-not-enough"),
        pytest.param(
            {k: v for k, v in body().items() if k != "temperature"},
            (False, True, False),
            id="temperature-missing-means-1",
        ),
        pytest.param(body(temperature=False), (False, True, False), id="temperature-false"),
        pytest.param(body(n=2), (False, False, False), id="n-2"),
        pytest.param(body(**WEB_SEARCH_TOOL), (False, False, False), id="web-search-tool"),
        pytest.param(
            body(tools=[{"type": "function"}, {"type": "web_search_preview"}]),
            (False, False, False),
            id="web-search-preview-tool",
        ),
        pytest.param(body(web_search_options={}), (False, False, False), id="web-search-options"),
        pytest.param(body(model="selam-search"), (False, False, False), id="search-model"),
        pytest.param(
            body(model="gpt-4o-Search-preview"), (False, False, False), id="search-model-any-case"
        ),
        pytest.param(
            body(tools=[{"type": "function", "function": {"name": "lookup"}}]),
            (True, True, False),
            id="function-tool",
        ),
    ],
)
def test_cacheability_by_mode(request_body: dict[str, Any], expected: tuple[bool, ...]) -> None:
    assert tuple(is_cacheable(request_body, mode) for mode in ALL_MODES) == expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("45s", 45.0),
        ("30m", 1_800.0),
        ("12h", 43_200.0),
        ("7d", 604_800.0),
        ("30d", 2_592_000.0),
        ("1w", 604_800.0),
        ("3600", 3_600.0),
        ("1h30m", 5_400.0),
        ("1d12h", 129_600.0),
        (" 2H ", 7_200.0),
        ("forever", math.inf),
        ("Forever", math.inf),
    ],
)
def test_parse_ttl_reads_durations(text: str, seconds: float) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "abc", "10x", "1.5h", "-5", "30m1h", "h", "1h 30m", "never", "none", "٣", "0", "0s"],
)
def test_parse_ttl_rejects_anything_else_and_says_what_works(text: str) -> None:
    with pytest.raises(ValueError, match=r"forever") as caught:
        parse_ttl(text)
    assert repr(text) in str(caught.value)
