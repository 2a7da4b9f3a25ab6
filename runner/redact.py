"""Keeping secrets out of logs, the database, result files and exception messages."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

REDACTED = "[REDACTED]"
MIN_SECRET_LEN = 6
# Keys in the wild: sk-..., sk-selam-..., sk-proj-...; and any bearer credential.
_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"(?i)(bearer\s+)[^\s\"',;]+"),
    re.compile(r"(?i)(x-api-key[\"']?\s*[:=]\s*[\"']?)[^\s\"',;]+"),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Replace every known secret and anything shaped like a key or bearer token."""
    for secret in secrets:
        # A key shorter than this is not a real key, and replacing it would shred the text.
        if len(secret) >= MIN_SECRET_LEN:
            text = text.replace(secret, REDACTED)
    text = _PATTERNS[0].sub(REDACTED, text)
    for pattern in _PATTERNS[1:]:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def redact_bytes(data: bytes, secrets: Iterable[str]) -> bytes:
    """Remove known secrets from raw bytes (a response body that echoes the key)."""
    for secret in secrets:
        if len(secret) >= MIN_SECRET_LEN and secret.encode() in data:
            data = data.replace(secret.encode(), REDACTED.encode())
    return data


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites each record's message with secrets removed."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if len(s) >= MIN_SECRET_LEN)

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the formatted message in place; never drop a record."""
        message = record.getMessage()
        clean = redact(message, self.secrets)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        return True
