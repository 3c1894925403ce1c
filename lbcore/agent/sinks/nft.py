"""The ``nft`` sink: ``nft -f`` with `lbcore.render.nft`, IPv4 and IPv6.

The renderer does the hard part: ``nft -f`` applies a file as one transaction, all or
nothing, and its full payload starts by deleting lbcore's tables, so a full sync both
installs and reconciles (stale chains and elements from an earlier run are gone) in one
atomic step, and a partial sync (`render_diff`) changes only the changed Services'
elements.  Nothing is ever half-applied.  ``cleanup`` is `render_delete`.

A full sync starts the sticky Services' affinity maps empty (the renderer's rule), so
ClientIP sessions pick afresh after each full sync: at start, after a failure and once
per sync period.
"""

from __future__ import annotations

import asyncio
from typing import Sequence

from ...models import Service
from ...render import BACKEND_SCHEDULERS, nft
from .commands import DEFAULT_TIMEOUT, Runner, local_runner, run

__all__ = ["NftSink"]


class NftSink:
    """Keep lbcore's nftables tables in step with the current set."""

    mode = "nft"

    def __init__(self, *, fallback: bool = False, runner: Runner = local_runner,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.fallback = fallback
        self.runner = runner
        self.timeout = timeout

    def refuse(self, service: Service) -> str | None:
        scheduler = service.scheduler
        if service.balance_factor is not None and not self.fallback:
            return (f"balance_factor: {service.balance_factor:g} cannot be expressed in nft mode "
                    "(bounded loads need connection counts); drop it, or --fallback to run "
                    f"{scheduler} without the bound")
        if scheduler in BACKEND_SCHEDULERS["nft"] or (self.fallback and scheduler in nft.FALLBACK):
            return None
        hint = f", or --fallback to run it as {nft.FALLBACK[scheduler]}" if scheduler in nft.FALLBACK else ""
        return (f"scheduler: {scheduler!r} cannot run in nft mode (no connection counts); use one of "
                f"{', '.join(BACKEND_SCHEDULERS['nft'])}{hint}")

    async def apply(self, old: Sequence[Service] | None, new: Sequence[Service]) -> None:
        await asyncio.to_thread(self._apply, old, new)

    async def cleanup(self) -> None:
        await asyncio.to_thread(self._nft, nft.render_delete())

    async def close(self) -> None:
        """Nothing to let go of: the tables stay in the kernel."""

    def _nft(self, payload: str) -> None:
        if payload:
            run(self.runner, ("nft", "-f", "-"), payload, timeout=self.timeout)

    def _apply(self, old: Sequence[Service] | None, new: Sequence[Service]) -> None:
        if old is None:
            self._nft(nft.render(new, fallback=self.fallback))
        else:
            self._nft(nft.render_diff(old, new, fallback=self.fallback))
