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
    from ._pure import Affinity, LeastConnection, RoundRobin, WeightedLeastConnection, WeightedRoundRobin

    IMPLEMENTATION = "pure"
else:
    try:
        from ._fast import Affinity, LeastConnection, RoundRobin, WeightedLeastConnection, WeightedRoundRobin

        IMPLEMENTATION = "compiled"
    except ImportError:  # not built: a pure install, or a checkout without build_ext
        from ._pure import Affinity, LeastConnection, RoundRobin, WeightedLeastConnection, WeightedRoundRobin

        IMPLEMENTATION = "pure"

__all__ = [
    "IMPLEMENTATION",
    "RoundRobin",
    "WeightedRoundRobin",
    "LeastConnection",
    "WeightedLeastConnection",
    "Affinity",
    "make_balancer",
    "make_balancer_for",
]

# scheduler name -> (class, the options its constructor takes)
_REGISTRY: dict[str, tuple[Any, tuple[str, ...]]] = {
    "rr": (RoundRobin, ("rng",)),
    "wrr": (WeightedRoundRobin, ("rng",)),
    "lc": (LeastConnection, ()),
    "wlc": (WeightedLeastConnection, ()),
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
    if scheduler not in _REGISTRY:
        raise ConfigError(
            "scheduler", scheduler, f"is not implemented yet; available: {', '.join(_REGISTRY)}"
        )
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
