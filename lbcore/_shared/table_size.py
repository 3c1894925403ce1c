"""The ``table_size`` of the hash schedulers (dh, sh, mh), checked in one place for both twins.

- dh and sh: a power of two from 16 to 1048576 buckets, default 256 — IPVS's
  ``CONFIG_IP_VS_SH_TAB_BITS`` (range 4..20, default 8; ``IP_VS_DH_TAB_BITS`` is 8).
- mh (Maglev): a prime up to 5000011, default 65537 — the paper's and Envoy's default,
  Envoy's documented maximum.

A table must also hold the endpoints it is given; the ``check_*_fit`` functions say so
with an error naming ``table_size``, raised by ``update()`` before anything changes.
"""

from __future__ import annotations

from typing import Callable

from ..errors import ConfigError

__all__ = [
    "BUCKETS_DEFAULT",
    "MAGLEV_DEFAULT",
    "check_bucket_table_size",
    "check_buckets_fit",
    "check_maglev_table_size",
    "check_maglev_fit",
    "is_prime",
]

BUCKETS_DEFAULT = 256
_BUCKETS_MIN, _BUCKETS_MAX = 2**4, 2**20
MAGLEV_DEFAULT = 65537
_MAGLEV_MAX = 5000011


def _checked(value: object, valid: str, ok: Callable[[int], bool]) -> int:
    if type(value) is not int:  # bool is an int subclass: refuse True as a size
        raise ConfigError("table_size", value, f"must be an integer: {valid}")
    if not ok(value):
        raise ConfigError("table_size", value, f"is not {valid}")
    return value


def check_bucket_table_size(value: object) -> int:
    """A dh/sh table size: a power of two from 16 to 1048576.

    >>> check_bucket_table_size(1024)
    1024
    >>> check_bucket_table_size(300)
    Traceback (most recent call last):
    ...
    lbcore.errors.ConfigError: table_size: 300 is not a power of two from 16 to 1048576 (IPVS: 2**4..2**20 buckets)
    """
    return _checked(value, "a power of two from 16 to 1048576 (IPVS: 2**4..2**20 buckets)",
                    lambda size: _BUCKETS_MIN <= size <= _BUCKETS_MAX and not size & (size - 1))


def check_buckets_fit(scheduler: str, size: int, turns: tuple[int, ...]) -> None:
    """Refuse a bucket table too small to give every endpoint its ``turns`` buckets.

    IPVS tiles anyway and silently leaves the last destinations out ("must be large
    enough to fit all destinations multiplied by their weights", Kconfig); here it is an
    error, so no endpoint is quietly never picked.
    """
    total = sum(turns)
    if total > size:
        needed = 1 << (total - 1).bit_length()
        per = "one bucket" if scheduler == "dh" else "its weight in buckets (at least one)"
        raise ConfigError(
            "table_size", size,
            f"is too small for {len(turns)} endpoints needing {total} buckets "
            f"({scheduler} gives each endpoint {per}); use table_size={needed} or more",
        )


def is_prime(n: int) -> bool:
    """Trial division; table sizes are at most 5000011."""
    if n < 2 or n % 2 == 0:
        return n == 2
    d = 3
    while d * d <= n:
        if n % d == 0:
            return False
        d += 2
    return True


def check_maglev_table_size(value: object) -> int:
    """A Maglev table size: a prime up to 5000011.

    >>> check_maglev_table_size(65537)
    65537
    >>> check_maglev_table_size(65536)
    Traceback (most recent call last):
    ...
    lbcore.errors.ConfigError: table_size: 65536 is not a prime up to 5000011 (e.g. 65537, 655373)
    """
    return _checked(value, "a prime up to 5000011 (e.g. 65537, 655373)",
                    lambda size: size <= _MAGLEV_MAX and is_prime(size))


def check_maglev_fit(size: int, endpoints: int) -> None:
    """Refuse a Maglev table that is not larger than the number of endpoints.

    The paper asks for M > 100 * N to keep the imbalance under 1 %; below N + 1 some
    endpoint would own no slot at all.
    """
    if endpoints >= size:
        raise ConfigError(
            "table_size", size,
            f"is too small for {endpoints} endpoints: Maglev needs a prime table_size greater "
            f"than the number of endpoints (at least 100 times it for an imbalance under 1 %)",
        )
