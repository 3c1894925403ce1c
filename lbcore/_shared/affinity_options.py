"""Sticky sessions: what both Affinity twins share off the hot path.

The checks of Affinity's options, and the remap that tells the session table which
sessions survive a change of the endpoint set.  The pick never calls in here.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..models import MAX_AFFINITY_TIMEOUT, Endpoint, check_int
from .endpoint_state import endpoint_key, pickable_indices

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "NO_KEY",
    "check_timeout",
    "check_max_entries",
    "check_clock",
    "not_same_twin",
    "check_keyed_by_xxh64",
    "session_remap",
]

#: Sessions one Affinity holds at most before one is evicted.  2**18 sessions cost at
#: most 8 MiB in the compiled table (32 bytes each when full, allocated as clients
#: arrive), so a flood of spoofed source addresses or random cookies cannot grow a
#: process without bound, while a quarter of a million clients idle less than the
#: timeout keep their endpoint (kube-proxy's iptables mode keeps 100 per endpoint:
#: xt_recent ip_list_tot).
DEFAULT_MAX_ENTRIES = 1 << 18
#: The compiled table maps 32 bits of the key hash onto its max_entries / 2 buckets.
MAX_ENTRIES_LIMIT = 2**31 - 1

NO_KEY = (
    "Affinity needs a key: a session sticks to a key (a client address, a cookie value); "
    "use .balancer.pick() for a pick without one"
)


def check_timeout(value: object, field_name: str = "timeout") -> int:
    """Kubernetes ``sessionAffinityConfig.clientIP.timeoutSeconds``: an int in 1..86400."""
    return check_int(field_name, value, 1, MAX_AFFINITY_TIMEOUT)


def check_max_entries(value: object) -> int:
    """The bound on the session table: a positive int that fits a 32-bit session id."""
    return check_int("max_entries", value, 1, MAX_ENTRIES_LIMIT)


def check_clock(value: Any) -> Any:
    """None (the coarse monotonic clock) or a callable returning seconds."""
    if value is not None and not callable(value):
        raise ConfigError("clock", value, "must be None or a callable returning seconds as a float")
    return value


def not_same_twin(balancer: object, twin: str) -> ConfigError:
    """The error for wrapping a balancer of the other twin (or no balancer at all)."""
    return ConfigError(
        "balancer", balancer,
        f"is not a balancer of {twin}, the twin of this Affinity; "
        "make_balancer(scheduler, endpoints, affinity_timeout=T) builds a matching pair",
    )


def check_keyed_by_xxh64(balancer: Any) -> None:
    """Refuse a balancer that hashes keys otherwise than lbcore's XXH64 (a ketama ring).

    Affinity keys its sessions by `key_hash` and hands that hash to the wrapped
    balancer on a miss, so a ketama ring would place new keys by XXH64, not where
    uhashring places them: an error, never a silent change of placement.
    """
    if getattr(balancer, "hash", "xxh64") != "xxh64":
        raise ConfigError(
            "hash", balancer.hash,
            "cannot be wrapped in Affinity: sessions are keyed by lbcore's XXH64, so new keys "
            "would not land where uhashring puts them; use hash='xxh64' with affinity",
        )


def session_remap(
    old_endpoints: tuple[Endpoint, ...],
    old_failed: frozenset,
    endpoints: tuple[Endpoint, ...],
    failed: frozenset,
) -> list[int] | None:
    """Where each old endpoint index goes after a change, or None if nowhere changes.

    ``remap[i]`` is the new index of the endpoint at old index ``i`` if it may still take
    new connections (kept by address; usable by condition, weight > 0, not failed), else
    -1: its sessions die.  Only old pickable indices can hold sessions, so the rest map
    to -1 and do not count as a change.
    """
    new_index = {endpoint_key(endpoints[i]): i for i in pickable_indices(endpoints, failed)}
    remap = [-1] * len(old_endpoints)
    unchanged = True
    for i in pickable_indices(old_endpoints, old_failed):
        remap[i] = new_index.get(endpoint_key(old_endpoints[i]), -1)
        unchanged = unchanged and remap[i] == i
    return None if unchanged else remap
