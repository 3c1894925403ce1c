"""lbcore: where each connection of a Kubernetes-style Service goes.

Models (`Endpoint`, `Service`), balancers named after IPVS schedulers (compiled where
built), and one seeded key hash shared by every process of a fleet.  Importing lbcore
is cheap: it loads no asyncio, no YAML and no renderer.
"""

from .balancers import (
    IMPLEMENTATION,
    Affinity,
    LeastConnection,
    LeastRequest,
    RingHash,
    RoundRobin,
    WeightedLeastConnection,
    WeightedRoundRobin,
    DestinationHash,
    Maglev,
    SourceHash,
    make_balancer,
    make_balancer_for,
)
from .errors import ConfigError, LbcoreError, NoEndpointsError
from .hashing import HASH_SEED, key_hash
from .models import SCHEDULERS, Endpoint, HealthCheck, Service, usable_endpoints

__version__ = "0.1.0"

__all__ = [
    "Endpoint",
    "Service",
    "HealthCheck",
    "SCHEDULERS",
    "usable_endpoints",
    "RoundRobin",
    "WeightedRoundRobin",
    "LeastConnection",
    "WeightedLeastConnection",
    "Affinity",
    "DestinationHash",
    "SourceHash",
    "Maglev",
    "LeastRequest",
    "RingHash",
    "make_balancer",
    "make_balancer_for",
    "key_hash",
    "HASH_SEED",
    "IMPLEMENTATION",
    "ConfigError",
    "NoEndpointsError",
    "LbcoreError",
]
