"""The balancers, by ipvsadm scheduler name, compiled where built.

``IMPLEMENTATION`` says which twins are in use: ``"compiled"`` (lbcore._fast) or
``"pure"`` (set ``LBCORE_NO_EXTENSIONS=1`` to force it, or build without Cython);
lbcore._twins makes that choice for every module at once.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal, overload

from ._shared.affinity_options import check_timeout
from ._twins import IMPLEMENTATION, twin
from .errors import ConfigError
from .models import SCHEDULERS, SLOW_START_SCHEDULERS, Endpoint, Service

if TYPE_CHECKING:  # the compiled twins have the pure twins' types (their .pyi stubs say so)
    from ._pure.affinity import Affinity
    from ._pure.balancer import Balancer
    from ._pure.dh import DestinationHash
    from ._pure.lc import LeastConnection, WeightedLeastConnection
    from ._pure.least_request import LeastRequest
    from ._pure.maglev import Maglev
    from ._pure.maglev_table import maglev_table
    from ._pure.ring import RingHash
    from ._pure.rr import RoundRobin
    from ._pure.sh import SourceHash
    from ._pure.wrr import WeightedRoundRobin
else:
    Affinity = twin("affinity").Affinity
    Balancer = twin("balancer").Balancer
    DestinationHash = twin("dh").DestinationHash
    LeastConnection = twin("lc").LeastConnection
    WeightedLeastConnection = twin("lc").WeightedLeastConnection
    LeastRequest = twin("least_request").LeastRequest
    Maglev = twin("maglev").Maglev
    # The Maglev slot table itself, for renderers that load it into a kernel.
    maglev_table = twin("maglev_table").maglev_table
    RingHash = twin("ring").RingHash
    RoundRobin = twin("rr").RoundRobin
    SourceHash = twin("sh").SourceHash
    WeightedRoundRobin = twin("wrr").WeightedRoundRobin

__all__ = [
    "IMPLEMENTATION",
    "Balancer",
    "RoundRobin",
    "WeightedRoundRobin",
    "LeastConnection",
    "WeightedLeastConnection",
    "DestinationHash",
    "SourceHash",
    "Maglev",
    "LeastRequest",
    "RingHash",
    "Affinity",
    "maglev_table",
    "make_balancer",
    "make_balancer_for",
]

# The options of the schedulers that ramp (DESIGN.md: slow start on wrr, lc, wlc, p2c).
_SLOW_START = ("slow_start", "slow_start_aggression", "slow_start_min_weight", "clock")
# scheduler name -> (class, the options its constructor takes)
_REGISTRY: dict[str, tuple[Any, tuple[str, ...]]] = {
    "rr": (RoundRobin, ("rng", "panic_threshold")),
    "wrr": (WeightedRoundRobin, ("rng", *_SLOW_START, "panic_threshold")),
    "lc": (LeastConnection, (*_SLOW_START, "panic_threshold")),
    "wlc": (WeightedLeastConnection, (*_SLOW_START, "panic_threshold")),
    "dh": (DestinationHash, ("table_size", "panic_threshold")),
    "sh": (SourceHash, ("table_size", "panic_threshold")),
    "mh": (Maglev, ("table_size", "balance_factor", "panic_threshold")),
    "p2c": (LeastRequest, ("choice_count", "active_request_bias", "rng", *_SLOW_START, "panic_threshold")),
    "ring": (RingHash, ("hash", "balance_factor", "panic_threshold")),
}


@overload
def make_balancer(
    scheduler: str, endpoints: Iterable[Endpoint] = ..., *, affinity_timeout: int, **options: Any
) -> Affinity: ...
@overload
def make_balancer(
    scheduler: Literal["rr"], endpoints: Iterable[Endpoint] = ..., *,
    affinity_timeout: None = ..., rng: random.Random | None = ..., panic_threshold: float | None = ...,
) -> RoundRobin: ...
@overload
def make_balancer(
    scheduler: Literal["wrr"], endpoints: Iterable[Endpoint] = ..., *,
    affinity_timeout: None = ..., rng: random.Random | None = ..., slow_start: float | None = ...,
    slow_start_aggression: float = ..., slow_start_min_weight: float = ...,
    clock: Callable[[], float] | None = ..., panic_threshold: float | None = ...,
) -> WeightedRoundRobin: ...
@overload
def make_balancer(
    scheduler: Literal["lc"], endpoints: Iterable[Endpoint] = ..., *, affinity_timeout: None = ...,
    slow_start: float | None = ..., slow_start_aggression: float = ...,
    slow_start_min_weight: float = ..., clock: Callable[[], float] | None = ...,
    panic_threshold: float | None = ...,
) -> LeastConnection: ...
@overload
def make_balancer(
    scheduler: Literal["wlc"], endpoints: Iterable[Endpoint] = ..., *, affinity_timeout: None = ...,
    slow_start: float | None = ..., slow_start_aggression: float = ...,
    slow_start_min_weight: float = ..., clock: Callable[[], float] | None = ...,
    panic_threshold: float | None = ...,
) -> WeightedLeastConnection: ...
@overload
def make_balancer(
    scheduler: Literal["dh"], endpoints: Iterable[Endpoint] = ..., *,
    affinity_timeout: None = ..., table_size: int = ..., panic_threshold: float | None = ...,
) -> DestinationHash: ...
@overload
def make_balancer(
    scheduler: Literal["sh"], endpoints: Iterable[Endpoint] = ..., *,
    affinity_timeout: None = ..., table_size: int = ..., panic_threshold: float | None = ...,
) -> SourceHash: ...
@overload
def make_balancer(
    scheduler: Literal["mh"], endpoints: Iterable[Endpoint] = ..., *,
    affinity_timeout: None = ..., table_size: int = ..., balance_factor: float | None = ...,
    panic_threshold: float | None = ...,
) -> Maglev: ...
@overload
def make_balancer(
    scheduler: Literal["p2c"], endpoints: Iterable[Endpoint] = ..., *,
    affinity_timeout: None = ..., choice_count: int = ..., active_request_bias: float = ...,
    rng: random.Random | int | None = ..., slow_start: float | None = ...,
    slow_start_aggression: float = ..., slow_start_min_weight: float = ...,
    clock: Callable[[], float] | None = ..., panic_threshold: float | None = ...,
) -> LeastRequest: ...
@overload
def make_balancer(
    scheduler: Literal["ring"], endpoints: Iterable[Endpoint] = ..., *,
    affinity_timeout: None = ..., hash: Literal["xxh64", "ketama"] = ...,
    balance_factor: float | None = ..., panic_threshold: float | None = ...,
) -> RingHash: ...
@overload
def make_balancer(
    scheduler: str, endpoints: Iterable[Endpoint] = ..., *,
    affinity_timeout: int | None = ..., **options: Any,
) -> Balancer: ...
def make_balancer(
    scheduler: str,
    endpoints: Iterable[Endpoint] = (),
    *,
    affinity_timeout: int | None = None,
    **options: Any,
) -> Balancer:
    """A balancer by ipvsadm scheduler name.

    ``options`` go to the balancer's constructor (e.g. ``rng`` for ``rr``,
    ``balance_factor`` for ``mh`` and ``ring``, ``slow_start`` for ``wrr``, ``lc``,
    ``wlc`` and ``p2c``, ``panic_threshold`` for all); an unknown scheduler or option
    raises ConfigError naming it.  ``affinity_timeout`` (seconds, 1..86400) wraps the balancer
    in `Affinity`: ClientIP stickiness with that TTL.

    >>> from lbcore import Endpoint
    >>> make_balancer("rr", [Endpoint("10.0.0.1", 80)]).scheduler
    'rr'
    >>> make_balancer("rr", [Endpoint("10.0.0.1", 80)], affinity_timeout=10800).timeout
    10800
    """
    if scheduler not in SCHEDULERS:
        raise ConfigError("scheduler", scheduler, f"is not one of {', '.join(SCHEDULERS)}")
    cls, accepted = _REGISTRY[scheduler]
    if scheduler not in SLOW_START_SCHEDULERS and "slow_start" in options:
        if options["slow_start"]:
            raise ConfigError(
                "slow_start", options["slow_start"],
                f"does not apply to scheduler {scheduler!r}; slow start ramps "
                f"{', '.join(SLOW_START_SCHEDULERS)}",
            )
        del options["slow_start"]  # None or 0: off, as for every scheduler
    for name in options:
        if name not in accepted:
            raise ConfigError(
                name, options[name],
                f"is not an option of {scheduler}; it takes: {', '.join(accepted) or 'none'}",
            )
    if affinity_timeout is not None:
        check_timeout(affinity_timeout, "affinity_timeout")
    balancer = cls(endpoints, **options)
    return balancer if affinity_timeout is None else Affinity(balancer, affinity_timeout)


def make_balancer_for(service: Service, **options: Any) -> Balancer:
    """The balancer a Service asks for: its scheduler, endpoints, affinity, bound, slow
    start and panic threshold."""
    if service.balance_factor is not None:
        options.setdefault("balance_factor", service.balance_factor)
    if service.slow_start:
        options.setdefault("slow_start", service.slow_start)
    if service.panic_threshold is not None:
        options.setdefault("panic_threshold", service.panic_threshold)
    return make_balancer(
        service.scheduler,
        service.endpoints,
        affinity_timeout=service.affinity_timeout,
        **options,
    )
