"""Token estimates: ceil(chars / 4) + 4 per message, plus the completion cap (times n)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.tokens import (
    DEFAULT_COMPLETION_TOKENS,
    completion_cap,
    estimate_prompt_tokens,
    estimate_request_tokens,
)

FAST = settings(max_examples=150, deadline=None, database=None)


def user(content: object) -> dict[str, object]:
    return {"role": "user", "content": content}


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        pytest.param([user("")], 4, id="empty-string-is-framing-only"),
        pytest.param([user("abcd")], 1 + 4, id="four-chars-one-token"),
        pytest.param([user("abcde")], 2 + 4, id="five-chars-round-up"),
        pytest.param([user("x" * 400)], 100 + 4, id="400-chars"),
        pytest.param(
            [{"role": "system", "content": "abcdefgh"}, user("abc")],
            (2 + 4) + (1 + 4),
            id="two-messages-each-framed",
        ),
        pytest.param(
            [user([{"type": "text", "text": "abcd"}, {"type": "text", "text": "efgh"}])],
            2 + 4,
            id="list-of-text-parts-summed",
        ),
        pytest.param(
            [
                user(
                    [
                        {"type": "text", "text": "abcdefgh"},
                        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                    ]
                )
            ],
            2 + 4,
            id="non-text-parts-cost-nothing",
        ),
        pytest.param([user(None)], 4, id="null-content"),
        pytest.param([{"role": "assistant", "tool_calls": []}], 4, id="no-content-key"),
        pytest.param([user(12345)], 4, id="number-content"),
        pytest.param(["not a message", 7], 0, id="non-mapping-items-ignored"),
        pytest.param([], 0, id="no-messages"),
        pytest.param("hello", 0, id="messages-not-a-list"),
        pytest.param(None, 0, id="messages-missing"),
    ],
)
def test_estimate_prompt_tokens(messages: object, expected: int) -> None:
    assert estimate_prompt_tokens(messages) == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({}, DEFAULT_COMPLETION_TOKENS, id="default-cap"),
        pytest.param({"max_tokens": 1000}, 1000, id="max-tokens"),
        pytest.param({"max_completion_tokens": 700}, 700, id="max-completion-tokens"),
        pytest.param(
            {"max_completion_tokens": 700, "max_tokens": 50}, 700, id="completion-tokens-wins"
        ),
        pytest.param({"max_completion_tokens": 0, "max_tokens": 50}, 50, id="zero-falls-through"),
        pytest.param({"max_tokens": 100, "n": 3}, 300, id="n-multiplies-max-tokens"),
        pytest.param({"max_completion_tokens": 10, "n": 4}, 40, id="n-multiplies-completion"),
        pytest.param({"max_tokens": 100, "n": 0}, 100, id="n-zero-is-one"),
        pytest.param({"max_tokens": 100, "n": True}, 100, id="n-bool-ignored"),
        pytest.param({"max_tokens": 100, "n": "3"}, 100, id="n-string-ignored"),
        pytest.param({"max_tokens": -5}, DEFAULT_COMPLETION_TOKENS, id="negative-cap-ignored"),
        pytest.param({"max_tokens": True}, DEFAULT_COMPLETION_TOKENS, id="bool-cap-ignored"),
        pytest.param({"max_tokens": 100.0}, DEFAULT_COMPLETION_TOKENS, id="float-cap-ignored"),
        pytest.param({"max_tokens": "100"}, DEFAULT_COMPLETION_TOKENS, id="string-cap-ignored"),
    ],
)
def test_completion_cap(fields: dict[str, object], expected: int) -> None:
    assert completion_cap(fields) == expected


def test_n_multiplies_the_default_completion_cap_too() -> None:
    """n completions each may run to the default length, as with an explicit max_tokens."""
    assert completion_cap({"n": 3}) == 3 * DEFAULT_COMPLETION_TOKENS


def test_request_estimate_is_prompt_plus_completion_cap() -> None:
    body = {"model": "m", "messages": [user("x" * 40)], "max_tokens": 50, "n": 2}
    assert estimate_request_tokens(body) == (10 + 4) + 100


def test_request_estimate_of_a_bare_minimum_body_is_framing_plus_default() -> None:
    body = {"model": "m", "messages": [user("hi")]}
    assert estimate_request_tokens(body) == 1 + 4 + DEFAULT_COMPLETION_TOKENS


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
parts = st.dictionaries(st.sampled_from(["type", "text", "image_url"]), json_values, max_size=3)
messages = st.lists(
    st.dictionaries(
        st.sampled_from(["role", "content", "name"]),
        json_values | st.lists(parts | json_values, max_size=4),
        max_size=3,
    )
    | json_values,
    max_size=5,
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "messages": messages | json_values,
        "max_tokens": json_values,
        "max_completion_tokens": json_values,
        "n": json_values,
    },
)


@FAST
@given(bodies)
def test_estimate_never_raises_and_is_a_non_negative_int(body: dict[str, Any]) -> None:
    estimate = estimate_request_tokens(body)
    assert isinstance(estimate, int)
    assert estimate >= 0
    listed = body.get("messages")
    framed = [m for m in listed if isinstance(m, dict)] if isinstance(listed, list) else []
    assert estimate >= 4 * len(framed) + 1
