"""One service as the forwarder runs it: its balancer, limits, passive health and stats.

A runtime outlives updates of its Service (same name and protocol): connections keep
pointing at it, so the connection count behind ``max_connections`` and the stats carry
over, while the balancer, the limit and the listener may be swapped underneath.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from ..models import Service
from .clock import Clock
from .deadlines import Deadlines
from .options import Options
from .retry import PassiveHealth
from .stats import ServiceStats

__all__ = ["ServiceRuntime", "key_function", "balancer_config"]


def _client_ip(peer: tuple) -> str:
    return peer[0]


def _client_ip_port(peer: tuple) -> str:
    return f"{peer[0]}:{peer[1]}"


def key_function(service: Service) -> Callable[[tuple], str]:
    """The pick key of a connection or flow, from the client's address.

    The client IP (what IPVS ``sh`` and ClientIP affinity hash); ``ip:port`` with
    ``sh-port``/``mh-port`` (IPVS hashes the source port too); for ``dh`` the service's
    VIP, the destination every client of the service addresses (IPVS ``dh`` hashes the
    destination address).
    """
    if service.scheduler == "dh":
        vip = service.vip
        return lambda peer: vip
    if "sh-port" in service.sched_flags or "mh-port" in service.sched_flags:
        return _client_ip_port
    return _client_ip


def balancer_config(service: Service) -> tuple:
    """What decides the balancer's kind; an update that keeps it keeps the balancer."""
    return (service.scheduler, service.affinity_timeout, service.sched_flags, service.balance_factor,
            service.slow_start, service.panic_threshold)


class ServiceRuntime:
    """The live state of one service in a forwarder."""

    __slots__ = (
        "name", "protocol", "service", "balancer", "options", "loop", "stats", "health",
        "max_connections", "key_of", "wants_key", "listener", "ended", "poller", "deadlines",
        "checker", "clock",
    )

    def __init__(
        self,
        service: Service,
        balancer: Any,
        options: Options,
        loop: asyncio.AbstractEventLoop,
        ended: Callable[[], None],
        poller: Any,
        deadlines: Deadlines,
        clock: Clock,
    ) -> None:
        self.name = service.name
        self.protocol = service.protocol
        self.options = options
        self.loop = loop
        self.stats = ServiceStats(service.name, service.protocol)
        #: the forwarder's clock (`.clock`): cool-downs and connect deadlines run on it
        self.clock = clock
        self.health = PassiveHealth(clock, options.cooldown)
        #: its active health checker, when the service has a health_check (`.health`)
        self.checker: Any = None
        #: the forwarder's: the sockets it watches itself, and its connect deadlines
        self.poller = poller
        self.deadlines = deadlines
        self.listener: Any = None
        #: called whenever a connection or flow of this service ends (drain tracking)
        self.ended = ended
        self.balancer: Any = None
        self.apply(service, balancer)

    def apply(self, service: Service, balancer: Any) -> None:
        """Switch to ``service``: ``balancer`` is the old one updated, or a new one.

        Cannot fail: the caller proved ``balancer`` buildable from ``service``.
        """
        if balancer is not self.balancer:
            self.health.forgive()  # the marks were on the old balancer
        else:
            balancer.update(service.endpoints)
        self.service = service
        self.balancer = balancer
        self.max_connections = service.max_connections or self.options.max_connections
        self.key_of = key_function(service)
        # A key costs a getpeername(); only hash schedulers and affinity read it.
        self.wants_key = bool(balancer.needs_key or service.affinity_timeout)
        self.stats.set_endpoints(service.endpoints)
        self.stats.removed = False

