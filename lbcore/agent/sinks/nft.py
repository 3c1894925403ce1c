"""The ``nft`` sink: ``nft -f`` with `lbcore.render.nft`, IPv4 and IPv6.

The renderer does the hard part: ``nft -f`` applies a file as one transaction, all or
nothing, so nothing is ever half-applied.  A partial sync is `render_diff`: only the
changed Services' elements.  A full sync (at start, after a failure, once per sync
period) reads back which chains, maps and sets lbcore's tables hold (`read_existing`)
and hands them to `render`, which syncs the tables in place: every rule and endpoint
written again, stale objects from an earlier state or run deleted, and the ClientIP
affinity maps kept, so sticky clients stay on their endpoints across it.  Where no
table of lbcore's exists yet, the full payload simply creates them.

If the kernel refuses the in-place payload (a kernel before 6.2 is likely unable to
delete a chain in the transaction that drops the last map element pointing at it, as
`lbcore.render.nft` says of its diffs; a table left by another lbcore version may
declare an object otherwise), or the renderer refuses a name read back (one put there
through nft's JSON, which nft's own syntax cannot carry), the sink applies the payload
that replaces the tables instead, which needs none of it, and says so in the log:
sticky clients pick afresh once.  ``cleanup`` is `render_delete`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Iterable, Sequence

from ...errors import ConfigError
from ...models import Service
from ...render import BACKEND_SCHEDULERS, nft
from .commands import DEFAULT_TIMEOUT, ApplyError, Runner, local_runner, run

__all__ = ["NftSink", "read_existing"]

log = logging.getLogger("lbcore.agent")

#: What a full sync reads back: declarations only (``-t``: no elements, the maps hold
#: 100,000 and more).  ``list table -t`` would print every rule too: 8 s at 10,000
#: Services (measured while writing this) where these three take 0.035 s
#: (bench/results/nft_full_sync-20261207-183920.json).
_LISTS = tuple(("nft", "-j", "-t", "list", kind) for kind in ("chains", "maps", "sets"))


def read_existing(listings: Iterable[str]) -> set[tuple[str, str, str]]:
    """The (family, kind, name) of every chain, map and set in lbcore's tables, from
    ``nft -j -t list chains|maps|sets`` output: what `lbcore.render.nft.render` takes
    as ``existing``.  Other tables' objects are left out; O(objects listed)."""
    found = set()
    for listing in listings:
        for item in json.loads(listing)["nftables"]:
            for kind in ("chain", "map", "set"):
                obj = item.get(kind)
                if obj is not None and obj["table"] == nft.TABLE and obj["family"] in ("ip", "ip6"):
                    found.add((obj["family"], kind, obj["name"]))
    return found


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
        if old is not None:
            self._nft(nft.render_diff(old, new, fallback=self.fallback))
            return
        existing = read_existing(run(self.runner, argv, timeout=self.timeout) for argv in _LISTS)
        if existing:
            try:
                self._nft(nft.render(new, fallback=self.fallback, existing=existing))
                return
            except (ApplyError, ConfigError) as exc:  # ConfigError: a name nft's syntax cannot carry
                log.warning("nft: the in-place full sync was refused, replacing lbcore's tables instead "
                            "(sticky clients pick afresh once): %s", exc)
        self._nft(nft.render(new, fallback=self.fallback))
