"""Which balancers a simulation compares, each built by the library itself.

A scheduler is written ``NAME[+affinity][:OPTION=VALUE]...``: ``wlc``, ``mh+affinity``,
``mh:table_size=251``, ``ring:balance_factor=1.25``.  NAME is an ipvsadm scheduler
name that `lbcore.make_balancer` knows; the options go to it as they are.
``+affinity`` wraps the balancer in `lbcore.Affinity` with the simulation's timeout and
a clock that reads the simulated time.  A balancer that draws random numbers (rr and wrr
start at a random place, p2c picks its two candidates at random) gets ``rng`` seeded from
the simulation's seed and its own name, so adding a scheduler to the list changes
nobody else's picks.

How each is replayed follows from what its picks depend on:

- ``key``: dh, sh, mh and ring without bounded loads pick by the key and the endpoint
  set alone, so one ``pick_many`` over the distinct keys serves every request of a phase;
- ``sequence``: rr and wrr pick by their position in the sequence of picks, so one
  ``pick_many`` per phase, as long as its requests;
- ``held``: everything else (lc, wlc, p2c, bounded loads, affinity, and any scheduler
  not named here) is replayed one request at a time in time order, with every
  connection released when it ends (`lbcore.simulate.replay`).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

from ..balancers import Affinity, make_balancer
from ..errors import ConfigError
from ..models import SCHEDULERS, Endpoint

__all__ = ["SchedulerSpec", "parse_schedulers", "DEFAULT_SCHEDULERS"]

#: Every scheduler this lbcore has, and Maglev with sticky sessions.
DEFAULT_SCHEDULERS = ",".join(SCHEDULERS) + ",mh+affinity"

_BY_KEY = ("dh", "sh", "mh", "ring")
_BY_SEQUENCE = ("rr", "wrr")
_SEEDED = ("rr", "wrr", "p2c")
_OPTION = re.compile(r"(?P<name>[a-z_]+)=(?P<value>[^:=]+)")


def _value(text: str) -> int | float | str:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


@dataclass(frozen=True)
class SchedulerSpec:
    """One entry of ``--schedulers``: ``name`` as written, the scheduler, affinity, options."""

    name: str
    scheduler: str
    affinity: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def replay(self) -> str:
        """``"key"``, ``"sequence"`` or ``"held"``: how its picks are replayed (module docstring)."""
        if self.affinity or self.options.get("balance_factor") is not None:
            return "held"
        if self.scheduler in _BY_KEY:
            return "key"
        return "sequence" if self.scheduler in _BY_SEQUENCE else "held"

    def build(self, endpoints: tuple[Endpoint, ...], seed: int, affinity_timeout: int, clock: Any) -> Any:
        """The balancer, by `lbcore.make_balancer` (wrapped in Affinity for ``+affinity``).

        Raises ConfigError for a bad option.
        """
        options = dict(self.options)
        if self.scheduler in _SEEDED:
            options["rng"] = random.Random(f"lbcore.simulate:{seed}:{self.name}")
        try:
            balancer = make_balancer(self.scheduler, endpoints, **options)
        except ConfigError as error:
            raise error.within(f"scheduler {self.name!r}") from None
        return Affinity(balancer, affinity_timeout, clock=clock) if self.affinity else balancer


def _parse_one(text: str) -> SchedulerSpec:
    head, *option_texts = text.split(":")
    name, plus, wrapper = head.partition("+")
    if plus and wrapper != "affinity":
        raise ConfigError("schedulers", text, "has +" + wrapper + "; the only wrapper is +affinity")
    if not name:
        raise ConfigError("schedulers", text, "names no scheduler; e.g. rr, wlc, mh+affinity, mh:table_size=251")
    if name not in SCHEDULERS:
        raise ConfigError("schedulers", text, f"is not a scheduler; valid: {', '.join(SCHEDULERS)}")
    options = {}
    for option in option_texts:
        match = _OPTION.fullmatch(option)
        if not match:
            raise ConfigError("schedulers", text, f"has option {option!r}; write NAME=VALUE, e.g. table_size=251")
        if match["name"] == "rng":
            raise ConfigError("schedulers", text, "sets rng, which the simulation seeds from --seed")
        options[match["name"]] = _value(match["value"])
    return SchedulerSpec(text, name, bool(plus), options)


def parse_schedulers(text: str) -> list[SchedulerSpec]:
    """The comma-separated list of ``--schedulers``; ConfigError naming a bad entry.

    >>> [(s.scheduler, s.affinity, s.options, s.replay) for s in parse_schedulers("wlc,mh+affinity,mh:table_size=251")]
    [('wlc', False, {}, 'held'), ('mh', True, {}, 'held'), ('mh', False, {'table_size': 251}, 'key')]
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("schedulers", text, f"is empty; e.g. {DEFAULT_SCHEDULERS}")
    specs = [_parse_one(part.strip()) for part in text.split(",")]
    names = [spec.name for spec in specs]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError("schedulers", name, "is listed twice")
    return specs
