"""The ``ipvs`` sink: ``ipvsadm -R`` with `lbcore.render.ipvs`, and the VIPs on a dummy
interface (``sh -eu`` of `render_node_setup`, kube-proxy's ``kube-ipvs0``).

The sink owns the node's IPVS table, as kube-proxy's IPVS mode does (it deletes every
virtual service it does not want), and the addresses on its dummy interface.

Partial sync: the node setup when the set of VIPs changed (new VIPs are bound before
their services exist, stale ones unbound), then ``ipvsadm -R`` of `render_diff`.

Full sync: read back ``ipvsadm -S -n``, write the lines that turn that table into
``render(new)`` (``-D`` what is not wanted, ``-A``/``-E`` services, ``-a``/``-e``/``-d``
real servers), apply the node setup and those lines, then read the table back again:
it must equal ``render(new)`` (as sets of lines: ipvsadm's listing order is not always
numeric, see `lbcore.render.ipvs`).

IPVS has no transactions: ``ipvsadm -R`` applies line by line, goes on after a line the
kernel refuses, and exits with the status of its last line.  The sink counts any stderr
output as a failure; the full sync that follows reads back what the kernel really holds
and finishes the job.
"""

from __future__ import annotations

import asyncio
from typing import Sequence

from ...models import Service
from ...render import ipvs
from .commands import DEFAULT_TIMEOUT, ApplyError, Runner, local_runner, run

__all__ = ["IpvsSink", "table_diff"]

# ``-A``/``-a`` lines by service spec: spec -> (options, {real server: its tail})
_Table = dict[str, tuple[str, dict[str, str]]]


def _spec_length(tokens: list[str]) -> int:
    # "-t vip:port", "-u ...", "--sctp-service ...", "-f mark", "-f mark -6"
    return 3 if tokens[0] == "-f" and tokens[2:3] == ["-6"] else 2


def _parse(save: str) -> _Table:
    """An ``ipvsadm -S -n`` listing (or `ipvs.render` text) as a table; O(lines)."""
    table: _Table = {}
    for line in save.splitlines():
        tokens = line.split()
        if not tokens:
            continue
        n = _spec_length(tokens[1:])
        spec = " ".join(tokens[1 : 1 + n])
        rest = tokens[1 + n :]
        if tokens[0] == "-A":
            table[spec] = (" ".join(rest), {})
        elif tokens[0] == "-a" and rest[:1] == ["-r"]:
            table.setdefault(spec, ("", {}))[1][rest[1]] = " ".join(rest[2:])
    return table


def table_diff(current: str, wanted: str) -> str:
    """``ipvsadm -R`` lines turning the table listed in ``current`` into ``wanted``
    (both as ``ipvsadm -S -n`` prints them); O(lines).

    >>> current = "-A -t 10.0.0.1:80 -s rr\\n-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 1\\n-A -t 10.0.0.9:80 -s rr\\n"
    >>> wanted = "-A -t 10.0.0.1:80 -s wrr\\n-a -t 10.0.0.1:80 -r 10.1.0.2:80 -m -w 2\\n"
    >>> print(table_diff(current, wanted), end="")
    -D -t 10.0.0.9:80
    -E -t 10.0.0.1:80 -s wrr
    -a -t 10.0.0.1:80 -r 10.1.0.2:80 -m -w 2
    -d -t 10.0.0.1:80 -r 10.1.0.1:80
    """
    have, want = _parse(current), _parse(wanted)
    lines = [f"-D {spec}" for spec in have if spec not in want]
    for spec, (options, servers) in want.items():
        if spec not in have:
            lines.append(f"-A {spec} {options}")
            lines += [f"-a {spec} -r {server} {tail}" for server, tail in servers.items()]
            continue
        old_options, old_servers = have[spec]
        if old_options != options:
            lines.append(f"-E {spec} {options}")
        lines += [f"-a {spec} -r {s} {tail}" for s, tail in servers.items() if s not in old_servers]
        lines += [f"-e {spec} -r {s} {tail}" for s, tail in servers.items()
                  if s in old_servers and old_servers[s] != tail]
        lines += [f"-d {spec} -r {s}" for s in old_servers if s not in servers]
    return "".join(line + "\n" for line in lines)


class IpvsSink:
    """Keep the node's IPVS table and the VIPs on ``interface`` in step."""

    mode = "ipvs"

    def __init__(self, *, interface: str = ipvs.DEFAULT_INTERFACE, fallback: bool = False,
                 runner: Runner = local_runner, timeout: float = DEFAULT_TIMEOUT) -> None:
        ipvs.render_node_setup([], interface=interface)  # a bad name fails here, naming it
        self.interface = interface
        self.fallback = fallback
        self.runner = runner
        self.timeout = timeout

    def refuse(self, service: Service) -> str | None:
        # IPVS has no p2c, ring or bounded loads: refused unless --fallback
        # (`lbcore.render.ipvs.FALLBACK`).
        if self.fallback:
            return None
        if service.scheduler in ipvs.FALLBACK:
            scheduler, flags = ipvs.FALLBACK[service.scheduler]
            return (f"scheduler: {service.scheduler!r} has no IPVS scheduler; use one of IPVS's, "
                    f"or --fallback to run it as {' -b '.join((scheduler, *flags))}")
        if service.balance_factor is not None:
            return (f"balance_factor: {service.balance_factor:g} cannot be expressed in ipvs mode "
                    f"({service.scheduler} has no bounded loads there); drop it, or --fallback to "
                    "run the scheduler without the bound")
        return None

    async def apply(self, old: Sequence[Service] | None, new: Sequence[Service]) -> None:
        await asyncio.to_thread(self._apply, old, new)

    async def cleanup(self) -> None:
        await asyncio.to_thread(self._cleanup)

    async def close(self) -> None:
        """Nothing to let go of: the table stays in the kernel."""

    def _run(self, argv: Sequence[str], payload: str | None = None, **kw: bool) -> str:
        return run(self.runner, argv, payload, timeout=self.timeout, **kw)

    def _restore(self, lines: str) -> None:
        if lines:
            self._run(("ipvsadm", "-R"), lines, stderr_fails=True)

    def _node_setup(self, services: Sequence[Service]) -> None:
        self._run(("sh", "-eu"), ipvs.render_node_setup(services, interface=self.interface))

    def _apply(self, old: Sequence[Service] | None, new: Sequence[Service]) -> None:
        if old is not None:
            if {s.vip for s in old} != {s.vip for s in new}:
                self._node_setup(new)
            self._restore(ipvs.render_diff(old, new, fallback=self.fallback))
            return
        wanted = ipvs.render(new, fallback=self.fallback)
        self._node_setup(new)
        self._restore(table_diff(self._run(("ipvsadm", "-S", "-n")), wanted))
        readback = self._run(("ipvsadm", "-S", "-n"))
        if set(readback.splitlines()) != set(wanted.splitlines()):
            missing = len(set(wanted.splitlines()) - set(readback.splitlines()))
            extra = len(set(readback.splitlines()) - set(wanted.splitlines()))
            raise ApplyError(f"ipvsadm -S -n after the full sync: {missing} line(s) missing, "
                             f"{extra} unexpected")

    def _cleanup(self) -> None:
        self._run(("ipvsadm", "-C"))
        self._run(("sh", "-eu"), _DELETE_INTERFACE.format(interface=self.interface))


_DELETE_INTERFACE = """\
if ip link show dev {interface} >/dev/null 2>&1; then ip link delete dev {interface}; fi
"""
