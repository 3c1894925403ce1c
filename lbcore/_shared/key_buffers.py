"""Batches of keys for `pick_many`: a sequence of keys, or a buffer of 64-bit ints."""

from __future__ import annotations

__all__ = ["buffer_keys"]

_INT64_FORMATS = {"q", "Q", "l", "L"}


def buffer_keys(keys: object) -> memoryview | None:
    """``keys`` as a flat unsigned 64-bit memoryview (format ``Q``), or None.

    A buffer of keys (``array('Q')``, a NumPy uint64/int64 array) is a batch of int
    keys, read as two's complement like `key_hash` reads a negative int; anything that
    is not a buffer is taken as a sequence of str/bytes/int keys.
    """
    if isinstance(keys, (str, bytes)):
        raise TypeError("pick_many takes a sequence of keys, not a single str/bytes key")
    try:
        view = memoryview(keys)  # type: ignore[arg-type]
    except TypeError:
        return None
    if view.format.lstrip("@=") not in _INT64_FORMATS or view.itemsize != 8 or view.ndim != 1:
        raise TypeError(
            f"a buffer of keys must hold 1-dimensional 64-bit integers, not format {view.format!r}"
        )
    if not view.c_contiguous:
        raise TypeError("a buffer of keys must be contiguous")
    return view.cast("B").cast("Q")
