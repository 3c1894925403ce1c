"""Services kept in etcd, one key per service, listed and then watched.

Layout: ``etcd://HOST:PORT[,HOST:PORT...]/PREFIX`` reads every key that starts with
``/PREFIX/`` (the URL's path, its leading slash included, then one more slash).  The
rest of the key is the service's name (it may hold slashes: ``/lbcore/services/shop/web:http``
is the service ``shop/web:http``).  The value is that service in lbcore's format, JSON or
YAML: the keys of one ``services:`` item.  The name comes from the key, so a value
needs no ``name``; a value that has one must agree with its key, or the key is reported
(a copied value left with its old name would otherwise serve under the wrong one).

How it stays current (etcd's own recipe for a cache):

1. List the prefix (in pages, all at the revision of the first page), then watch it from
   that revision + 1, so no change falls between the two.
2. Each watch answer changes only its keys; each key's value is parsed when it changes,
   never again while it does not.  A bad value is reported naming the key and the field,
   and the other keys keep being served.
3. A watch from a revision etcd has compacted is cancelled by etcd: list again and
   compare with what is held (by each key's mod_revision), then watch from the new list.
4. A lost connection (member killed, stopped, or cut off from the cluster's leader) moves
   to the next listed member at once, and after a round of them backs off; the watch
   resumes from the last revision seen, so nothing is missed and nothing is listed again
   unless it was compacted meanwhile.  While no member answers the source keeps its last
   set and says ``connected = False``.

The client is etcd's gRPC gateway, JSON over HTTP (``POST /v3/kv/range``, the streaming
``POST /v3/watch``; keys and values base64), with aiohttp: etcd 3.4 (Debian's) serves it
under ``/v3/`` as every later version does, and it needs neither grpcio nor protobuf.
A watch stream carries nothing while nothing changes, so a member that has silently gone
away would not be noticed: every `CHECK_EVERY` seconds the source asks the member for a
linearizable count of the prefix (which needs the cluster's quorum), and moves on when
that fails.
"""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any, AsyncIterator, Awaitable, Callable, NamedTuple, TypeVar

import aiohttp

from ..errors import ConfigError
from . import native
from ._problems import Problems, SourceError
from ._unique import Located
from ._watching import Backoff, Changes, Contact, json_lines, problem_lines, snapshot, snapshots
from .documents import parse
from .live import Snapshot

__all__ = ["EtcdSource", "CHECK_EVERY", "PAGE"]

#: Seconds between the checks that the watched member is alive and has a leader.
CHECK_EVERY = 2.0
#: Seconds a range request (a list page, a check) may take.
REQUEST_TIMEOUT = 5.0
#: Keys per list page: a page stays far below gRPC's message size limit.
PAGE = 500

T = TypeVar("T")
_ENDPOINT = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}")
# etcd's gRPC code for "required revision has been compacted" (OutOfRange)
_OUT_OF_RANGE = 11


class _Lost(Exception):
    """The member cannot serve the watch now: try another."""


# What the network, or a server answering what it should not, can do to a reader: each
# is retried (a malformed answer as much as a reset connection), none ends the source.
_RETRIED = (_Lost, aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError, TypeError, AttributeError)


class _Compacted(Exception):
    """The revision asked for is gone from etcd's history: list again."""


class _Key(NamedTuple):
    mod_revision: int
    located: Located | None
    problems: tuple[str, ...]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _prefix_end(prefix: bytes) -> bytes:
    """The first key after every key starting with ``prefix`` (etcd's range_end)."""
    return prefix[:-1] + bytes([prefix[-1] + 1])  # the prefix ends in "/", never in 0xff


def parse_spec(spec: str) -> tuple[list[str], str]:
    """(["host:port", ...], "/PREFIX/") of an ``etcd://`` source, or `ConfigError`.

    >>> parse_spec("etcd://127.0.0.1:2379,10.0.0.2:2379/lbcore/services")
    (['127.0.0.1:2379', '10.0.0.2:2379'], '/lbcore/services/')
    """
    rest = spec[len("etcd://"):]
    members, slash, path = rest.partition("/")
    endpoints = members.split(",")
    form = "etcd://HOST:PORT[,HOST:PORT...]/PREFIX"
    for endpoint in endpoints:
        if not _ENDPOINT.fullmatch(endpoint) or not 0 < int(endpoint.rsplit(":", 1)[1]) < 65536:
            raise ConfigError("source", spec, f"has {endpoint!r} where a member HOST:PORT belongs; valid: {form}")
    path = path.strip("/")
    if not slash or not path:
        raise ConfigError("source", spec, f"names no key PREFIX (lbcore reads one key per service under it); valid: {form}")
    return endpoints, f"/{path}/"


class EtcdSource:
    """The Services under one etcd prefix; see the module docstring."""

    def __init__(self, spec: str, *, clock: Callable[[], float]):
        self.source = spec
        self.members, self.prefix = parse_spec(spec)
        self._contact = Contact(spec)
        self._clock = clock
        self._prefix = self.prefix.encode()
        self._range = {"key": _b64(self._prefix), "range_end": _b64(_prefix_end(self._prefix))}
        self._keys: dict[bytes, _Key] = {}
        #: The newest revision whose changes are all held: the watch resumes after it.
        self._revision = 0

    @property
    def connected(self) -> bool:
        """Whether the source is watching a member now."""
        return self._contact.connected

    def watch(self) -> AsyncIterator[Snapshot]:
        changes = Changes(self._clock)
        return snapshots(self._read(changes), changes, self._snapshot)

    # -- the reader ---------------------------------------------------------------------

    async def _read(self, changes: Changes) -> None:
        backoff = Backoff()
        member = 0
        failures = 0  # in a row, since the source last had contact
        listed, first = False, True
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                base = f"http://{self.members[member]}"
                try:
                    if not listed:
                        if self._list(await self._range_all(session, base)) or first:
                            changes.seen()
                        listed, first = True, False
                        self._made(backoff)
                    await self._watch(session, base, changes, backoff)
                except _Compacted:
                    listed = False  # list again at once, from the same member
                except _RETRIED as error:
                    if self.connected:
                        failures = 0
                    self._contact.lost(_Lost(f"{self.members[member]}: {str(error) or type(error).__name__}"))
                    member = (member + 1) % len(self.members)
                    failures += 1
                    if failures >= len(self.members):  # a whole round of members failed
                        failures = 0
                        await backoff.wait()

    def _made(self, backoff: Backoff) -> None:
        self._contact.made()
        backoff.reset()

    async def _post(self, session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
        async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as answer:
            data = await answer.json(content_type=None)
        if "error" in data or answer.status != 200:
            if data.get("code") == _OUT_OF_RANGE:
                raise _Compacted()
            raise _Lost(data.get("message") or data.get("error") or answer.status)
        return data

    async def _range_all(self, session: aiohttp.ClientSession, base: str) -> tuple[int, dict[bytes, dict]]:
        """(revision, key -> kv) of every key under the prefix, one consistent revision."""
        kvs: dict[bytes, dict] = {}
        body: dict[str, Any] = {**self._range, "limit": PAGE}
        revision = 0
        while True:
            page = await self._post(session, f"{base}/v3/kv/range", body)
            revision = revision or int(page["header"]["revision"])
            for kv in page.get("kvs", ()):
                kvs[base64.b64decode(kv["key"])] = kv
            if not page.get("more"):
                return revision, kvs
            # the next page starts just after the last key, at the first page's revision
            body = {**body, "key": _b64(base64.b64decode(page["kvs"][-1]["key"]) + b"\0"), "revision": revision}

    def _list(self, listing: tuple[int, dict[bytes, dict]]) -> bool:
        """Hold what a list returned; whether anything differs from what was held."""
        revision, kvs = listing
        changed = set(self._keys) != set(kvs)
        keys = {}
        for key, kv in kvs.items():
            known = self._keys.get(key)
            if known is not None and known.mod_revision == int(kv["mod_revision"]):
                keys[key] = known
            else:
                keys[key] = self._parse(key, kv)
                changed = True
        self._keys = keys
        self._revision = revision
        return changed

    async def _watch(self, session: aiohttp.ClientSession, base: str, changes: Changes, backoff: Backoff) -> None:
        """Follow the watch stream from the held revision until it breaks (raises)."""
        create = {"create_request": {**self._range, "start_revision": self._revision + 1}}
        # hasleader: a member cut off from the leader cancels the watch (etcd's WithRequireLeader)
        headers = {"Grpc-Metadata-hasleader": "true"}
        async with session.post(f"{base}/v3/watch", json=create, headers=headers) as stream:
            if stream.status != 200:
                raise _Lost(f"watch answered HTTP {stream.status}")
            check = asyncio.ensure_future(self._check(session, base))
            lines = json_lines(stream.content)
            try:
                while True:
                    self._answer(await _unless(lines.__anext__(), check), changes, backoff)
            except StopAsyncIteration:
                raise _Lost("the watch stream ended") from None
            finally:
                check.cancel()

    def _answer(self, message: dict[str, Any], changes: Changes, backoff: Backoff) -> None:
        """Apply one watch answer."""
        if "error" in message:  # the gateway's {"error": {"grpc_code", "message", ...}}
            error = message["error"]
            raise _Lost(error.get("message", error) if isinstance(error, dict) else error)
        result = message["result"]
        if result.get("canceled"):
            if int(result.get("compact_revision", 0)):
                raise _Compacted()
            raise _Lost(result.get("cancel_reason", "the watch was cancelled"))
        if result.get("created"):
            self._made(backoff)
        events = result.get("events", ())
        for event in events:
            kv = event["kv"]
            key = base64.b64decode(kv["key"])
            if event.get("type") == "DELETE":  # PUT is the default and may be left out
                self._keys.pop(key, None)
            else:
                self._keys[key] = self._parse(key, kv)
            self._revision = max(self._revision, int(kv["mod_revision"]))
        if events:
            changes.seen()

    async def _check(self, session: aiohttp.ClientSession, base: str) -> None:
        """Return (ending the watch) when the member stops answering linearizable reads."""
        while True:
            await asyncio.sleep(CHECK_EVERY)
            try:
                await self._post(session, f"{base}/v3/kv/range", {**self._range, "count_only": True})
            except (_Compacted, *_RETRIED):
                return

    # -- values -------------------------------------------------------------------------

    def _parse(self, key: bytes, kv: dict[str, Any]) -> _Key:
        """One key's service, or the problems that keep it out."""
        revision = int(kv["mod_revision"])
        text_key = key.decode("utf-8", "backslashreplace")
        where = f"etcd key {text_key}"
        problems = Problems()
        name = text_key[len(self.prefix):]
        try:
            value = base64.b64decode(kv.get("value", "")).decode("utf-8")
            documents = parse(value, where)
        except UnicodeDecodeError as error:
            problems.report(where, "value", error.object[error.start:error.end], f"at offset {error.start} is not UTF-8")
            return _Key(revision, None, tuple(problem_lines(problems)))
        except SourceError as error:
            return _Key(revision, None, tuple(problem_lines(error)))
        if len(documents) != 1 or not isinstance(documents[0], dict):
            shown = documents[0] if len(documents) == 1 else documents
            problems.report(where, "value", shown, "must be one service: a mapping of the keys of one 'services:' item")
            return _Key(revision, None, tuple(problem_lines(problems)))
        fields = documents[0]
        if "name" in fields and fields["name"] != name:
            problems.report(where, "name", fields["name"], f"differs from the key's name {name!r}; leave it out or make them equal")
        located = native.service_from({**fields, "name": name}, where, problems)
        lines = problem_lines(problems)
        return _Key(revision, None if lines else located, tuple(lines))

    def _snapshot(self, changed_at: float) -> Snapshot:
        ordered = [self._keys[key] for key in sorted(self._keys)]
        earlier = [line for entry in ordered for line in entry.problems]
        located = [entry.located for entry in ordered if entry.located is not None]
        return snapshot(self.source, located, Problems(), changed_at, earlier=earlier)


async def _unless(reading: Awaitable[T], check: asyncio.Future[None]) -> T:
    """What ``reading`` gives, unless ``check`` ends first: then the member is lost."""
    read = asyncio.ensure_future(reading)
    try:
        await asyncio.wait({read, check}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not read.done():
            read.cancel()
            # the stream is dropped with it: what the read ends with no longer matters
            read.add_done_callback(lambda task: task.cancelled() or task.exception())
    if read.cancelled():
        raise _Lost("the member stopped answering")
    return read.result()
