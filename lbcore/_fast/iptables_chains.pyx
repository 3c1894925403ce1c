# The chains of an iptables payload put together.  Mirrors
# lbcore/_pure/iptables_chains.py `join_payload`, byte for byte.
#
# The pure twin makes one str per chain, sorts those and joins them with the payload's
# other lines: for 10,000 Services x 10 endpoints that is 110,000 f-strings, then three
# passes over 46 MB.  Here a first pass measures every chain into a small record, the
# records are sorted by chain name, which gives every chain its offset in the result,
# and a second pass writes every chain at its offset, straight into the result
# (allocated once, at its final size).  Both passes take the chains in the order of
# their parts, not of their names: the names are hashes, so name order would read the
# parts from all over memory (measured: the write pass took 2.5 times as long).
#
# Every part is ASCII (chain names, addresses, numbers and names checked against an
# ASCII alphabet), so the result is a one-byte-per-character str written with memcpy.
# A part that is not ASCII, which only a tampered model could bring, sends the call to
# the pure twin, which handles any text.

cimport cython
from cpython.unicode cimport PyUnicode_DATA, PyUnicode_GET_LENGTH, PyUnicode_New
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport free, malloc, qsort
from libc.string cimport memcmp, memcpy

from lbcore._twins import pure_twin

_reference = pure_twin("iptables_chains")
# The column and part types are the reference's: this twin only writes faster.
ChainColumns = _reference.ChainColumns
ChainParts = _reference.ChainParts
chain_texts = _reference.chain_texts
chain_name = _reference.chain_name

__all__ = ["ChainColumns", "ChainParts", "chain_name", "chain_texts", "join_payload"]


cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object text)


# The fixed words of the two chain shapes (see the pure twin's module docstring).
cdef str _DECLARE = " - [0:0]"
cdef str _RULE = "\n-A "
cdef str _MATCH_SET = '" -m set --match-set '
cdef str _SOURCE_JUMP = " src -j "
cdef str _JUMP = " -j "


class _NotAscii(Exception):
    """A part is not an ASCII str: the pure twin renders it."""


ctypedef struct Chain:
    const char* name
    Py_ssize_t name_length
    Py_ssize_t service  # index into parts
    Py_ssize_t endpoint  # the endpoint's index, or a service chain's first endpoint
    bint is_service
    bint loopback


ctypedef struct Order:
    # A chain's place in the sort: 16 bytes of its name after the prefix all names
    # share, big-endian, so that most comparisons need no other memory.
    uint64_t high
    uint64_t low
    uint32_t chain  # index into the records
    uint32_t length  # of the chain's text


def join_payload(list head, list first, columns, list tail):
    """The payload's lines around every chain in descending name order; see
    lbcore._pure.iptables_chains.join_payload."""
    cdef list parts, counts, endpoint_chains, ips, addresses
    cdef frozenset loopback
    parts, counts, endpoint_chains, ips, addresses, loopback, mark_masq_chain = columns
    cdef str masq_jump = _JUMP + mark_masq_chain
    if len(counts) != len(parts) or not len(ips) == len(addresses) == len(endpoint_chains):
        raise ValueError("parts and counts, and the endpoint columns, must be as long")
    if sum(counts) > len(endpoint_chains):
        raise ValueError("counts add up to more endpoints than there are")
    cdef Py_ssize_t most = len(parts) + len(endpoint_chains)
    if most >= 2**32:
        raise ValueError("more than 2**32 chains")
    cdef Chain* table = <Chain*>malloc(most * sizeof(Chain) + 1)
    cdef Order* order = <Order*>malloc(most * sizeof(Order) + 1)
    cdef Py_ssize_t* offsets = <Py_ssize_t*>malloc(most * sizeof(Py_ssize_t) + 1)
    try:
        if table == NULL or order == NULL or offsets == NULL:
            raise MemoryError()
        return _join(table, order, offsets, head, first, parts, counts, endpoint_chains,
                     ips, addresses, loopback, masq_jump, tail)
    except _NotAscii:
        return _reference.join_payload(head, first, columns, tail)
    finally:
        free(table)
        free(order)
        free(offsets)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef str _join(Chain* table, Order* order, Py_ssize_t* offsets, list head, list first,
               list parts, list counts, list endpoint_chains, list ips, list addresses,
               frozenset loopback, str masq_jump, list tail):
    cdef Py_ssize_t i, rank, chains, size = 0
    cdef Chain* chain

    chains = _measure(table, order, parts, counts, endpoint_chains, ips, addresses, loopback,
                      masq_jump)
    _sort(order, table, chains)

    # Every line is written with a newline after it; the last one lands on the str's
    # terminating NUL, put back at the end.
    for text in head:
        size += _size(text) + 1
    for i in range(len(first)):
        rank = first[i]
        if not 0 <= rank < chains:
            raise IndexError(f"rank {rank} of {chains} chains")
        size += 1 + table[order[rank].chain].name_length + _size(_DECLARE) + 1
    for i in range(chains):
        offsets[order[i].chain] = size
        size += order[i].length + 1
    for text in tail:
        size += _size(text) + 1
    if not size:
        return ""
    cdef Py_ssize_t length = size - 1
    cdef str result = PyUnicode_New(length, 127)
    cdef char* start = <char*>PyUnicode_DATA(result)
    cdef char* out = start

    for text in head:
        out = _line(_put(out, text))
    for i in range(len(first)):
        chain = &table[order[<Py_ssize_t>first[i]].chain]
        out[0] = b":"
        memcpy(out + 1, chain.name, chain.name_length)
        out = _line(_put(out + 1 + chain.name_length, _DECLARE))
    for i in range(chains):
        _line(_write_chain(start + offsets[i], &table[i], <tuple>parts[table[i].service],
                           endpoint_chains, ips, addresses, masq_jump))
    if chains:
        out = start + offsets[order[chains - 1].chain] + order[chains - 1].length + 1
    for text in tail:
        out = _line(_put(out, text))
    if out - start != size:
        raise AssertionError("measured and written lengths differ")
    start[length] = 0
    return result


@cython.boundscheck(False)
@cython.wraparound(False)
cdef Py_ssize_t _measure(Chain* table, Order* order, list parts, list counts,
                         list endpoint_chains, list ips, list addresses,
                         frozenset loopback, str masq_jump) except -1:
    """Fill a record and the length of every chain; return how many there are."""
    cdef Py_ssize_t i, j, count, start = 0, chains = 0
    cdef Py_ssize_t service_length, endpoint_length, rule, split_rule, name_length
    cdef Py_ssize_t affinity_length, dnat_length, hairpin_length
    cdef bint sticky, any_loopback = len(loopback) > 0
    cdef Chain* chain
    cdef tuple part
    for i in range(len(parts)):
        count = counts[i]
        if parts[i] is None or count == 0:
            start += count
            continue
        if not isinstance(parts[i], tuple) or len(parts[i]) != 7:
            raise TypeError(f"parts[{i}] is not a ChainParts")
        part = <tuple>parts[i]
        if len(part[2]) != count:
            raise ValueError(f"parts[{i}] has {len(part[2])} jumps for {count} endpoints")
        sticky = part[5] is not None
        rule = _size(part[1])  # head: "\n-A SVC ... -> "
        affinity_length = (_size(part[5]) + _size(part[6])) if sticky else 0
        hairpin_length = _size(part[3]) + _size(masq_jump)
        dnat_length = _size(part[4])
        service_length = 1 + _size(part[0]) + _size(_DECLARE)
        for j in range(start, start + count):
            name_length = _size(endpoint_chains[j])
            split_rule = rule + _size(addresses[j]) + name_length
            service_length += split_rule + _size((<tuple>part[2])[j - start])
            if sticky:
                service_length += split_rule + _size(_MATCH_SET) + _size(_SOURCE_JUMP) + name_length
            chain = &table[chains]
            chain.name = <const char*>PyUnicode_DATA(endpoint_chains[j])
            chain.name_length = name_length
            chain.service = i
            chain.endpoint = j
            chain.is_service = False
            chain.loopback = any_loopback and ips[j] in loopback
            endpoint_length = 1 + name_length + _size(_DECLARE)
            if not chain.loopback:
                endpoint_length += _size(_RULE) + name_length + hairpin_length + _size(ips[j])
            if sticky:
                endpoint_length += _size(_RULE) + 2 * name_length + affinity_length
            endpoint_length += _size(_RULE) + name_length + dnat_length + _size(addresses[j])
            order[chains].chain = <uint32_t>chains
            order[chains].length = <uint32_t>endpoint_length
            chains += 1
        chain = &table[chains]
        chain.name = <const char*>PyUnicode_DATA(part[0])
        chain.name_length = PyUnicode_GET_LENGTH(part[0])
        chain.service = i
        chain.endpoint = start
        chain.is_service = True
        chain.loopback = False
        order[chains].chain = <uint32_t>chains
        order[chains].length = <uint32_t>service_length
        chains += 1
        start += count
    return chains


@cython.boundscheck(False)
@cython.wraparound(False)
cdef char* _write_chain(char* out, const Chain* chain, tuple part, list endpoint_chains,
                        list ips, list addresses, str masq_jump) noexcept:
    cdef Py_ssize_t j, first = chain.endpoint, n = len(<tuple>part[2])
    out[0] = b":"
    if chain.is_service:
        out = _put(_put(out + 1, part[0]), _DECLARE)
        if part[5] is not None:
            # Sticky clients first (kube-proxy: every affinity rule before the split).
            for j in range(first, first + n):
                out = _put(_put(_put(out, part[1]), addresses[j]), _MATCH_SET)
                out = _put(_put(_put(out, endpoint_chains[j]), _SOURCE_JUMP), endpoint_chains[j])
        for j in range(first, first + n):
            out = _put(_put(out, part[1]), addresses[j])
            out = _put(_put(out, (<tuple>part[2])[j - first]), endpoint_chains[j])
        return out
    name = endpoint_chains[first]
    out = _put(_put(out + 1, name), _DECLARE)
    if not chain.loopback:
        # Hairpin (see the pure twin): masquerade the endpoint reaching its own Service.
        out = _put(_put(_put(out, _RULE), name), part[3])
        out = _put(_put(out, ips[first]), masq_jump)
    if part[5] is not None:
        # Affinity: add the client to the endpoint's set, or refresh its timeout.
        out = _put(_put(_put(out, _RULE), name), part[5])
        out = _put(_put(out, name), part[6])
    out = _put(_put(_put(out, _RULE), name), part[4])
    return _put(out, addresses[first])


cdef inline Py_ssize_t _size(object text) except -1:
    if type(text) is not str or not PyUnicode_IS_COMPACT_ASCII(text):
        raise _NotAscii
    return PyUnicode_GET_LENGTH(text)


cdef inline char* _put(char* out, object text) noexcept:
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(text)
    memcpy(out, PyUnicode_DATA(text), n)
    return out + n


cdef inline char* _line(char* out) noexcept:
    out[0] = b"\n"
    return out + 1


cdef void _sort(Order* order, const Chain* table, Py_ssize_t chains) noexcept:
    """Sort by key, then order each run of equal keys (names that share 16 more bytes
    than all names share: no two hashed names do, but any could) by whole name."""
    cdef Py_ssize_t i, j, run, skip = _shared_prefix(table, chains)
    cdef Order moved
    for i in range(chains):
        _set_key(&order[i], &table[order[i].chain], skip)
    qsort(order, chains, sizeof(Order), _by_key_descending)
    run = 0
    for i in range(1, chains + 1):
        if i < chains and order[i].high == order[run].high and order[i].low == order[run].low:
            continue
        for j in range(run + 1, i):  # insertion sort of the run
            moved = order[j]
            while j > run and _before(&table[moved.chain], &table[order[j - 1].chain]):
                order[j] = order[j - 1]
                j -= 1
            order[j] = moved
        run = i


cdef Py_ssize_t _shared_prefix(const Chain* table, Py_ssize_t chains) noexcept:
    """How many first bytes all names have in common."""
    if chains == 0:
        return 0
    cdef Py_ssize_t i, shared = table[0].name_length
    for i in range(1, chains):
        shared = min(shared, table[i].name_length)
        while shared and memcmp(table[i].name, table[0].name, shared) != 0:
            shared -= 1
    return shared


cdef void _set_key(Order* order, const Chain* chain, Py_ssize_t skip) noexcept:
    cdef const unsigned char* text = <const unsigned char*>chain.name
    cdef Py_ssize_t i
    order.high = order.low = 0
    for i in range(skip, min(chain.name_length, skip + 16)):
        if i < skip + 8:
            order.high |= (<uint64_t>text[i]) << (56 - 8 * (i - skip))
        else:
            order.low |= (<uint64_t>text[i]) << (56 - 8 * (i - skip - 8))


cdef int _by_key_descending(const void* a, const void* b) noexcept nogil:
    cdef const Order* x = <const Order*>a
    cdef const Order* y = <const Order*>b
    if x.high != y.high:
        return 1 if x.high < y.high else -1
    if x.low != y.low:
        return 1 if x.low < y.low else -1
    return 0


cdef bint _before(const Chain* x, const Chain* y) noexcept:
    # Python's str order for ASCII, reversed: bytes, then length.
    cdef int order = memcmp(x.name, y.name, min(x.name_length, y.name_length))
    if order == 0:
        return x.name_length > y.name_length
    return order > 0
