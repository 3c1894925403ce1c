"""Which endpoint owns each slot of a Service's kernel table, for `lbcore.render.nft`.

In nftables a Service's connection picks a number in the kernel, ``numgen random`` (rr,
wrr) or ``jhash`` of the client or the destination (sh, dh, mh), modulo the Service's
slot count S, and looks the endpoint up by (vip, protocol, port, slot).  This module
decides the hash, S and the owner of every slot; the renderer only writes them down.

- ``rr``: one slot per endpoint that takes new connections (`chosen_endpoints`: usable
  by condition, weight > 0, sorted by address), so each gets exactly 1/n.
- ``wrr``: the same endpoints, each owning a run of slots as long as its weight, the
  weights divided by their gcd.  When they still add up to more than
  `slot_cap` (max(2048, 2n)), they are apportioned to that many slots by largest
  remainder: every share is then within 1/2048 of its weight's share (the issue asks
  for 1/1024), and an endpoint whose share is below one slot may own none.
- ``sh`` / ``dh``: every *listed* endpoint owns a run of slots (sh: its weight, at least
  1, apportioned like wrr; dh: one each, IPVS dh ignores weights), sorted by address so
  that every node builds the same table whatever order the endpoints come in.  As in
  lbcore's own SourceHash/DestinationHash, the table depends on the endpoint set alone;
  a slot whose owner takes no new connections (not ready, quiesced) goes to the owner
  of the next slot that does, cyclically (IPVS ``sh-fallback``).  So a readiness flip
  moves exactly that endpoint's clients and they come back with it.
- ``mh``: lbcore's own Maglev table (`lbcore.balancers.maglev_table`, the table
  ``Maglev._layout`` builds: every listed endpoint by address with its weight, at least
  1) with the same fallback.  Its size M (`maglev_size`) must not follow every change of
  the endpoint count, or every client would move with it (measured: 90 % of them when
  M went from 1009 to 907 for 10 -> 9 endpoints).  So M is one of IPVS mh's table sizes,
  the largest primes below powers of two (251, 509, 1021, 2039, 4093, ...): the
  smallest that is at least 200 times the listed endpoints.  It changes only when the
  count crosses a doubling (1, 2, 5, 10, 20, 40, 81, ...), and those changes move most
  clients once.  200 times, not the paper's 100 (which bounds the imbalance by 1 %):
  removing 1 of 10 endpoints moved 14-20 % of the slots of a 1021-slot table for the
  test's endpoints (12.3 % on average over random sets), 11-12.5 % of a 2039-slot one;
  the ideal is 10 %, and ``jhash ... mod n`` re-rendered for 9 moves 28-50 % depending
  on which one leaves.  The cost is one map element per slot: 2,039 for a 10-endpoint
  Service, 20,390,000 for 10,000 of them, which nft 1.0.6 cannot load in one
  transaction (it holds about 2.1 KB per element while parsing: 430 MB and 4.4 s for
  the 204,000 elements of 100 such Services, bench/README.md).  mh is for the Services
  that need it, not for all of them.

Sticky Services (ClientIP affinity) remember an endpoint *id* per client, not its
address: `endpoint_ids` gives each endpoint a 32-bit id that depends on its address
alone, so an id stays valid while its endpoint stays, and lookups of a removed one fail.
"""

from __future__ import annotations

import hashlib
import math
from typing import NamedTuple, Sequence

from ..balancers import maglev_table
from .._shared.table_size import is_prime
from ..models import Endpoint, Service, usable_endpoints
from ._iptables_names import chosen_endpoints

__all__ = ["SlotTable", "slot_table", "slot_count", "slot_cap", "maglev_size", "endpoint_ids",
           "HASHES"]

#: The expression each scheduler hashes, by the name the renderer gives it.
HASHES = {"rr": "random", "wrr": "random", "sh": "source", "dh": "destination", "mh": "source"}
#: ``sh-port``/``mh-port`` (ipvsadm -b) add the client's port to the hash.
_PORT_FLAGS = frozenset(("sh-port", "mh-port"))
_MIN_CAP = 2048


class SlotTable(NamedTuple):
    """``owners[s]`` takes the new connections that land in slot s, hashed by ``hash``
    ("random", "source", "source-port" or "destination"); no owners: none usable."""

    hash: str
    owners: list[Endpoint]


def slot_table(service: Service, scheduler: str) -> SlotTable:
    """The slot table of ``service`` under ``scheduler`` (one nft can run); O(e log e + S).

    >>> from lbcore import Endpoint, Service
    >>> web = Service("web", "10.96.0.10", 80, scheduler="wrr",
    ...               endpoints=[Endpoint("10.1.0.2", 80, weight=2), Endpoint("10.1.0.1", 80)])
    >>> table = slot_table(web, "wrr")
    >>> table.hash, [e.ip for e in table.owners]
    ('random', ['10.1.0.1', '10.1.0.2', '10.1.0.2'])
    """
    kind = _hash_of(service, scheduler)
    if scheduler in ("rr", "wrr"):
        chosen = chosen_endpoints(service)
        if scheduler == "rr" or len(chosen) < 2:
            return SlotTable(kind, chosen)
        return SlotTable(kind, _tiled(chosen, _split([e.weight for e in chosen], slot_cap(len(chosen)))))
    listed = sorted(service.endpoints, key=_address)
    takes = _taking_new(service)
    if not takes:
        return SlotTable(kind, [])
    if scheduler == "mh":
        key = tuple((e.address, max(e.weight, 1)) for e in listed)
        entries = list(maglev_table(maglev_size(len(listed)), key))
    else:
        turns = [1] * len(listed) if scheduler == "dh" else [max(e.weight, 1) for e in listed]
        entries = _tiled(range(len(listed)), _split(turns, slot_cap(len(listed))))
    return SlotTable(kind, _fallen_back([listed[i] for i in entries], takes))


def slot_count(service: Service, scheduler: str) -> tuple[str, int]:
    """(hash, S) of `slot_table` without building it: O(e), and O(1) for an all-ready
    rr Service.  S is 0 when no endpoint takes new connections."""
    kind = _hash_of(service, scheduler)
    endpoints = service.endpoints
    if scheduler in ("rr", "wrr"):
        if all(map(_ready, endpoints)) and all(map(_weight, endpoints)):
            chosen: Sequence[Endpoint] = endpoints
        else:
            chosen = chosen_endpoints(service)
        if scheduler == "rr" or len(chosen) < 2:
            return kind, len(chosen)
        return kind, sum(_split([e.weight for e in chosen], slot_cap(len(chosen))))
    if not _taking_new(service):
        return kind, 0
    if scheduler == "mh":
        return kind, maglev_size(len(endpoints))
    if scheduler == "dh":
        return kind, len(endpoints)
    return kind, sum(_split([max(e.weight, 1) for e in endpoints], slot_cap(len(endpoints))))


def slot_cap(n: int) -> int:
    """The most slots a weighted table of ``n`` endpoints gets before its weights are
    apportioned: max(2048, 2n)."""
    return max(_MIN_CAP, 2 * n)


def maglev_size(n: int) -> int:
    """The Maglev table size for ``n`` listed endpoints: the smallest of IPVS mh's
    sizes (the largest prime below 2**k, k >= 8) that is at least 200 n.

    >>> maglev_size(1), maglev_size(5), maglev_size(10), maglev_size(11)
    (251, 1021, 2039, 4093)
    """
    k = 8
    while True:
        size = (1 << k) - 1
        while not is_prime(size):
            size -= 1
        if size >= 200 * n:
            return size
        k += 1


def endpoint_ids(endpoints: Sequence[Endpoint]) -> dict[str, int]:
    """A 32-bit id per endpoint address, stable while the address stays listed.

    The id is the first 4 bytes of sha256(address); the rare address whose id another
    (smaller) address of the same Service holds takes the next free value, so ids are
    unique within a Service and a function of its address set.

    >>> from lbcore import Endpoint
    >>> a, b = Endpoint("10.1.0.1", 80), Endpoint("10.1.0.2", 80)
    >>> endpoint_ids([a, b])[a.address] == endpoint_ids([b, a, Endpoint("10.1.0.3", 80)])[a.address]
    True
    """
    ids: dict[str, int] = {}
    taken: set[int] = set()
    for address in sorted({e.address for e in endpoints}):
        value = int.from_bytes(hashlib.sha256(address.encode()).digest()[:4], "big")
        while value in taken:
            value = (value + 1) & 0xFFFFFFFF
        taken.add(value)
        ids[address] = value
    return ids


def _hash_of(service: Service, scheduler: str) -> str:
    kind = HASHES[scheduler]
    if kind == "source" and service.sched_flags and not _PORT_FLAGS.isdisjoint(service.sched_flags):
        return "source-port"
    return kind


def _split(weights: list[int], cap: int) -> list[int]:
    """Slots per weight: the weights divided by their gcd, or, when those add up to more
    than ``cap``, ``cap`` slots apportioned by largest remainder (ties to the first)."""
    divisor = math.gcd(*weights)
    counts = [w // divisor for w in weights]
    total = sum(counts)
    if total <= cap:
        return counts
    floors = [w * cap // total for w in counts]
    by_remainder = sorted(range(len(counts)), key=lambda i: (-(counts[i] * cap % total), i))
    for i in by_remainder[: cap - sum(floors)]:
        floors[i] += 1
    return floors


def _tiled(items: Sequence, counts: list[int]) -> list:
    """Each item repeated its count of times, in order: the slots of contiguous runs."""
    slots: list = []
    for item, count in zip(items, counts):
        slots += [item] * count
    return slots


def _taking_new(service: Service) -> set[str]:
    """The addresses of the endpoints that take new connections: usable, weight > 0."""
    return {e.address for e in usable_endpoints(service.endpoints) if e.weight > 0}


def _fallen_back(owners: list[Endpoint], takes: set[str]) -> list[Endpoint]:
    """Each slot owned by an endpoint outside ``takes`` handed to the owner of the next
    slot that is in it, wrapping around (``takes`` is not empty); O(S)."""
    if all(e.address in takes for e in owners):
        return owners
    resolved = list(owners)
    nearest = None
    # Backwards twice around the ring: by the second lap every slot has seen the first
    # usable slot after it.
    size = len(owners)
    for s in range(2 * size - 1, -1, -1):
        owner = owners[s % size]
        if owner.address in takes:
            nearest = owner
        if s < size:
            resolved[s] = nearest
    return resolved


def _address(endpoint: Endpoint) -> str:
    return endpoint.address


def _ready(endpoint: Endpoint) -> bool:
    return endpoint.ready


def _weight(endpoint: Endpoint) -> int:
    return endpoint.weight
