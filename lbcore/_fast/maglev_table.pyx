# The Maglev lookup table.  Mirrors lbcore/_pure/maglev_table.py `maglev_permutation`,
# `maglev_counts`, `maglev_populate` and `maglev_table`, slot for slot; read that file
# for the rule (paper Pseudocode 1, Envoy's seeds and weight rule).
#
# Population is the cost of an update (M = 65537, N = 1000: under two milliseconds).  The
# claims are put in (round, entry) order by a counting sort over rounds, which lists
# each round's entries in entry order without comparing anything, and each round of an
# entry's claims follows from the last by adding top // w with a carry (no division per
# claim).  Each entry walks its preference list incrementally (add skip, subtract M on
# overflow, as IPVS ip_vs_mh_populate does): no division per probe either.

cimport cython
from cpython.array cimport array, clone
from libc.stdint cimport int32_t, uint8_t, uint64_t
from libc.string cimport memset

from lbcore._fast.hashing cimport xxh64

from lbcore._shared.table_size import is_prime

__all__ = ["maglev_permutation", "maglev_counts", "maglev_populate", "maglev_table"]

cdef array _INDEX_ARRAY = array("i")
cdef array _U64_ARRAY = array("Q")
cdef array _BYTE_ARRAY = array("B")

# Envoy's seeds: HashUtil::xxHash64(key) for the offset, xxHash64(key, 1) for the skip.
cdef uint64_t OFFSET_SEED = 0
cdef uint64_t SKIP_SEED = 1


cdef (uint64_t, uint64_t) _permutation(object address, uint64_t size) except *:
    cdef bytes data = address.encode("utf-8")
    return (xxh64(<const char*>data, len(data), OFFSET_SEED) % size,
            xxh64(<const char*>data, len(data), SKIP_SEED) % (size - 1) + 1)


def maglev_permutation(str address, uint64_t size):
    """(offset, skip) of an endpoint's preference list in a table of size slots."""
    return _permutation(address, size)


@cython.cdivision(True)  # top and every weight are at least 1
cdef uint64_t _counts(uint64_t size, Py_ssize_t n, const uint64_t* weight,
                      uint64_t* count) noexcept nogil:
    # lbcore._pure.maglev_table.maglev_counts; returns the last round that has claims.
    cdef uint64_t top = 0, low = 0, high = size, middle, total, left = size
    cdef Py_ssize_t e
    for e in range(n):
        top = weight[e] if weight[e] > top else top
    while high - low > 1:
        middle = (low + high) // 2
        total = 0
        for e in range(n):
            total += middle * weight[e] // top + 1
        if total <= size:
            low = middle
        else:
            high = middle
    for e in range(n):
        count[e] = low * weight[e] // top + 1
        left -= count[e]
    for e in range(n):
        if left and (low + 1) * weight[e] // top > low * weight[e] // top:
            count[e] += 1
            left -= 1
    return low + 1


@cython.cdivision(True)  # every weight is at least 1
cdef void _order_claims(Py_ssize_t n, const uint64_t* weight, const uint64_t* count,
                        uint64_t top, uint64_t* start, int32_t* order,
                        bint place) noexcept nogil:
    # Walk every entry's claims, rounds ceil(k * top / w) for k < count[e]: with place
    # false, count claims per round into start[round + 1]; with place true, put each
    # entry at the next free position of its round (start[] holds those positions).
    cdef Py_ssize_t e
    cdef uint64_t k, w, step, carry, whole, rest
    for e in range(n):
        w = weight[e]
        step, carry = top // w, top % w
        whole, rest = 0, 0  # k * top == whole * w + rest
        for k in range(count[e]):
            if place:
                order[start[whole + (rest != 0)]] = <int32_t>e
                start[whole + (rest != 0)] += 1
            else:
                start[whole + (rest != 0) + 1] += 1
            whole += step
            rest += carry
            if rest >= w:
                rest -= w
                whole += 1


cdef void _claim(uint64_t size, const int32_t* order, uint64_t* preferred,
                 const uint64_t* skip, uint8_t* taken, int32_t* table) noexcept nogil:
    # Pseudocode 1: each claim takes the entry's next preferred free slot.  The probes
    # read a byte map (64 KiB for M = 65537), a quarter of the table's cache footprint.
    cdef uint64_t i, slot, step
    cdef int32_t e
    memset(taken, 0, size)
    for i in range(size):
        e = order[i]
        slot = preferred[e]
        step = skip[e]
        while taken[slot]:
            slot += step
            if slot >= size:
                slot -= size
        taken[slot] = 1
        table[slot] = e
        slot += step
        preferred[e] = slot - size if slot >= size else slot


def maglev_counts(uint64_t size, weights):
    """How many slots each entry claims in a table of size (> number of entries)."""
    cdef Py_ssize_t n = len(weights)
    cdef array weight = array("Q", weights)
    cdef array count = clone(_U64_ARRAY, n, zero=False)
    if n and (<uint64_t>n >= size or min(weights) < 1):
        raise ValueError(f"weights must be at least 1, fewer than the table size {size}")
    if n:
        _counts(size, n, <uint64_t*>weight.data.as_ulonglongs,
                <uint64_t*>count.data.as_ulonglongs)
    return count.tolist()


cdef int _check_entries(uint64_t size, Py_ssize_t n, const uint64_t* offset,
                        const uint64_t* skip, const uint64_t* weight) except -1:
    # lbcore._pure.maglev_table._check_entries: out-of-range entries would write outside
    # the table, and a skip that does not walk all M slots could probe forever.
    cdef Py_ssize_t e
    if <uint64_t>n >= size or not is_prime(size):
        raise ValueError(f"table size {size} must be a prime above the {n} entries")
    for e in range(n):
        if not (offset[e] < size and 0 < skip[e] < size and weight[e] >= 1):
            raise ValueError(f"entry {e}: offset {offset[e]}, skip {skip[e]}, weight "
                             f"{weight[e]} out of range for table size {size}")
    return 0


def maglev_populate(uint64_t size, offsets, skips, weights):
    """The entry owning each of size slots (size prime, > number of entries)."""
    cdef Py_ssize_t n = len(offsets)
    if not n == len(skips) == len(weights):
        raise ValueError("offsets, skips and weights must have one item per entry")
    cdef array table = clone(_INDEX_ARRAY, size if n else 0, zero=False)
    if n == 0:
        return table
    cdef array preferred = array("Q", offsets)
    cdef array skip = array("Q", skips)
    cdef array weight = array("Q", weights)
    _check_entries(size, n, <uint64_t*>preferred.data.as_ulonglongs,
                   <uint64_t*>skip.data.as_ulonglongs, <uint64_t*>weight.data.as_ulonglongs)
    cdef uint64_t top = max(weights)
    cdef array count = clone(_U64_ARRAY, n, zero=False)
    cdef array order = clone(_INDEX_ARRAY, size, zero=False)
    cdef array taken = clone(_BYTE_ARRAY, size, zero=False)
    cdef array start
    cdef uint64_t rounds
    cdef uint64_t* w = <uint64_t*>weight.data.as_ulonglongs
    cdef uint64_t* c = <uint64_t*>count.data.as_ulonglongs
    cdef uint64_t* s
    cdef uint64_t r
    with nogil:
        rounds = _counts(size, n, w, c) + 1
    start = clone(_U64_ARRAY, rounds + 1, zero=True)
    s = <uint64_t*>start.data.as_ulonglongs
    with nogil:
        _order_claims(n, w, c, top, s, <int32_t*>order.data.as_ints, False)
        for r in range(1, rounds + 1):
            s[r] += s[r - 1]
        _order_claims(n, w, c, top, s, <int32_t*>order.data.as_ints, True)
        _claim(size, <int32_t*>order.data.as_ints, <uint64_t*>preferred.data.as_ulonglongs,
               <uint64_t*>skip.data.as_ulonglongs, <uint8_t*>taken.data.as_uchars,
               <int32_t*>table.data.as_ints)
    return table


def maglev_table(uint64_t size, entries):
    """The table for entries, (address, weight) pairs in claiming order."""
    cdef Py_ssize_t n = len(entries), i
    cdef array offsets = clone(_U64_ARRAY, n, zero=False)
    cdef array skips = clone(_U64_ARRAY, n, zero=False)
    for i in range(n):
        offsets.data.as_ulonglongs[i], skips.data.as_ulonglongs[i] = _permutation(entries[i][0], size)
    return maglev_populate(size, offsets, skips, [weight for _, weight in entries])
