"""Live sources: the interface the node agent consumes.

A live source yields `Snapshot` objects: the full current set of Services it holds,
first once listed, then one per change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator, Protocol

from ..models import Service

__all__ = ["Snapshot", "LiveSource"]


@dataclass(frozen=True)
class Snapshot:
    source: str                    # the source as the user gave it
    services: tuple[Service, ...]  # the full current set from this source (bad entries left out)
    problems: tuple[str, ...]      # one line per bad entry naming key/file/object and field
    changed_at: float              # clock() when the change behind this snapshot was seen


class LiveSource(Protocol):
    source: str
    connected: bool

    def watch(self) -> AsyncIterator[Snapshot]: ...
    # yields the first full set once listed, then one per change (coalescing bursts is
    # allowed); runs until cancelled; reconnects on its own with backoff and never ends
    # because a connection was lost; `connected` tells whether it is in contact now.
