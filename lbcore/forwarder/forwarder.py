"""The Forwarder: listeners, service runtimes and their live changes.

An update is planned, then applied.  Planning validates the whole new service set,
builds every balancer that changes and binds every new listening socket; any error
there raises ConfigError and closes what the plan bound, so nothing is half-applied.
Applying only swaps references and cannot fail.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Iterable

from ..balancers import make_balancer_for
from ..errors import ConfigError
from ..models import Service, join_host_port
from .clock import Clock, LoopClock
from .deadlines import Deadlines
from .health import ForwarderHealth
from .listener import Listener
from .options import Options
from .poller import make_poller
from .service import ServiceRuntime, balancer_config

__all__ = ["Forwarder"]

log = logging.getLogger("lbcore.forwarder")

#: A connection is closed after IDLE_TICKS sweeps, timeout / IDLE_TICKS seconds apart,
#: that saw no byte move: silent between the timeout and 1.25 times it.
IDLE_TICKS = 4


@dataclass
class _Step:
    service: Service
    runtime: ServiceRuntime | None
    balancer: Any
    listener: Listener


class Forwarder:
    """A userspace L4 load balancer for a set of Services (TCP and UDP).

    >>> import asyncio
    >>> from lbcore import Endpoint, Service
    >>> async def main():
    ...     web = Service("web", "127.0.0.1", 80, listen="127.0.0.1:0",
    ...                   endpoints=[Endpoint("127.0.0.1", 8080)])
    ...     fw = Forwarder([web], connect_timeout=0.5)
    ...     await fw.start()
    ...     host, port = fw.addresses["web"]   # port 0: the port the kernel chose
    ...     active = fw.stats()["web"]["active"]
    ...     await fw.stop()
    ...     return host, port > 0, active
    >>> asyncio.run(main())
    ('127.0.0.1', True, 0)

    ``options`` are `Options`.  ``clock`` times every timeout (see
    `lbcore.forwarder.clock`): by default the event loop's; a test gives a `ManualClock`
    and moves it, and the services' health checks then run on it too.
    """

    def __init__(
        self, services: Iterable[Service], *, clock: Clock | None = None, **options: Any
    ) -> None:
        self.options = Options.from_kwargs(options)
        self._clock: Clock | None = clock
        self._initial = tuple(services)
        self._runtimes: dict[str, ServiceRuntime] = {}
        self._draining: list[ServiceRuntime] = []  # removed services with live connections
        self._listeners: set[Listener] = set()
        self._serving: set[asyncio.Task] = set()
        self._sweepers: dict[str, Any] = {}  # protocol -> its sweep's timer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: Any = None
        self._deadlines: Deadlines | None = None
        self._drained: asyncio.Event | None = None
        self._stopping = False
        self._health = ForwarderHealth(clock)  # the services' active health checks
        #: service name -> (host, port) actually bound (port 0 resolved)
        self.addresses: dict[str, tuple[str, int]] = {}

    async def start(self) -> None:
        """Bind one listener per service and start serving; ConfigError if one cannot be."""
        if self._loop is not None:
            raise RuntimeError("the forwarder was started already")
        self._loop = asyncio.get_running_loop()
        if self._clock is None:
            self._clock = LoopClock(self._loop)
        self._poller = make_poller(self._loop)
        self._deadlines = Deadlines(self._clock)
        self._drained = asyncio.Event()
        self.update(self._initial)
        self._health.start()
        await self._started()
        self._sweep("tcp", self.options.idle_timeout)
        self._sweep("udp", self.options.udp_idle_timeout)

    async def _started(self) -> None:
        while self._serving:
            await asyncio.gather(*self._serving)

    def update(self, services: Iterable[Service]) -> None:
        """Switch to a new service set, live; O(services + changed endpoints).

        New connections follow the new set at once; established ones are never cut:
        removed endpoints and services drain.  A service whose listen address changes is
        rebound.  Raises ConfigError (naming the service and field) and changes nothing
        if any service is bad or any new address cannot be bound.
        """
        if self._loop is None or self._stopping:
            raise RuntimeError("update() needs a started forwarder that is not stopping")
        self._apply(self._plan(services))

    def _plan(self, services: Iterable[Service]) -> list[_Step]:
        services = list(services)
        names: dict[str, int] = {}
        addresses: dict[tuple, str] = {}
        for i, service in enumerate(services):
            if not isinstance(service, Service):
                raise ConfigError(f"services[{i}]", service, "is not a Service")
            where = f"services[{service.name}]"
            if service.name in names:
                raise ConfigError(
                    f"{where}.name", service.name, "is used twice; one name per service"
                )
            names[service.name] = i
            if service.protocol not in ("tcp", "udp"):
                raise ConfigError(
                    f"{where}.protocol", service.protocol,
                    "is not supported by the userspace forwarder (tcp, udp); render it for IPVS",
                )
            host, port = service.listen_address
            if port:
                key = (service.protocol, host, port)
                if key in addresses:
                    raise ConfigError(
                        f"{where}.listen", join_host_port(host, port),
                        f"is also the {service.protocol} address of service {addresses[key]}",
                    )
                addresses[key] = service.name
        # Listeners their services keep are not up for takeover by another service.
        kept = {self._own_listener(s) for s in services} - {None}
        steps: list[_Step] = []
        bound: list[Listener] = []
        try:
            for service in services:
                steps.append(self._plan_service(service, kept, bound))
        except BaseException:
            for listener in bound:
                listener.close()
            raise
        return steps

    def _runtime_for(self, service: Service) -> ServiceRuntime | None:
        runtime = self._runtimes.get(service.name)
        if runtime is not None and runtime.protocol != service.protocol:
            return None  # a tcp service turned udp is a new service
        return runtime

    def _own_listener(self, service: Service) -> Listener | None:
        """The listener ``service`` already has, if its listen address is unchanged."""
        runtime = self._runtime_for(service)
        if runtime is not None and service.listen_address in (
            runtime.listener.configured, runtime.listener.address
        ):
            return runtime.listener
        return None

    def _plan_service(self, service: Service, kept: set, bound: list[Listener]) -> _Step:
        where = f"services[{service.name}]"
        runtime = self._runtime_for(service)
        if runtime is not None and runtime.service == service:
            return _Step(service, runtime, runtime.balancer, runtime.listener)
        try:
            # Built even when the old balancer is kept and updated: building from the
            # same endpoints proves that the update cannot fail halfway through a reload.
            balancer = make_balancer_for(service)
        except ConfigError as exc:
            raise exc.within(where) from None
        if runtime is not None and balancer_config(runtime.service) == balancer_config(service):
            balancer = runtime.balancer  # keeps connection counts and sticky sessions
        listener = self._own_listener(service) or self._listener_at(
            service.protocol, service.listen_address, kept
        )
        if listener is None:
            listener = Listener(service.protocol, service.listen_address, f"{where}.listen")
            bound.append(listener)
        return _Step(service, runtime, balancer, listener)

    def _listener_at(
        self, protocol: str, configured: tuple[str, int], kept: set
    ) -> Listener | None:
        """A listener of ours bound at a fixed address that its service leaves (takeover)."""
        if configured[1] == 0:
            return None
        for listener in self._listeners - kept:
            if listener.protocol == protocol and not listener.closed and configured in (
                listener.configured, listener.address
            ):
                return listener
        return None

    def _apply(self, steps: list[_Step]) -> None:
        loop, clock = self._loop, self._clock
        assert loop is not None and clock is not None
        runtimes: dict[str, ServiceRuntime] = {}
        for step in steps:
            runtime = step.runtime
            if runtime is None:
                runtime = ServiceRuntime(
                    step.service, step.balancer, self.options, loop, self._ended,
                    self._poller, self._deadlines, clock,
                )
            elif runtime.service != step.service:
                runtime.apply(step.service, step.balancer)
            runtime.listener = step.listener
            step.listener.runtime = runtime
            runtime.stats.listen = join_host_port(*step.listener.address)
            runtimes[runtime.name] = runtime
        for name, runtime in self._runtimes.items():
            if runtimes.get(name) is not runtime:
                runtime.stats.removed = True
                runtime.listener = None
                if runtime.stats.live:
                    self._draining.append(runtime)
        listeners = {step.listener for step in steps}
        for listener in self._listeners - listeners:
            listener.release()
        self._listeners = listeners | {l for l in self._listeners if not l.closed}
        for listener in listeners:
            if listener.loop is None and listener.udp is None and not listener.starting:
                task = loop.create_task(listener.serve(loop, clock))
                self._serving.add(task)
                task.add_done_callback(self._serving.discard)
        self._runtimes = runtimes
        self._health.update(runtimes)
        self.addresses = {name: rt.listener.address for name, rt in runtimes.items()}
        self._ended()

    def _ended(self) -> None:
        """A connection or flow ended: forget drained services; see whether stop() may go on."""
        if self._draining:
            self._draining = [rt for rt in self._draining if rt.stats.live]
        if self._stopping and not self._any_live("tcp"):
            assert self._drained is not None
            self._drained.set()

    def _all_runtimes(self) -> list[ServiceRuntime]:
        return list(self._runtimes.values()) + self._draining

    def _live(self, protocol: str) -> list[Any]:
        return [c for rt in self._all_runtimes() if rt.protocol == protocol for c in rt.stats.live]

    def _any_live(self, protocol: str) -> bool:
        """Whether any connection (flow) of ``protocol`` is live; O(services).

        `_ended` asks on every connection end while stopping: listing them all there
        would make a drain of n connections O(n²).
        """
        return any(rt.stats.live for rt in self._all_runtimes() if rt.protocol == protocol)

    def _sweep(self, protocol: str, timeout: float) -> None:
        """Every timeout/IDLE_TICKS seconds: close what has been silent for the timeout.

        Progress is read from the byte counters, so the data path never touches a clock
        or an idle flag.
        """
        for conn in self._live(protocol):
            moved = conn.bytes_in + conn.bytes_out
            if moved != conn.seen:
                conn.seen = moved
                conn.idle = 0
            else:
                conn.idle += 1
                if conn.idle >= IDLE_TICKS:
                    conn.close_idle()
        assert self._clock is not None
        self._sweepers[protocol] = self._clock.call_later(
            timeout / IDLE_TICKS, self._sweep, protocol, timeout
        )

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per service and per endpoint: active, total, failures, bytes in and out.

        Per service also ``panic`` (its balancer ignores failure marks: fewer endpoints
        than its ``panic_threshold`` are healthy) and ``panic_picks`` (picks made so).

        Plain data (dicts, numbers, strings, booleans); services removed by an update
        appear with ``removed: True`` while their connections drain.  O(connections).
        """
        result = {name: _snapshot(rt) for name, rt in self._runtimes.items()}
        for rt in self._draining:
            name = rt.name if rt.name not in result else f"{rt.name} ({rt.protocol}, removed)"
            result[name] = _snapshot(rt)
        return result

    async def stop(self) -> None:
        """Stop accepting, let connections finish within ``drain_timeout``, close the rest."""
        if self._loop is None or self._stopping:
            return
        self._stopping = True
        await self._started()
        # 1. Stop accepting: TCP listeners close; UDP listeners take no new clients.
        for listener in self._listeners:
            listener.release()
        # 2. Let established TCP connections finish, up to the drain deadline.
        assert self._drained is not None and self._clock is not None
        deadline = self._clock.call_later(self.options.drain_timeout, self._drained.set)
        self._ended()
        await self._drained.wait()
        deadline.cancel()
        if self._any_live("tcp"):
            log.warning("drain deadline: closing %d connections", len(self._live("tcp")))
        # 3. Past the deadline: drop what is left, and end every UDP flow.
        for conn in self._live("tcp"):
            conn.abort()
        for flow in self._live("udp"):
            flow.close()
        for listener in self._listeners:
            listener.close()
        # 4. Timers: the idle sweeps, the health checks and the cool-downs.
        for timer in self._sweepers.values():
            timer.cancel()
        await self._health.stop()
        for rt in self._all_runtimes():
            rt.health.forgive()
        # Aborted transports report connection_lost on the next loop iterations.
        for _ in range(1000):
            if not (self._any_live("tcp") or self._any_live("udp")):
                break
            await asyncio.sleep(0.001)
        self._poller.close()


def _snapshot(rt: Any) -> dict[str, Any]:
    """A service's stats with its balancer's panic state (Envoy's ``lb_healthy_panic``)."""
    snapshot = rt.stats.snapshot()
    balancer = rt.balancer
    snapshot["panic"] = bool(balancer is not None and balancer.panic)
    snapshot["panic_picks"] = 0 if balancer is None else balancer.panic_picks
    return snapshot
