"""`Balancer.lease()`: pick now, release when the ``with`` block ends."""

from __future__ import annotations

from typing import Any

__all__ = ["Lease"]


class Lease:
    """A picked endpoint that is released exactly once, on exit or by `release()`.

    The pick happens when the lease is made, so `NoEndpointsError` surfaces at the
    ``with`` line, before any work is done for a connection that cannot be placed.
    """

    __slots__ = ("_balancer", "endpoint", "_held")

    def __init__(self, balancer: Any, endpoint: Any) -> None:
        self._balancer = balancer
        self.endpoint = endpoint
        self._held = True

    def __enter__(self) -> Any:
        return self.endpoint

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def release(self) -> None:
        """Give the connection back; later calls do nothing."""
        if self._held:
            self._held = False
            self._balancer.release(self.endpoint)
