"""Sinks: where the agent puts the current set of Services, one per data plane.

Every sink has the same face (`Sink`), so the agent never cares which it drives:

- ``refuse(service)``: why this data plane cannot carry ``service`` (None if it can);
  the agent leaves such a Service out and reports it, and serves the rest.
- ``apply(old, new)``: make the data plane carry ``new``.  ``old`` is what the last
  successful apply carried, for a partial sync (only the difference is written); None
  asks for a full sync, which reads back what lbcore owns in the kernel and removes
  what ``new`` does not have (the reconcile at start and after a failure).  Raises
  `ApplyError` when the kernel tool fails or times out.
- ``cleanup()``: remove everything lbcore owns in this data plane.
- ``close()``: let go of the data plane, leaving the kernel's rules in place.

Each kernel sink applies through its tools (``nft``, ``iptables-restore``, ``ipvsadm``,
``ipset``, ``sh``) with a timeout, through a `Runner`: a test or an embedder may run the
same command lines elsewhere (a network namespace, a QEMU guest).  The work runs in a
worker thread, so the event loop keeps serving /healthz and the sources meanwhile.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from ...models import Service
from .commands import ApplyError, Runner, local_runner

__all__ = ["Sink", "ApplyError", "Runner", "local_runner", "MODES", "make_sink"]

#: ``lbcore run --mode``: the data planes, in help order.
MODES = ("nft", "iptables", "ipvs", "forward")


class Sink(Protocol):
    mode: str

    def refuse(self, service: Service) -> str | None: ...

    async def apply(self, old: Sequence[Service] | None, new: Sequence[Service]) -> None: ...

    async def cleanup(self) -> None: ...

    async def close(self) -> None: ...


def make_sink(mode: str, **options: Any) -> Sink:
    """The sink of ``mode`` (one of `MODES`) with its options."""
    if mode == "iptables":
        from .iptables import IptablesSink

        return IptablesSink(**options)
    if mode == "ipvs":
        from .ipvs import IpvsSink

        return IpvsSink(**options)
    if mode == "forward":
        from .forward import ForwardSink

        return ForwardSink(**options)
    if mode == "nft":
        from .nft import NftSink

        return NftSink(**options)
    from ...errors import ConfigError

    raise ConfigError("mode", mode, f"is not one of {', '.join(MODES)}")
