"""The relay's sockets and their transport (`Stream`, `accept`, `accepted`, `dial`), from
the twin in use: lbcore/_pure/stream.py says why the forwarder has its own transport,
lbcore/_fast/stream.pyx makes its system calls from C."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._twins import twin

if TYPE_CHECKING:
    from .._pure.stream import HIGH_WATER, LOW_WATER, READ_SIZE, Stream, accept, accepted, dial
else:
    _twin = twin("stream")
    Stream, accept, accepted, dial = _twin.Stream, _twin.accept, _twin.accepted, _twin.dial
    HIGH_WATER, LOW_WATER, READ_SIZE = _twin.HIGH_WATER, _twin.LOW_WATER, _twin.READ_SIZE

__all__ = ["Stream", "accept", "accepted", "dial", "HIGH_WATER", "LOW_WATER", "READ_SIZE"]
