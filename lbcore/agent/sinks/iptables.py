"""The ``iptables`` sink: ipset + ``iptables-restore --noflush`` with lbcore's renderers
(`lbcore.render.iptables`, `lbcore.render.ipset`), IPv4 and IPv6.

Partial sync: ``ipset restore`` of the sets new Services need, ``iptables-restore
--noflush`` of `render_diff` per family, then ``ipset restore`` destroying the sets no
longer used (a set a rule still references cannot be destroyed, so it goes last).

Full sync (start, after a failure, every sync period): read back ``iptables-save`` and
``ipset list -n``, apply the full payload, then remove what lbcore owns and the payload
does not have: stale ``LBCORE-*`` chains (flushed and deleted in a second transaction,
once nothing jumps to them) and stale ``LBCORE-SVE-*`` sets.  The full payload checks
each jump from a built-in chain with ``-C``; the sink puts ``-I CHAIN 1`` in place of
the check for a jump the read-back did not find, and leaves out the check for one it
found, so the same sync installs a fresh node, repairs a deleted jump and re-applies an
installed one.  A family with no Service and nothing of lbcore's is not touched.

Atomicity is iptables-restore's: each table commits at its ``COMMIT`` (all or nothing),
the filter table first.  A partial payload that fails in nat after filter committed
leaves filter changed; the full sync that follows any failure (kube-proxy's rule) puts
every table in the new state.
"""

from __future__ import annotations

import asyncio
import re
from typing import Sequence

from ...models import Service
from ...render import ipset, iptables
from .commands import DEFAULT_TIMEOUT, Runner, local_runner, run

__all__ = ["IptablesSink", "Ruleset", "read_ruleset"]

_PREFIX = "LBCORE-"
_TOOLS = {4: ("iptables-restore", "iptables-save"), 6: ("ip6tables-restore", "ip6tables-save")}
# kube-proxy's restore flags: wait up to 5 s for the xtables lock, polling every 100 ms.
_RESTORE = ("-w", "5", "-W", "100000", "--noflush")


class Ruleset:
    """What ``iptables-save`` shows of lbcore: its chains and the rules in built-in
    chains that jump to them, per table."""

    def __init__(self) -> None:
        self.chains: dict[str, set[str]] = {}
        #: table -> [(built-in chain, rule spec as iptables-save prints it)]
        self.jumps: dict[str, list[tuple[str, str]]] = {}

    def owned(self) -> bool:
        return any(self.chains.values())


_JUMP = re.compile(rf"^-A (\S+) (.*-j {_PREFIX}\S+.*)$")


def read_ruleset(save_output: str) -> Ruleset:
    """lbcore's part of ``iptables-save`` output; O(lines)."""
    ruleset = Ruleset()
    table = ""
    for line in save_output.splitlines():
        if line.startswith("*"):
            table = line[1:]
            ruleset.chains.setdefault(table, set())
            ruleset.jumps.setdefault(table, [])
        elif line.startswith(":" + _PREFIX):
            ruleset.chains[table].add(line[1:].split()[0])
        elif line.startswith("-A ") and not line.startswith("-A " + _PREFIX):
            match = _JUMP.match(line)
            if match:
                ruleset.jumps[table].append((match.group(1), match.group(2)))
    return ruleset


class IptablesSink:
    """Keep lbcore's iptables rules and ipset sets in step with the current set.

    ``fallback`` renders the schedulers iptables cannot express by the documented
    fallback (`lbcore.render.iptables.FALLBACK`) instead of refusing them.
    """

    mode = "iptables"

    def __init__(self, *, fallback: bool = False, runner: Runner = local_runner,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.fallback = fallback
        self.runner = runner
        self.timeout = timeout
        self._installed: set[int] = set()  # families whose jumps the last full sync made sure of

    def refuse(self, service: Service) -> str | None:
        if service.scheduler in iptables.FALLBACK and not self.fallback:
            return (f"scheduler: {service.scheduler!r} cannot be expressed in iptables mode "
                    f"(no connection counts, no hashing); use rr or wrr, or --fallback to run "
                    f"it as {iptables.FALLBACK[service.scheduler]}")
        return None

    async def apply(self, old: Sequence[Service] | None, new: Sequence[Service]) -> None:
        await asyncio.to_thread(self._apply, old, new)

    async def cleanup(self) -> None:
        await asyncio.to_thread(self._cleanup)

    async def close(self) -> None:
        """Nothing to let go of: the rules stay in the kernel."""

    def _run(self, argv: Sequence[str], payload: str | None = None) -> str:
        return run(self.runner, argv, payload, timeout=self.timeout)

    def _restore(self, family: int, payload: str) -> None:
        if payload:
            self._run((_TOOLS[family][0], *_RESTORE), payload)

    def _ipset(self, payload: str) -> None:
        if payload:
            self._run(("ipset", "restore"), payload)

    def _apply(self, old: Sequence[Service] | None, new: Sequence[Service]) -> None:
        if old is None:
            self._full(new)
            return
        # The ipset diffs cost two passes over every Service (40 ms at 10,000): only
        # ClientIP affinity has sets.
        sticky = any(s.affinity_timeout for s in old) or any(s.affinity_timeout for s in new)
        if sticky:
            self._ipset(ipset.render_diff(old, new))
        for family in (4, 6):
            if family in self._installed:
                self._restore(family, iptables.render_diff(
                    _of(old, family), _of(new, family), fallback=self.fallback, family=family))
            elif _of(new, family):
                self._full_family(family, _of(new, family))
        if sticky:
            self._ipset(ipset.render_cleanup(old, new))

    def _full(self, new: Sequence[Service]) -> None:
        self._installed.clear()
        sets = ipset.render(new)
        self._ipset(sets)
        for family in (4, 6):
            self._full_family(family, _of(new, family))
        wanted = set(re.findall(r"^create (\S+) ", sets, re.M))
        stale = [name for name in self._set_names() if name not in wanted]
        self._ipset("".join(f"destroy {name}\n" for name in stale))

    def _full_family(self, family: int, services: list[Service]) -> None:
        kernel = read_ruleset(self._run((_TOOLS[family][1],)))
        if not services and not kernel.owned():
            return
        payload = _with_jumps(
            iptables.render(services, fallback=self.fallback, family=family), kernel)
        self._restore(family, payload)
        self._installed.add(family)
        declared = set(re.findall(rf"^:({_PREFIX}\S+) ", payload, re.M))
        stale = {table: sorted(chains - declared, reverse=True)
                 for table, chains in kernel.chains.items() if chains - declared}
        self._restore(family, _deletion(stale))

    def _set_names(self) -> list[str]:
        names = self._run(("ipset", "list", "-n")).split()
        return [name for name in names if name.startswith(_PREFIX)]

    def _cleanup(self) -> None:
        for family in (4, 6):
            kernel = read_ruleset(self._run((_TOOLS[family][1],)))
            lines = []
            for table, jumps in kernel.jumps.items():
                if jumps:
                    lines += [f"*{table}", *(f"-D {chain} {spec}" for chain, spec in jumps), "COMMIT"]
            self._restore(family, "\n".join(lines) + "\n" if lines else "")
            stale = {t: sorted(c, reverse=True) for t, c in kernel.chains.items() if c}
            self._restore(family, _deletion(stale))
        self._installed.clear()
        self._ipset("".join(f"destroy {name}\n" for name in self._set_names()))


def _of(services: Sequence[Service], family: int) -> list[Service]:
    return [service for service in services if service.family == family]


def _with_jumps(payload: str, kernel: Ruleset) -> str:
    """The full payload with each ``-C`` of a jump from a built-in chain dropped where the
    kernel has that jump and turned into ``-I CHAIN 1`` where it has not."""
    lines = []
    table = ""
    for line in payload.split("\n"):
        if line.startswith("*"):
            table = line[1:]
        if line.startswith("-C "):
            builtin, spec = line[3:].split(" ", 1)
            target = spec.rsplit(" -j ", 1)[1]
            if any(c == builtin and s.endswith(f"-j {target}") for c, s in kernel.jumps.get(table, ())):
                continue
            line = f"-I {builtin} 1 {spec}"
        lines.append(line)
    return "\n".join(lines)


def _deletion(stale: dict[str, list[str]]) -> str:
    """Flush ``stale`` chains, then delete them in a second transaction per table (see
    "Order" in `lbcore.render.iptables`)."""
    out: list[str] = []
    for table, chains in stale.items():
        out += [f"*{table}", *(f":{chain} - [0:0]" for chain in chains), "COMMIT"]
        out += [f"*{table}", *(f"-X {chain}" for chain in chains), "COMMIT"]
    return "\n".join(out) + "\n" if out else ""
