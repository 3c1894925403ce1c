"""The ``forward`` sink: lbcore's userspace forwarder in the agent's own process,
updated live (`lbcore.forwarder.Forwarder.update`: established connections are never
cut, removed endpoints drain).

A sync is always the whole set (the forwarder finds what changed itself, O(services +
changed endpoints)); a bad listen address or one that cannot be bound fails the sync
and changes nothing, as `Forwarder.update` promises.  There is nothing in the kernel to
reconcile or clean up: the listeners are the process's own and close with it.
"""

from __future__ import annotations

from typing import Any, Sequence

from ...forwarder import Forwarder
from ...models import Service

__all__ = ["ForwardSink"]


class ForwardSink:
    """Run a `Forwarder` for the current set; ``options`` are the forwarder's."""

    mode = "forward"

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.forwarder: Forwarder | None = None

    def refuse(self, service: Service) -> str | None:
        if service.protocol not in ("tcp", "udp"):
            return (f"protocol: {service.protocol!r} is not carried by the userspace "
                    "forwarder (tcp, udp); use --mode ipvs")
        return None

    async def apply(self, old: Sequence[Service] | None, new: Sequence[Service]) -> None:
        if self.forwarder is None:
            forwarder = Forwarder(new, **self.options)
            try:
                await forwarder.start()
            except BaseException:
                await forwarder.stop()  # let go of what start() took before it failed
                raise
            self.forwarder = forwarder
        else:
            self.forwarder.update(new)

    async def cleanup(self) -> None:
        """Nothing outlives the process: there is nothing to remove."""

    async def close(self) -> None:
        """Stop accepting and drain (the forwarder's ``drain_timeout``)."""
        if self.forwarder is not None:
            await self.forwarder.stop()
