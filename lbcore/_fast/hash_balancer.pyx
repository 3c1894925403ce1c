# The base of the hash schedulers (dh, sh, mh).  Mirrors lbcore/_pure/hash_balancer.py
# `HashBalancer` and `_resolve_fallback`; read that file for the two layers (table and
# fallback resolution) and the slot reduction.
#
# The hot paths are pick(), _pick_index() and the int-buffer loop of pick_many(): hash
# the key (C, lbcore._fast.hashing), reduce it to a slot with Lemire's multiply-shift
# on the top 32 bits (no 64-bit division), read the resolved slot.  With
# balance_factor, the slot's successors are probed for room and the pick counted
# (loads.pxd, inline: no Python call either).

cimport cython
from cpython.array cimport array, clone
from libc.stdint cimport int32_t, uint64_t

from lbcore._fast.balancer cimport Balancer
from lbcore._fast.hashing cimport SEED, xxh64_u64
from lbcore._fast.loads cimport Loads, loads_add, loads_add_checked, loads_release, probe

from lbcore._shared.endpoint_state import pickable_indices
from lbcore._shared.table_invariants import check_picker
from lbcore._shared.key_buffers import buffer_keys
from lbcore.models import balance_percent, check_balance_factor

__all__ = ["HashBalancer"]

cdef array _INDEX_ARRAY = array("i")


cdef inline uint64_t _slot(uint64_t key_hash, uint64_t size) noexcept nogil:
    # Lemire's reduction: ((h >> 32) * size) >> 32 lies in [0, size) for size < 2**32.
    return ((key_hash >> 32) * size) >> 32


@cython.final
cdef class _HashPicker:
    """The immutable picker: the table, its resolution, and what it was built from."""

    def __cinit__(self, tuple endpoints, object table_key, array table, list entries,
                  array resolved):
        self.endpoints = endpoints
        self.table_key = table_key
        self.table = table
        self.entries = entries
        self.resolved = resolved
        self.size = len(resolved)
        self.slots = <const int32_t*>resolved.data.as_ints


cdef array _resolve_fallback(array table, list entries, list pickable):
    # lbcore._pure.hash_balancer._resolve_fallback: an unusable owner hands its slot to
    # the owner of the next usable slot.  One backward lap, started from the first
    # usable slot's target (where the slots after the last usable one wrap to), gives
    # every slot the first usable slot after it: the pure twin's two laps in one.
    cdef Py_ssize_t size = len(table), n = len(entries), s, i
    cdef array usable = clone(_INDEX_ARRAY, n, zero=True)
    cdef array targets = clone(_INDEX_ARRAY, n, zero=False)
    cdef int32_t* is_usable = <int32_t*>usable.data.as_ints
    cdef int32_t* target = <int32_t*>targets.data.as_ints
    cdef const int32_t* owner = <const int32_t*>table.data.as_ints
    cdef array resolved
    cdef int32_t* out
    cdef int32_t nearest = -1, t, index
    for i in pickable:
        is_usable[i] = 1
    for i in range(n):
        index = entries[i]
        target[i] = index if is_usable[index] else -1
    for s in range(size):
        if target[owner[s]] >= 0:
            nearest = target[owner[s]]
            break
    if nearest < 0:
        return clone(_INDEX_ARRAY, 0, zero=False)
    resolved = clone(_INDEX_ARRAY, size, zero=False)
    out = <int32_t*>resolved.data.as_ints
    for s in range(size - 1, -1, -1):
        t = target[owner[s]]
        if t >= 0:
            nearest = t
        out[s] = nearest
    return resolved


cdef inline Py_ssize_t _bounded(HashBalancer self, _HashPicker picker, uint64_t slot) except -2:
    # With balance_factor: the first endpoint with room from the key's slot on, counted.
    cdef Py_ssize_t index = probe(self._loads, picker.slots, picker.size, slot, self._percent)
    loads_add(self._loads, index)
    return index


cdef class HashBalancer(Balancer):
    """Base of dh, sh and mh; not used on its own."""

    def __init__(self, endpoints, Py_ssize_t table_size, balance_factor=None, panic_threshold=None):
        self.table_size = table_size
        self._needs_key = True
        self.balance_factor = None if balance_factor is None else check_balance_factor(balance_factor)
        self._percent = 0 if balance_factor is None else balance_percent(balance_factor)
        self._loads = Loads(self.scheduler, (), (), None) if self._percent else None
        # No endpoints yet (None, not (): the first update must not look like a failure mark).
        self._picker = _HashPicker(None, None, clone(_INDEX_ARRAY, 0, zero=False), [],
                                   clone(_INDEX_ARRAY, 0, zero=False))
        Balancer.__init__(self, endpoints, panic_threshold=panic_threshold)

    cdef tuple _layout(self, tuple endpoints):
        raise NotImplementedError

    cdef array _populate(self, object table_key):
        raise NotImplementedError

    cdef int _rebuild(self, tuple endpoints, list pickable) except -1:
        cdef _HashPicker old = self._picker
        cdef array table
        if endpoints is old.endpoints:  # a failure mark: same endpoints, same table
            table_key, entries, table = old.table_key, old.entries, old.table
        else:
            table_key, entries = self._layout(endpoints)
            table = old.table if old.table_key == table_key else self._populate(table_key)
        resolved = _resolve_fallback(table, entries, pickable)
        loads = Loads(self.scheduler, endpoints, pickable, self._loads) if self._percent else None
        self._picker = _HashPicker(endpoints, table_key, table, entries, resolved)
        self._loads = loads
        return 0

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def pick(self, key=None):
        """The endpoint for key (str, bytes or int); O(1) after hashing the key."""
        cdef uint64_t key_hash = self._hash_for_pick(key)
        cdef _HashPicker picker = self._picker
        if picker.size == 0:
            raise self._no_endpoints()
        if self._note_picks:
            self._note_pick()
        if self._loads is None:
            return picker.endpoints[picker.slots[_slot(key_hash, picker.size)]]
        return picker.endpoints[_bounded(self, picker, _slot(key_hash, picker.size))]

    cdef Py_ssize_t _pick_index(self, uint64_t key_hash) except -2:
        if self._note_picks:
            self._note_pick()
        cdef _HashPicker picker = self._picker
        if picker.size == 0:
            return -1
        if self._loads is None:
            return picker.slots[_slot(key_hash, picker.size)]
        return _bounded(self, picker, _slot(key_hash, picker.size))

    def release(self, endpoint):
        """A connection picked earlier has ended: counted with balance_factor, else a no-op."""
        if self._loads is not None:
            loads_release(self._loads, endpoint)

    cdef int _count(self, Py_ssize_t index) except -1:
        return 0 if self._loads is None else loads_add_checked(self._loads, index)

    def _active_counts(self):
        """Active connections by endpoint address (with balance_factor; tests, stats)."""
        return {} if self._loads is None else self._loads.counts()

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def pick_many(self, keys):
        """Endpoint indices (into endpoints) for a batch of keys, as array('i')."""
        cdef _HashPicker picker = self._picker
        cdef const uint64_t[::1] int_keys
        cdef array result
        cdef int32_t* out
        cdef Py_ssize_t j, n
        cdef uint64_t key_hash, size = picker.size
        cdef const int32_t* slots = picker.slots
        if self._loads is not None or self._note_picks:
            return Balancer.pick_many(self, keys)  # each key probed and counted, in C
        view = buffer_keys(keys)
        if view is None:
            n = len(keys)
            result = clone(_INDEX_ARRAY, n, zero=False)
            out = <int32_t*>result.data.as_ints
            for j, key in enumerate(keys):
                key_hash = self._hash_for_pick(key)
                if size == 0:
                    raise self._no_endpoints()
                out[j] = slots[_slot(key_hash, size)]
            return result
        int_keys = view
        n = int_keys.shape[0]
        if n and size == 0:
            raise self._no_endpoints()
        result = clone(_INDEX_ARRAY, n, zero=False)
        out = <int32_t*>result.data.as_ints
        # The tight loop: hash (XXH64 of 8 bytes, unrolled) and one table read per key.
        with nogil:
            for j in range(n):
                out[j] = slots[_slot(xxh64_u64(int_keys[j], SEED), size)]
        return result

    def _check(self):
        Balancer._check(self)
        check_picker(self._picker, self._endpoints, self._skipped, self._layout(self._endpoints),
                     self.table_size)
        assert (self._loads is None) == (self._percent == 0)
        if self._loads is not None:
            self._loads.check(self._endpoints, pickable_indices(self._endpoints, self._skipped))
