"""Services and EndpointSlices of a live Kubernetes cluster, by list and watch.

The reflector of client-go, owned here because none of the Python clients implements
it (kubernetes retries a 410 once and skips bookmarks, kubernetes_asyncio raises,
lightkube and kr8s hide or loop on it), for each of ``v1 Service`` and
``discovery.k8s.io/v1 EndpointSlice``, across all namespaces as kube-proxy watches them:

1. List in pages (``limit``/``continue``), then watch from the list's
   ``resourceVersion`` with ``allowWatchBookmarks=true`` (the API's "efficient detection
   of changes").
2. ADDED, MODIFIED and DELETED change the held objects; a BOOKMARK only moves the
   version the next watch starts from.  A watch the server ends (its ``timeoutSeconds``,
   5 to 10 minutes as client-go picks) is started again from the last version.
3. A ``410 Gone``, as the HTTP status or as an ERROR event with code 410, means the
   server no longer has the changes since that version: list again and compare with
   what is held (by each object's ``resourceVersion``), then watch from the new list.
4. Any other failure keeps the held objects and retries with backoff
   (``connected = False`` meanwhile).

The objects map to Services exactly as ``lbcore check`` maps a dump
(`lbcore.sources.kubernetes`).  Only what changed is mapped again: the objects are
grouped by the Service they belong to (a Service by its name, a slice by its
``kubernetes.io/service-name`` label), and a change maps its group alone.  The first
snapshot comes once both kinds are listed, so no Service is ever served without the
endpoints its slices give it.

This source has been tested against a replay of the API's documented answers, not yet
against a live cluster.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, AsyncIterator, Callable, NamedTuple

import aiohttp

from . import kubernetes
from ._problems import Problems
from ._unique import Located
from ._watching import Backoff, Changes, Contact, json_lines, problem_lines, snapshot, snapshots
from .kubeconfig import Cluster, from_kubeconfig, in_cluster
from .live import Snapshot

__all__ = ["KubernetesSource", "RESOURCES", "PAGE"]

#: Objects per list page (client-go's reflector pages by 500 too).
PAGE = 500
#: Seconds a list page may take.
REQUEST_TIMEOUT = 30.0
#: The range of a watch's timeoutSeconds, as client-go's reflector draws it (5-10 min).
WATCH_SECONDS = (300, 600)
#: The source's name in problem lines: ``kubernetes: Service ns/name: field: ...``.
SOURCE = "kubernetes"


class Resource(NamedTuple):
    kind: str
    api_version: str
    #: The collection across all namespaces.
    path: str


RESOURCES = (
    Resource("Service", "v1", "/api/v1/services"),
    Resource("EndpointSlice", "discovery.k8s.io/v1", "/apis/discovery.k8s.io/v1/endpointslices"),
)

_Key = tuple[str, str, str]  # kind, namespace, name
_Group = tuple[str, str]  # namespace, service name


class _Expired(Exception):
    """410 Gone: the version asked for is too old; list again."""


class _Lost(Exception):
    """The server could not be reached or refused; retry with backoff."""


# What the network, or a server answering what it should not, can do to a reader: each
# is retried (a malformed answer as much as a reset connection), none ends the source.
_RETRIED = (_Lost, aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError, TypeError, AttributeError)


class _Mapped(NamedTuple):
    located: list[Located]
    problems: list[str]
    notes: list[str]


def _key(kind: str, obj: dict) -> _Key:
    metadata = obj.get("metadata") or {}
    return kind, str(metadata.get("namespace") or "default"), str(metadata.get("name"))


def _group(key: _Key, obj: dict) -> _Group:
    kind, namespace, name = key
    if kind == "Service":
        return namespace, name
    labels = (obj.get("metadata") or {}).get("labels") or {}
    label = labels.get(kubernetes.SERVICE_NAME_LABEL) if isinstance(labels, dict) else None
    return namespace, label if isinstance(label, str) else ""


class KubernetesSource:
    """The Services of a Kubernetes cluster; see the module docstring."""

    source = SOURCE

    def __init__(self, *, kubeconfig: str | None, clock: Callable[[], float]):
        self.cluster: Cluster = from_kubeconfig(kubeconfig) if kubeconfig else in_cluster()
        self._clock = clock
        self._objects: dict[_Key, dict] = {}
        self._groups: dict[_Group, set[_Key]] = {}
        self._mapped: dict[_Group, _Mapped] = {}
        self._dirty: set[_Group] = set()
        self._listed: set[str] = set()
        self._contacts = {resource.kind: Contact(f"{SOURCE} {resource.path}") for resource in RESOURCES}

    @property
    def connected(self) -> bool:
        """Whether both watches are running now."""
        return all(contact.connected for contact in self._contacts.values())

    def watch(self) -> AsyncIterator[Snapshot]:
        changes = Changes(self._clock)
        return snapshots(self._read(changes), changes, self._snapshot)

    # -- the reflectors -------------------------------------------------------------------

    async def _read(self, changes: Changes) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=REQUEST_TIMEOUT)
        connector = aiohttp.TCPConnector(ssl=self.cluster.ssl)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            await asyncio.gather(*(self._reflect(session, resource, changes) for resource in RESOURCES))

    async def _reflect(self, session: aiohttp.ClientSession, resource: Resource, changes: Changes) -> None:
        backoff = Backoff()
        version: str | None = None
        while True:
            try:
                if version is None:
                    version, items = await self._list(session, resource)
                    self._replace(resource, items)
                    newly = resource.kind not in self._listed
                    self._listed.add(resource.kind)
                    self._contact(resource, backoff)
                    self._changed(changes, first=newly)
                version = await self._watch(session, resource, version, changes, backoff)
            except _Expired:
                version = None
            except _RETRIED as error:
                self._contacts[resource.kind].lost(error)
                await backoff.wait()

    def _contact(self, resource: Resource, backoff: Backoff) -> None:
        self._contacts[resource.kind].made()
        backoff.reset()

    def _changed(self, changes: Changes, first: bool = False) -> None:
        """Tell the consumer of a change (or of the ``first`` full set), once every kind
        has been listed: no Service is served before its slices are known."""
        if len(self._listed) == len(RESOURCES) and (self._dirty or first):
            changes.seen()

    async def _get(self, session: aiohttp.ClientSession, path: str, params: dict[str, str],
                   timeout: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        response = await session.get(self.cluster.server + path, params=params,
                                     headers=self.cluster.headers(), timeout=timeout)
        if response.status == 200:
            return response
        try:
            status = await response.json(content_type=None)
        except ValueError:
            status = {}
        finally:
            response.release()
        if response.status == 410:
            raise _Expired()
        reason = status.get("message") if isinstance(status, dict) else None
        raise _Lost(f"GET {path}: HTTP {response.status}{': ' + reason if reason else ''}")

    async def _list(self, session: aiohttp.ClientSession, resource: Resource) -> tuple[str, list[dict]]:
        """(the list's resourceVersion, its items), paged; a page's 410 starts over."""
        items: list[dict] = []
        params = {"limit": str(PAGE)}
        while True:
            try:
                response = await self._get(session, resource.path, params, aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))
            except _Expired:
                if "continue" not in params:
                    raise
                items, params = [], {"limit": str(PAGE)}  # the continue token expired
                continue
            async with response:
                page = await response.json(content_type=None)
            items.extend(page.get("items") or ())
            metadata = page.get("metadata") or {}
            if not metadata.get("continue"):
                return str(metadata["resourceVersion"]), items
            params = {"limit": str(PAGE), "continue": metadata["continue"]}

    async def _watch(self, session: aiohttp.ClientSession, resource: Resource, version: str,
                     changes: Changes, backoff: Backoff) -> str:
        """Follow one watch from ``version``; the version to resume from when the server ends it."""
        seconds = random.randint(*WATCH_SECONDS)
        params = {"watch": "1", "resourceVersion": version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(seconds)}
        # a silent connection is dead once the server's own timeout has long passed
        timeout = aiohttp.ClientTimeout(total=None, sock_read=seconds + 30)
        response = await self._get(session, resource.path, params, timeout)
        async with response:
            self._contact(resource, backoff)
            async for event in json_lines(response.content):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Expired()
                    raise _Lost(f"watch {resource.path}: {obj.get('message') or obj}")
                version = str(obj["metadata"]["resourceVersion"])
                if kind in ("ADDED", "MODIFIED"):
                    self._put(resource, obj)
                elif kind == "DELETED":
                    self._remove(_key(resource.kind, obj))
                self._changed(changes)
        return version

    # -- the objects held -----------------------------------------------------------------

    def _put(self, resource: Resource, obj: dict) -> None:
        # lists leave kind and apiVersion out of their items; the mapping reads them
        obj = {**obj, "kind": resource.kind, "apiVersion": resource.api_version}
        metadata = obj.get("metadata")
        if isinstance(metadata, dict) and "managedFields" in metadata:
            obj["metadata"] = {k: v for k, v in metadata.items() if k != "managedFields"}  # never read: not held
        key = _key(resource.kind, obj)
        self._remove(key)
        self._objects[key] = obj
        group = _group(key, obj)
        self._groups.setdefault(group, set()).add(key)
        self._dirty.add(group)

    def _remove(self, key: _Key) -> None:
        obj = self._objects.pop(key, None)
        if obj is not None:
            group = _group(key, obj)
            self._groups[group].discard(key)
            self._dirty.add(group)

    def _replace(self, resource: Resource, items: list[dict]) -> None:
        """Hold a fresh list of one kind: only what differs from what is held changes."""
        listed = {}
        for item in items:
            listed[_key(resource.kind, item)] = item
        for key in [key for key in self._objects if key[0] == resource.kind and key not in listed]:
            self._remove(key)
        for key, item in listed.items():
            held = self._objects.get(key)
            if held is None or _version(held) != _version(item) or not _version(item):
                self._put(resource, item)

    # -- snapshots ----------------------------------------------------------------------

    def _snapshot(self, changed_at: float) -> Snapshot:
        for group in self._dirty:
            keys = sorted(self._groups.get(group, ()))  # EndpointSlices sort before Services
            if not keys:
                self._groups.pop(group, None)
                self._mapped.pop(group, None)
                continue
            problems = Problems()
            notes: list[str] = []
            documents = [(SOURCE, self._objects[key]) for key in keys]
            located = kubernetes.services_from(documents, problems, notes)
            self._mapped[group] = _Mapped(located, problem_lines(problems), notes)
        self._dirty.clear()
        ordered = [self._mapped[group] for group in sorted(self._mapped)]
        return snapshot(
            SOURCE, [item for mapped in ordered for item in mapped.located], Problems(), changed_at,
            earlier=[line for mapped in ordered for line in mapped.problems],
            notes=[line for mapped in ordered for line in mapped.notes],
        )


def _version(obj: dict) -> Any:
    return (obj.get("metadata") or {}).get("resourceVersion")
