"""How to connect: one TCP connection to an endpoint, within a deadline.

The deadline cancels the connecting task from a timer instead of wrapping it in
`asyncio.wait_for`, which costs a second task per connection attempt.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from ..models import Endpoint

__all__ = ["connect"]


class _Deadline:
    __slots__ = ("task", "expired")

    def __init__(self, task: asyncio.Task) -> None:
        self.task = task
        self.expired = False

    def expire(self) -> None:
        self.expired = True
        self.task.cancel()


async def connect(
    loop: asyncio.AbstractEventLoop,
    endpoint: Endpoint,
    protocol_factory: Callable[[], asyncio.Protocol],
    timeout: float,
) -> tuple[asyncio.Transport, Any]:
    """Connect to ``endpoint``; raise OSError on failure, TimeoutError after ``timeout`` s.

    Must run inside a task (the deadline cancels it).  A connection that completes as
    the deadline fires is closed by the event loop's own cancellation handling.
    """
    task = asyncio.current_task()
    assert task is not None
    deadline = _Deadline(task)
    timer = loop.call_later(timeout, deadline.expire)
    try:
        return await loop.create_connection(protocol_factory, endpoint.ip, endpoint.port)
    except asyncio.CancelledError:
        if not deadline.expired:
            raise
        if hasattr(task, "uncancel"):  # Python 3.11+: this cancel was ours, not the caller's
            task.uncancel()
        raise TimeoutError(f"connect to {endpoint.address} timed out after {timeout:g} s") from None
    finally:
        timer.cancel()
