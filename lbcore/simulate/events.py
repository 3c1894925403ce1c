"""Changes to the endpoints at given times: remove, add, fail, recover, weight.

An event is written ``TIME:KIND:IP:PORT[:WEIGHT]`` (IPv6 as ``[ip]:port``):

- ``30s:remove:10.0.0.3:8080``: the endpoint leaves the set (``update``); its open
  connections drain;
- ``45s:add:10.0.0.9:8080`` or ``45s:add:10.0.0.9:8080:3``: a new endpoint (weight 1,
  or the one given) joins the set;
- ``60s:fail:10.0.0.4:8080`` and ``90s:recover:10.0.0.4:8080``: passive health
  (``mark_failed`` / ``mark_healthy``): no new connections meanwhile;
- ``75s:weight:10.0.0.5:8080:0``: a new weight (0 quiesces it, as in IPVS).

TIME is seconds from the first request, with an optional unit: ``ms``, ``s``, ``m``,
``h`` (``1.5m`` is 90 s).  `Timeline` checks every event against the set it finds at
its time (removing an endpoint that is not there is an error, not a no-op) and gives
the endpoint set between events.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from ..errors import ConfigError
from ..models import Endpoint, check_endpoints

__all__ = ["Event", "parse_event", "Timeline", "Phase", "KINDS"]

#: What an event does to its endpoint.
KINDS = ("remove", "add", "fail", "recover", "weight")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_TIME = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)(?P<unit>ms|s|m|h)?")
_FORMAT = "TIME:KIND:IP:PORT[:WEIGHT], e.g. 30s:remove:10.0.0.3:8080"


@dataclass(frozen=True)
class Event:
    """One change: at ``time`` seconds, ``kind`` applies to the endpoint at ``ip``:``port``.

    ``weight`` is the new weight of ``weight`` and the weight of ``add`` (default 1).
    """

    time: float
    kind: str
    ip: str
    port: int
    weight: int | None = None

    @property
    def address(self) -> str:
        """``ip:port`` as `Endpoint.address` writes it."""
        return Endpoint(self.ip, self.port).address

    def __str__(self) -> str:
        weight = "" if self.weight is None else f":{self.weight}"
        return f"{self.time:g}s:{self.kind}:{self.address}{weight}"


def parse_event(text: str) -> Event:
    """An event from its text form; ConfigError naming the part that is wrong.

    >>> parse_event("30s:remove:10.0.0.3:8080")
    Event(time=30.0, kind='remove', ip='10.0.0.3', port=8080, weight=None)
    >>> parse_event("1.5m:weight:[fd00::2]:80:3")
    Event(time=90.0, kind='weight', ip='fd00::2', port=80, weight=3)
    """
    if not isinstance(text, str):
        raise ConfigError("event", text, f"must be text: {_FORMAT}")
    parts = text.split(":", 2)
    if len(parts) < 3:
        raise ConfigError("event", text, f"is not {_FORMAT}")
    time_text, kind, rest = parts
    match = _TIME.fullmatch(time_text.strip())
    if not match:
        raise ConfigError("event", text, f"has time {time_text!r}; write seconds, e.g. 30s, 1.5m, 500ms")
    time = float(match["number"]) * _UNITS[match["unit"] or "s"]
    if kind not in KINDS:
        raise ConfigError("event", text, f"has kind {kind!r}; valid: {', '.join(KINDS)}")
    if rest.startswith("["):
        ip, bracket, tail = rest[1:].partition("]")
        fields = tail.split(":")[1:] if bracket and tail.startswith(":") else []
    else:
        ip, *fields = rest.split(":")
    if not 1 <= len(fields) <= 2 or not all(f.isdigit() for f in fields):
        raise ConfigError("event", text, f"has endpoint {rest!r}; write IP:PORT[:WEIGHT], IPv6 as [IP]:PORT")
    port = int(fields[0])
    weight = int(fields[1]) if len(fields) == 2 else None
    if weight is None and kind == "weight":
        raise ConfigError("event", text, "gives no weight; write TIME:weight:IP:PORT:WEIGHT")
    if weight is not None and kind not in ("add", "weight"):
        raise ConfigError("event", text, f"gives a weight, which {kind} does not take")
    try:
        Endpoint(ip, port, weight=1 if weight is None else weight)
    except ConfigError as error:
        raise error.within(f"event {text!r}") from None
    return Event(time, kind, Endpoint(ip, port).ip, port, weight)


@dataclass(frozen=True)
class Phase:
    """The endpoint set from ``start`` until the next phase: endpoints, and those failed."""

    start: float
    endpoints: tuple[Endpoint, ...]
    failed: frozenset[str]
    event: Event | None


class Timeline:
    """The endpoint set over time: the initial one, then one `Phase` after each event.

    Events are applied in order of time (equal times: in the order given).  Every
    endpoint ever present gets an id, in order of first appearance (`addresses`), so
    that figures can follow an endpoint across changes.  ConfigError if an event does
    not apply to the set at its time, or comes after ``end`` (the last arrival).

    >>> t = Timeline([Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80)],
    ...              [parse_event("5s:add:10.0.0.3:80"), parse_event("2s:fail:10.0.0.1:80")], end=10)
    >>> [(p.start, len(p.endpoints), sorted(p.failed)) for p in t.phases]
    [(0.0, 2, []), (2.0, 2, ['10.0.0.1:80']), (5.0, 3, ['10.0.0.1:80'])]
    >>> t.addresses
    ['10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80']
    """

    def __init__(self, endpoints: Iterable[Endpoint], events: Sequence[Event], end: float) -> None:
        current = check_endpoints(endpoints)
        if not current:
            raise ConfigError("endpoints", [], "is empty; a simulation needs at least one endpoint")
        failed: frozenset[str] = frozenset()
        self.phases = [Phase(0.0, current, failed, None)]
        self.addresses = [e.address for e in current]
        for number, event in sorted(enumerate(events), key=lambda pair: pair[1].time):
            field = f"events[{number}]"
            if not 0 <= event.time <= end or not math.isfinite(event.time):
                raise ConfigError(field, str(event), f"is at {event.time:g} s, outside the traffic (0..{end:g} s)")
            present = {e.address: e for e in current}
            endpoint = present.get(event.address)
            if event.kind == "add":
                if endpoint is not None:
                    raise ConfigError(field, str(event), f"adds {event.address}, which is already in the set")
                current = current + (Endpoint(event.ip, event.port, weight=1 if event.weight is None else event.weight),)
            elif endpoint is None:
                raise ConfigError(
                    field, str(event),
                    f"names {event.address}, which is not in the set at {event.time:g} s "
                    f"({len(present)} endpoints: {', '.join(list(present)[:5])}{', ...' if len(present) > 5 else ''})",
                )
            elif event.kind == "remove":
                current = tuple(e for e in current if e is not endpoint)
                failed = failed - {event.address}
            elif event.kind == "weight":
                current = tuple(dataclasses.replace(e, weight=event.weight) if e is endpoint else e for e in current)
            elif event.kind == "fail":
                if event.address in failed:
                    raise ConfigError(field, str(event), f"fails {event.address}, which has failed already")
                failed = failed | {event.address}
            elif event.address not in failed:  # recover
                raise ConfigError(field, str(event), f"recovers {event.address}, which has not failed")
            else:
                failed = failed - {event.address}
            if event.address not in self.addresses:
                self.addresses.append(event.address)
            self.phases.append(Phase(event.time, current, failed, event))

    @property
    def events(self) -> list[Event]:
        """The events in order of time."""
        return [phase.event for phase in self.phases[1:]]  # type: ignore[misc]
