"""Token estimates made before a request is sent, as providers budget them.

Providers admit a request against a token budget using the prompt size plus the completion cap
(`max_tokens`), then settle on the real `usage`. The estimate here follows the same rule:
about four characters per token, four tokens of framing per message, plus the completion cap.
"""

from __future__ import annotations

from collections.abc import Mapping

DEFAULT_COMPLETION_TOKENS = 256
_PER_MESSAGE = 4


def _text_len(content: object) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                total += len(part["text"])
        return total
    return 0


def estimate_prompt_tokens(messages: object) -> int:
    """Tokens the prompt will cost: ceil(chars / 4) plus framing per message."""
    if not isinstance(messages, list):
        return 0
    total = 0
    for message in messages:
        if isinstance(message, Mapping):
            total += -(-_text_len(message.get("content")) // 4) + _PER_MESSAGE
    return total


def completion_cap(body: Mapping[str, object]) -> int:
    """The completion budget a provider reserves: max_tokens, else a modest default."""
    n = body.get("n")
    choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value * choices
    return DEFAULT_COMPLETION_TOKENS * choices


# Estimates are stored as 32-bit integers; no real request comes near this.
MAX_ESTIMATE = 2**31 - 1


def estimate_request_tokens(body: Mapping[str, object]) -> int:
    """Prompt tokens plus the completion cap: what the request may cost against a budget."""
    return min(MAX_ESTIMATE, estimate_prompt_tokens(body.get("messages")) + completion_cap(body))
