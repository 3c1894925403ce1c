"""How to connect: one TCP connection to an endpoint, within a deadline.

The deadline cancels the connecting task from a timer instead of wrapping it in
`asyncio.wait_for`, which costs a second task per connection attempt.  A deadline
that fires after the protocol's ``connection_made`` (the loop still handing the
transport over to the task) is ignored: cancelling then would close a connection its
protocol has already been told is made, behind the back of whoever it was made for.
The protocol says so by setting its ``transport`` attribute there, as the relay's do;
one that does not is timed out as before.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from ..models import Endpoint

__all__ = ["connect"]


class _Deadline:
    __slots__ = ("task", "protocol_factory", "protocol", "expired")

    def __init__(self, task: asyncio.Task, protocol_factory: Callable[[], asyncio.Protocol]) -> None:
        self.task = task
        self.protocol_factory = protocol_factory
        self.protocol: Any = None
        self.expired = False

    def make_protocol(self) -> asyncio.Protocol:
        # uvloop calls the factory before it connects, asyncio after: only the
        # protocol's connection_made says the connection is made.
        self.protocol = self.protocol_factory()
        return self.protocol

    def expire(self) -> None:
        if getattr(self.protocol, "transport", None) is not None:
            return  # connection_made has run: the connection made it in time
        self.expired = True
        self.task.cancel()


async def connect(
    loop: asyncio.AbstractEventLoop,
    endpoint: Endpoint,
    protocol_factory: Callable[[], asyncio.Protocol],
    timeout: float,
) -> tuple[asyncio.Transport, Any]:
    """Connect to ``endpoint``; raise OSError on failure, TimeoutError after ``timeout`` s.

    Must run inside a task (the deadline cancels it).
    """
    task = asyncio.current_task()
    assert task is not None
    deadline = _Deadline(task, protocol_factory)
    timer = loop.call_later(timeout, deadline.expire)
    try:
        return await loop.create_connection(deadline.make_protocol, endpoint.ip, endpoint.port)
    except asyncio.CancelledError:
        if not deadline.expired:
            raise
        if hasattr(task, "uncancel"):  # Python 3.11+: this cancel was ours, not the caller's
            task.uncancel()
        raise TimeoutError(f"connect to {endpoint.address} timed out after {timeout:g} s") from None
    finally:
        timer.cancel()
