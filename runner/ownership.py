"""Which process works on a run: one owner at a time, and telling a dead owner from a live one.

A run's owner is `host:pid:tag`, with a heartbeat the owner refreshes every few seconds. An
owner is gone when its heartbeat is stale, or when it was on this host and its process no
longer exists (or the id is our own: a restarted container gets the same pid).
"""

from __future__ import annotations

import os
import socket
import uuid

from runner.errors import RunLockedError
from runner.store.protocol import RunRecord, Store

STALE_OWNER_S = 60.0


def owner_id() -> str:
    """An identity for this process: host, pid and a random tag."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _pid_is_gone(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def owner_is_gone(owner: str, heartbeat_at: float | None, now: float) -> bool:
    """Whether a recorded owner can no longer be working on the run."""
    if heartbeat_at is None or now - heartbeat_at > STALE_OWNER_S:
        return True
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    return host == socket.gethostname() and pid_text.isdigit() and _pid_is_gone(int(pid_text))


def describe_owner(owner: str) -> str:
    """`process 123 on host` for messages."""
    host, _, rest = owner.partition(":")
    return f"process {rest.partition(':')[0]} on {host}"


async def take_run(store: Store, run: RunRecord, owner: str, now: float) -> None:
    """Become the run's owner, or raise RunLockedError if a live process holds it."""
    if run.owner is not None and not owner_is_gone(run.owner, run.heartbeat_at, now):
        raise RunLockedError(
            f"run {run.id} ({run.out_path}) is being worked on by {describe_owner(run.owner)}; "
            "this invocation exits without touching it"
        )
    if not await store.take_ownership(run.id, owner, run.owner, now):
        raise RunLockedError(f"run {run.id} was taken by another process just now")
