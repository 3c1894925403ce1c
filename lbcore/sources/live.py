"""Live sources: the Services of a file, a directory, etcd or Kubernetes, kept current.

A live source is what ``lbcore run`` watches.  `open_source` opens one from the text a
user gives; its ``watch()`` yields a `Snapshot` with the full current set once it has
read it, then one after each change.  Each snapshot is complete (the agent diffs), so
a consumer that falls behind loses nothing: the changes it has not taken yet come out
as one snapshot.  Bad entries never stop the rest: they are left out of ``services``
and named in ``problems``, one line each (file, etcd key or Kubernetes object, and the
field).  A source never ends because a connection was lost: it keeps its last set,
says ``connected = False``, and reconnects with backoff.

Importing this module loads no network client: each kind of source is imported when
`open_source` opens one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Protocol

from ..errors import ConfigError
from ..models import Service

__all__ = ["Snapshot", "LiveSource", "open_source"]

_SPECS = "etcd://HOST:PORT[,HOST:PORT...]/PREFIX, kubernetes, or the path of a file or a directory"


@dataclass(frozen=True)
class Snapshot:
    """The full current set of Services from one source, and what is wrong in it."""

    #: The source as the user gave it.
    source: str
    #: Every good Service of the source (bad entries left out), in a stable order.
    services: tuple[Service, ...]
    #: One line per bad entry, naming the file, etcd key or object and the field.
    problems: tuple[str, ...]
    #: ``clock()`` when the first change behind this snapshot was seen (for the first
    #: snapshot: when the source was read), so the agent can measure how long a change
    #: took to reach the kernel (kube-proxy's network_programming_duration_seconds).
    changed_at: float
    #: Objects skipped on purpose (headless Services, ExternalName, ...), one line each,
    #: as ``lbcore check`` prints them after ``note:``.
    notes: tuple[str, ...] = ()


class LiveSource(Protocol):
    """A source of Services that changes while it is watched."""

    #: The source as the user gave it.
    source: str
    #: Whether the source is in contact with what it watches now (a file source always is).
    connected: bool

    def watch(self) -> AsyncIterator[Snapshot]:
        """The first full set once read, then one snapshot per change (bursts may
        coalesce into one); runs until cancelled and reconnects on its own.

        Consume it with ``async for`` in a task of its own.  Cancelling a pending
        ``__anext__()`` (``asyncio.wait_for`` on it timing out) closes the generator and
        stops the source, as it does any async generator.
        """
        ...


def open_source(spec: str, *, clock: Callable[[], float] = time.monotonic, **options: object) -> LiveSource:
    """The live source that ``spec`` names.

    ``etcd://HOST:PORT[,HOST:PORT...]/PREFIX``: one etcd key per service under PREFIX
    (`lbcore.sources.etcd`); ``kubernetes``: Services and EndpointSlices of a cluster,
    ``kubeconfig=PATH`` or in-cluster (`lbcore.sources.kubernetes_watch`); anything else
    is the path of a file or a directory of files (`lbcore.sources.watched_files`).
    ``clock`` stamps `Snapshot.changed_at`.  A bad spec or option raises `ConfigError`
    naming it; nothing is connected until ``watch()`` runs.

    >>> open_source("ftp://example/services")
    Traceback (most recent call last):
    ...
    lbcore.errors.ConfigError: source: 'ftp://example/services' is not a source lbcore reads; valid: etcd://HOST:PORT[,HOST:PORT...]/PREFIX, kubernetes, or the path of a file or a directory
    """
    if spec == "kubernetes":
        _only(spec, options, "kubeconfig")
        kubeconfig = options.get("kubeconfig")
        if kubeconfig is not None and not isinstance(kubeconfig, str):
            raise ConfigError("kubeconfig", kubeconfig, "must be the path of a kubeconfig file")
        _needs_aiohttp(spec, "kubernetes")
        from .kubernetes_watch import KubernetesSource

        return KubernetesSource(kubeconfig=kubeconfig, clock=clock)
    _only(spec, options)
    if spec.startswith("etcd://"):
        _needs_aiohttp(spec, "etcd")
        from .etcd import EtcdSource

        return EtcdSource(spec, clock=clock)
    if "://" in spec or not spec:
        raise ConfigError("source", spec, f"is not a source lbcore reads; valid: {_SPECS}")
    from .watched_files import FileSource

    return FileSource(spec, clock=clock)


def _only(spec: str, options: dict[str, object], *allowed: str) -> None:
    for name, value in options.items():
        if name not in allowed:
            valid = ", ".join(allowed) if allowed else "none"
            raise ConfigError(name, value, f"is not an option of the source {spec!r}; valid: {valid}")


def _needs_aiohttp(spec: str, extra: str) -> None:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise ConfigError("source", spec, f"needs the HTTP client aiohttp: pip install 'lbcore[{extra}]'") from None
