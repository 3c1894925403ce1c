"""The balancers, by ipvsadm scheduler name, compiled where built.

``IMPLEMENTATION`` says which twins are in use: ``"compiled"`` (lbcore._fast) or
``"pure"`` (set ``LBCORE_NO_EXTENSIONS=1`` to force it, or build without Cython);
lbcore._twins makes that choice for every module at once.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Iterable, Literal, overload

from ._shared.affinity_options import check_timeout
from ._twins import IMPLEMENTATION, twin
from .errors import ConfigError
from .models import SCHEDULERS, Endpoint, Service

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

# scheduler name -> (class, the options its constructor takes)
_REGISTRY: dict[str, tuple[Any, tuple[str, ...]]] = {
    "rr": (RoundRobin, ("rng",)),
    "wrr": (WeightedRoundRobin, ("rng",)),
    "lc": (LeastConnection, ()),
    "wlc": (WeightedLeastConnection, ()),
    "dh": (DestinationHash, ("table_size",)),
    "sh": (SourceHash, ("table_size",)),
    "mh": (Maglev, ("table_size", "balance_factor")),
    "p2c": (LeastRequest, ("choice_count", "active_request_bias", "rng")),
    "ring": (RingHash, ("hash", "balance_factor")),
}


@overload
def make_balancer(
    scheduler: str, endpoints: Iterable[Endpoint] = ..., *, affinity_timeout: int, **options: Any
) -> Affinity: ...
@overload
def make_balancer(
    scheduler: Literal["rr"], endpoints: Iterable[Endpoint] = ..., *,
    affinity_timeout: None = ..., rng: random.Random | None = ...,
) -> RoundRobin: ...
@overload
def make_balancer(
    scheduler: Literal["wrr"], endpoints: Iterable[Endpoint] = ..., *,
    affinity_timeout: None = ..., rng: random.Random | None = ...,
) -> WeightedRoundRobin: ...
@overload
def make_balancer(
    scheduler: Literal["lc"], endpoints: Iterable[Endpoint] = ..., *, affinity_timeout: None = ...
) -> LeastConnection: ...
@overload
def make_balancer(
    scheduler: Literal["wlc"], endpoints: Iterable[Endpoint] = ..., *, affinity_timeout: None = ...
) -> WeightedLeastConnection: ...
@overload
def make_balancer(
    scheduler: Literal["dh"], endpoints: Iterable[Endpoint] = ..., *,
    affinity_timeout: None = ..., table_size: int = ...,
) -> DestinationHash: ...
@overload
def make_balancer(
    scheduler: Literal["sh"], endpoints: Iterable[Endpoint] = ..., *,
    affinity_timeout: None = ..., table_size: int = ...,
) -> SourceHash: ...
@overload
def make_balancer(
    scheduler: Literal["mh"], endpoints: Iterable[Endpoint] = ..., *,
    affinity_timeout: None = ..., table_size: int = ..., balance_factor: float | None = ...,
) -> Maglev: ...
@overload
def make_balancer(
    scheduler: Literal["p2c"], endpoints: Iterable[Endpoint] = ..., *,
    affinity_timeout: None = ..., choice_count: int = ..., active_request_bias: float = ...,
    rng: random.Random | int | None = ...,
) -> LeastRequest: ...
@overload
def make_balancer(
    scheduler: Literal["ring"], endpoints: Iterable[Endpoint] = ..., *,
    affinity_timeout: None = ..., hash: Literal["xxh64", "ketama"] = ...,
    balance_factor: float | None = ...,
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
    ``balance_factor`` for ``mh`` and ``ring``); an unknown scheduler or option raises
    ConfigError naming it.  ``affinity_timeout`` (seconds, 1..86400) wraps the balancer
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
    """The balancer a Service asks for: its scheduler, endpoints, affinity and bound."""
    if service.balance_factor is not None:
        options.setdefault("balance_factor", service.balance_factor)
    return make_balancer(
        service.scheduler,
        service.endpoints,
        affinity_timeout=service.affinity_timeout,
        **options,
    )
