"""The forwarder's knobs, validated once: a bad value raises ConfigError naming the option."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from ..errors import ConfigError

__all__ = ["Options"]


@dataclass(frozen=True, slots=True)
class Options:
    """How the forwarder connects, retries, limits and drains.

    ``connect_timeout`` is the first try's timeout; each retry doubles it, as the
    kube-proxy userspace proxier did (250 ms, 500 ms, 1 s, 2 s over its 4 tries).  A
    failed endpoint is skipped for ``cooldown`` seconds.  A TCP connection silent both
    ways for ``idle_timeout`` (a UDP flow for ``udp_idle_timeout``) is closed, within a
    quarter of the timeout after it expires.  ``max_connections`` caps each service's
    concurrent TCP connections or UDP flows unless the Service sets its own.  `stop()`
    waits ``drain_timeout`` for connections to finish.  ``splice`` lets bulk transfers
    move through the kernel with ``splice(2)`` (Linux) instead of through Python.
    ``retry_unanswered`` moves a connection that its endpoint closes before answering to
    the next endpoint, replaying the client's first bytes (see `lbcore.forwarder.tcp`).
    ``copier`` lets a persistent connection's steady state copy between the raw sockets
    instead of through the relay's transports (fewer CPU cycles per request; same
    behaviour).

    >>> Options(tries=2).tries
    2
    >>> Options(connect_timeout=0)
    Traceback (most recent call last):
    ...
    lbcore.errors.ConfigError: connect_timeout: 0 must be a number of seconds > 0
    """

    connect_timeout: float = 0.25
    tries: int = 4
    cooldown: float = 10.0
    idle_timeout: float = 300.0
    udp_idle_timeout: float = 30.0
    max_connections: int = 10000
    drain_timeout: float = 30.0
    splice: bool = True
    retry_unanswered: bool = True
    copier: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "float":
                if (
                    type(value) not in (int, float)
                    or not math.isfinite(value)
                    or value <= 0
                ):
                    raise ConfigError(f.name, value, "must be a number of seconds > 0")
            elif f.type == "int":
                if type(value) is not int or not 1 <= value <= 2**31 - 1:
                    raise ConfigError(f.name, value, "must be an integer in 1..2147483647")
            elif type(value) is not bool:
                raise ConfigError(f.name, value, "must be true or false")

    @classmethod
    def from_kwargs(cls, options: dict) -> Options:
        """Options from keyword arguments; an unknown name raises ConfigError naming it."""
        known = {f.name for f in fields(cls)}
        for name, value in options.items():
            if name not in known:
                raise ConfigError(
                    name, value, f"is not a forwarder option; valid: {', '.join(sorted(known))}"
                )
        return cls(**options)

    def try_timeout(self, attempt: int) -> float:
        """The connect timeout of try number ``attempt`` (0-based): doubling per retry."""
        return self.connect_timeout * (1 << attempt)
