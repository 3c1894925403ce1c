"""The balancers, by ipvsadm scheduler name, compiled where built.

``IMPLEMENTATION`` says which twins are in use: ``"compiled"`` (lbcore._fast) or
``"pure"`` (set ``LBCORE_NO_EXTENSIONS=1`` to force it, or build without Cython).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from ._extensions import NO_EXTENSIONS
from ._sessions import check_timeout
from .errors import ConfigError
from .models import SCHEDULERS, Endpoint, Service

if TYPE_CHECKING or NO_EXTENSIONS:
    from . import _pure as _twins

    IMPLEMENTATION = "pure"
else:
    try:
        from . import _fast as _twins

        IMPLEMENTATION = "compiled"
    except ImportError:  # not built: a pure install, or a checkout without build_ext
        from . import _pure as _twins

        IMPLEMENTATION = "pure"

RoundRobin = _twins.RoundRobin
WeightedRoundRobin = _twins.WeightedRoundRobin
LeastConnection = _twins.LeastConnection
WeightedLeastConnection = _twins.WeightedLeastConnection
DestinationHash = _twins.DestinationHash
SourceHash = _twins.SourceHash
Maglev = _twins.Maglev
Affinity = _twins.Affinity
# The Maglev slot table itself, for renderers that load it into a kernel.
maglev_table = _twins.maglev_table

__all__ = [
    "IMPLEMENTATION",
    "RoundRobin",
    "WeightedRoundRobin",
    "LeastConnection",
    "WeightedLeastConnection",
    "DestinationHash",
    "SourceHash",
    "Maglev",
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
    "mh": (Maglev, ("table_size",)),
}


def make_balancer(
    scheduler: str,
    endpoints: Iterable[Endpoint] = (),
    *,
    affinity_timeout: int | None = None,
    **options: Any,
) -> Any:
    """A balancer by ipvsadm scheduler name.

    ``options`` go to the balancer's constructor (e.g. ``rng`` for ``rr``); an unknown
    scheduler or option raises ConfigError naming it.  ``affinity_timeout`` (seconds,
    1..86400) wraps the balancer in `Affinity`: ClientIP stickiness with that TTL.

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


def make_balancer_for(service: Service, **options: Any) -> Any:
    """The balancer a Service asks for: its scheduler, endpoints and affinity."""
    return make_balancer(
        service.scheduler,
        service.endpoints,
        affinity_timeout=service.affinity_timeout,
        **options,
    )
