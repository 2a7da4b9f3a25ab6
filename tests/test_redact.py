"""Secrets never reach logs or messages: known secrets, key shapes, bearer and X-API-Key values."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from runner.redact import REDACTED, RedactingFilter, redact, redact_bytes

SECRET = "sk-selam-4f9a8b7c6d5e4f3a2b1c"


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        pytest.param("token=hunter2!", ("hunter2",), f"token={REDACTED}!", id="known-secret"),
        pytest.param(
            "a hunter2 b hunter2", ("hunter2",), f"a {REDACTED} b {REDACTED}", id="every-copy"
        ),
        pytest.param("nothing here", ("",), "nothing here", id="empty-secret-ignored"),
        pytest.param("key sk-abc123XYZ_-9 end", (), f"key {REDACTED} end", id="sk-shape"),
        pytest.param(f"key={SECRET}", (), f"key={REDACTED}", id="sk-selam-shape"),
        pytest.param("sk-proj-AbCdEf123456", (), REDACTED, id="sk-proj-shape"),
        pytest.param(
            "Authorization: Bearer xyz", (), f"Authorization: Bearer {REDACTED}", id="bearer"
        ),
        pytest.param(
            "authorization: bearer eyJhbGciOi.J9.x, next",
            (),
            f"authorization: bearer {REDACTED}, next",
            id="bearer-lowercase-jwt",
        ),
        pytest.param("X-API-Key: abc", (), f"X-API-Key: {REDACTED}", id="x-api-key"),
        pytest.param(
            "{'X-API-Key': 'abc', 'Accept': 'json'}",
            (),
            f"{{'X-API-Key': '{REDACTED}', 'Accept': 'json'}}",
            id="x-api-key-in-dict-repr",
        ),
        pytest.param('"x-api-key"="abc"', (), f'"x-api-key"="{REDACTED}"', id="x-api-key-equals"),
        pytest.param("task-12345678 done", (), "task-12345678 done", id="word-ending-in-sk-kept"),
        pytest.param("sk-abc", (), "sk-abc", id="too-short-to-be-a-key"),
        pytest.param("plain text, 200 OK", (), "plain text, 200 OK", id="nothing-to-hide"),
    ],
)
def test_redact(text: str, secrets: tuple[str, ...], expected: str) -> None:
    assert redact(text, secrets) == expected


def test_redact_hides_a_known_secret_of_any_shape() -> None:
    secret = "correct-horse-battery-staple"
    out = redact(f"the key {secret} was refused", (secret,))
    assert secret not in out
    assert out == f"the key {REDACTED} was refused"


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A real logger with a StringIO handler and a RedactingFilter on the logger."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("test_redact.filter")
    logger.addHandler(handler)
    logger.addFilter(RedactingFilter((SECRET, "hunter2")))
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        logger.filters.clear()
        handler.close()


def test_filter_redacts_a_secret_in_the_message(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    logger.warning(f"sending with {SECRET}")
    assert stream.getvalue() == f"WARNING test_redact.filter: sending with {REDACTED}\n"


def test_filter_redacts_a_secret_passed_through_percent_args(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    logger.info("headers %s, password %s", {"Authorization": "Bearer abc.def"}, "hunter2")
    out = stream.getvalue()
    assert "hunter2" not in out
    assert "abc.def" not in out
    expected = f"headers {{'Authorization': 'Bearer {REDACTED}'}}, password {REDACTED}"
    assert out == f"INFO test_redact.filter: {expected}\n"


def test_filter_redacts_a_key_shape_it_was_not_told_about(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    logger.info("X-API-Key: %s", "zz-top-secret")
    assert "zz-top-secret" not in stream.getvalue()
    assert stream.getvalue().endswith(f"X-API-Key: {REDACTED}\n")


def test_filter_leaves_a_clean_message_alone_and_keeps_the_record(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    logger.info("%d jobs done, %.1f%% failed", 12, 2.5)
    assert stream.getvalue() == "INFO test_redact.filter: 12 jobs done, 2.5% failed\n"


def test_filter_on_a_handler_redacts_records_from_child_loggers() -> None:
    """How the CLI installs it: on the handler, so propagated records are covered too."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter((SECRET,)))
    parent = logging.getLogger("test_redact.parent")
    parent.addHandler(handler)
    parent.setLevel(logging.INFO)
    parent.propagate = False
    try:
        logging.getLogger("test_redact.parent.child").info("key is %s", SECRET)
    finally:
        parent.removeHandler(handler)
        handler.close()
    assert stream.getvalue() == f"key is {REDACTED}\n"


def test_a_one_letter_key_does_not_shred_log_text() -> None:
    """Regression: SELAM_API_KEY=x turned '--max-runtime' into '--ma[REDACTED]-runtime'."""
    assert redact("stopping: --max-runtime 8s reached", ("x",)) == (
        "stopping: --max-runtime 8s reached"
    )


def test_response_bodies_lose_the_key_but_not_letters_of_a_one_letter_key() -> None:
    """Bodies echoing the key are scrubbed; a too-short 'key' leaves bodies untouched."""
    body = b'{"error": {"message": "bad key MYSECRETKEY12345, sorry"}}'
    assert redact_bytes(body, ("MYSECRETKEY12345",)) == body.replace(
        b"MYSECRETKEY12345", REDACTED.encode()
    )
    assert redact_bytes(body, ("x",)) == body
