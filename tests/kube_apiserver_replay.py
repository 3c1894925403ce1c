"""A stand-in for kube-apiserver's list and watch of Services and EndpointSlices, over HTTPS.

No API server runs on our machines, so the Kubernetes source is tested against this one.
It keeps to the answers the API documents and real servers were recorded giving; each
shape below names its source:

- List (``GET /api/v1/services?limit=N[&continue=T]``): ``{"kind": "ServiceList",
  "apiVersion": "v1", "metadata": {"resourceVersion": RV, "continue": T}, "items": [...]}``,
  items without ``kind``/``apiVersion``, the same ``resourceVersion`` on every page
  (kubernetes/website ``content/en/docs/reference/using-api/api-concepts.md``, "Retrieving
  large results sets in chunks"; items as recorded in tests/data/kube/).  An expired
  ``continue`` token: HTTP 410 with a ``Status`` whose message is the API server's
  ("The provided continue parameter is too old ...", ``reason: Expired``).
- Watch (``?watch=1&resourceVersion=RV&allowWatchBookmarks=true&timeoutSeconds=S``): HTTP
  200, chunked, one JSON object per line ``{"type": ADDED|MODIFIED|DELETED, "object":
  {...with kind and apiVersion}}`` for each change after RV (api-concepts.md, "Efficient
  detection of changes"); ``BOOKMARK`` events whose object carries only ``kind``,
  ``apiVersion`` and ``metadata.resourceVersion`` (api-concepts.md, "Watch bookmarks");
  the stream ends after ``timeoutSeconds``.
- A watch from a version older than the history kept: HTTP 200 and one ERROR event
  ``{"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
  "status": "Failure", "message": "too old resource version: 1 (3171407)", "reason":
  "Expired", "code": 410}}`` (recorded with ``kubectl get --raw
  '/api/v1/pods?watch=true&resourceVersion=1'``, and the same line in
  teseraio/ensemble ``operator/provider/k8s/k8s_test.go``), or, as servers without the
  watch cache answer, HTTP 410 with the ``Status`` ``{"kind": "Status", "apiVersion":
  "v1", "metadata": {}, "status": "Failure", "message": "The resourceVersion for the
  provided list is too old.", "reason": "Expired", "code": 410}`` (same test file).
- No or a wrong token: HTTP 401 with ``{"kind": "Status", "apiVersion": "v1",
  "metadata": {}, "status": "Failure", "message": "Unauthorized", "reason":
  "Unauthorized", "code": 401}``.

Resource versions are one counter for the whole store, as etcd's revision is.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import ssl
import subprocess
from pathlib import Path
from typing import Any

from aiohttp import web

DATA = Path(__file__).parent / "data" / "kube"

#: resource path -> (kind, apiVersion, list kind)
RESOURCES = {
    "/api/v1/services": ("Service", "v1", "ServiceList"),
    "/apis/discovery.k8s.io/v1/endpointslices": ("EndpointSlice", "discovery.k8s.io/v1", "EndpointSliceList"),
}
SERVICES, SLICES = RESOURCES


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, by openssl."""
    paths = {name: directory / name for name in (
        "ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key")}

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"]
    openssl("req", "-x509", *curve, "-subj", "/CN=lbcore-test-ca",
            "-keyout", str(paths["ca.key"]), "-out", str(paths["ca.crt"]))
    for who, extra in (("server", ["-addext", "subjectAltName=IP:127.0.0.1"]), ("client", [])):
        openssl("req", "-x509", *curve, "-subj", f"/CN=lbcore-test-{who}", *extra,
                "-CA", str(paths["ca.crt"]), "-CAkey", str(paths["ca.key"]),
                "-keyout", str(paths[f"{who}.key"]), "-out", str(paths[f"{who}.crt"]))
    return paths


class ApiServer:
    """Serves Services and EndpointSlices from a store the test changes as it goes."""

    def __init__(self, certificates: dict[str, Path], *, token: str | None = "test-token",
                 client_certificates: bool = False):
        self.token = token
        self.revision = 0
        #: Changes at or below this version are gone from the history (compacted).
        self.oldest = 0
        self.objects: dict[str, dict[tuple[str, str], dict]] = {path: {} for path in RESOURCES}
        self.history: list[tuple[int, str, str, dict]] = []
        #: (path, query) of every request, in order.
        self.requests: list[tuple[str, dict[str, str]]] = []
        #: How a watch from a compacted version is refused: "event" or "status".
        self.expired_as = "event"
        self._watches: set[tuple[str, asyncio.Queue]] = set()
        self._pages: dict[str, list[dict]] = {}
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.load_cert_chain(certificates["server.crt"], certificates["server.key"])
        if client_certificates:
            self._tls.load_verify_locations(certificates["ca.crt"])
            self._tls.verify_mode = ssl.CERT_REQUIRED
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle --------------------------------------------------------------------

    async def start(self, port: int = 0) -> ApiServer:
        app = web.Application()
        for path in RESOURCES:
            app.router.add_get(path, self._serve)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port or self.port, ssl_context=self._tls, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        """Stop serving: open watches are cut, new connections refused."""
        self.end_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # -- the store --------------------------------------------------------------------

    def load(self, path: str, list_file: str) -> None:
        """Objects of a recorded list, at their recorded versions."""
        recorded = json.loads((DATA / list_file).read_text())
        for item in recorded["items"]:
            metadata = item["metadata"]
            self.objects[path][(metadata["namespace"], metadata["name"])] = item
        self.revision = max(self.revision, int(recorded["metadata"]["resourceVersion"]))

    def put(self, path: str, obj: dict, *, deliver: bool = True) -> int:
        """Create or replace an object (given without kind/apiVersion); its new version."""
        obj = copy.deepcopy(obj)
        metadata = obj["metadata"]
        key = (metadata.get("namespace", "default"), metadata["name"])
        kind = "MODIFIED" if key in self.objects[path] else "ADDED"
        self.revision += 1
        metadata["resourceVersion"] = str(self.revision)
        self.objects[path][key] = obj
        self._record(path, kind, obj, deliver)
        return self.revision

    def delete(self, path: str, namespace: str, name: str, *, deliver: bool = True) -> int:
        obj = copy.deepcopy(self.objects[path].pop((namespace, name)))
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)  # a deletion's version, as the API gives it
        self._record(path, "DELETED", obj, deliver)
        return self.revision

    def _record(self, path: str, kind: str, obj: dict, deliver: bool) -> None:
        self.history.append((self.revision, path, kind, obj))
        if deliver:
            for watched, queue in self._watches:
                if watched == path:
                    queue.put_nowait(self._event(path, kind, obj))

    def compact(self) -> None:
        """Forget the history: a watch from any version before now gets a 410."""
        self.oldest = self.revision
        self.history.clear()

    # -- what open watches see ---------------------------------------------------------

    def bookmark(self) -> None:
        """Send every open watch a BOOKMARK at the current version."""
        for path, queue in self._watches:
            kind, api_version, _ = RESOURCES[path]
            queue.put_nowait({"type": "BOOKMARK", "object": {
                "kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": str(self.revision)}}})

    def end_watches(self) -> None:
        """End every open watch, as the server does when its timeoutSeconds run out."""
        for _, queue in self._watches:
            queue.put_nowait(None)

    def send_expired(self) -> None:
        """An ERROR 410 event on every open watch, then the end of it."""
        for _, queue in self._watches:
            queue.put_nowait({"type": "ERROR", "object": status(
                410, "Expired", f"too old resource version: {self.oldest} ({self.revision})")})
            queue.put_nowait(None)

    @property
    def open_watches(self) -> int:
        return len(self._watches)

    def lists(self, path: str) -> int:
        """How many list requests (first pages) ``path`` has had."""
        return sum(1 for p, query in self.requests if p == path and "watch" not in query and "continue" not in query)

    def watches(self, path: str) -> list[dict[str, str]]:
        return [query for p, query in self.requests if p == path and "watch" in query]

    # -- HTTP -------------------------------------------------------------------------

    @staticmethod
    def _event(path: str, kind: str, obj: dict) -> dict:
        object_kind, api_version, _ = RESOURCES[path]
        return {"type": kind, "object": {"kind": object_kind, "apiVersion": api_version, **obj}}

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        path, query = request.path, dict(request.query)
        self.requests.append((path, query))
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response(status(401, "Unauthorized", "Unauthorized"), status=401)
        if query.get("watch") in ("1", "true"):
            return await self._watch(request, path, query)
        return self._list(path, query)

    def _list(self, path: str, query: dict[str, str]) -> web.Response:
        _, api_version, list_kind = RESOURCES[path]
        limit = int(query.get("limit", 0)) or None
        token = query.get("continue")
        if token:
            _, version, start = json.loads(base64.b64decode(token))
            if version < self.oldest or token not in self._pages:
                return web.json_response(status(410, "Expired", (
                    "The provided continue parameter is too old to display a consistent list result. "
                    "You can start a new list without the continue parameter.")), status=410)
            items = self._pages[token]
        else:
            version, start = self.revision, 0
            items = [copy.deepcopy(obj) for _, obj in sorted(self.objects[path].items())]
        page = items[start:start + limit] if limit else items[start:]
        metadata: dict[str, Any] = {"resourceVersion": str(version)}
        if limit and start + limit < len(items):
            following = base64.b64encode(json.dumps([path, version, start + limit]).encode()).decode()
            self._pages[following] = items
            metadata["continue"] = following
        return web.json_response({"kind": list_kind, "apiVersion": api_version, "metadata": metadata, "items": page})

    async def _watch(self, request: web.Request, path: str, query: dict[str, str]) -> web.StreamResponse:
        since = int(query.get("resourceVersion") or self.revision)
        if since < self.oldest and self.expired_as == "status":
            return web.json_response(
                status(410, "Expired", "The resourceVersion for the provided list is too old."), status=410)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        if since < self.oldest:
            await self._send(response, {"type": "ERROR", "object": status(
                410, "Expired", f"too old resource version: {since} ({self.revision})")})
            return response
        queue: asyncio.Queue = asyncio.Queue()
        for version, watched, kind, obj in self.history:
            if watched == path and version > since:
                queue.put_nowait(self._event(path, kind, obj))
        bookmarks = query.get("allowWatchBookmarks") == "true"
        entry = (path, queue)
        self._watches.add(entry)

        async def stream() -> None:
            while (event := await queue.get()) is not None:
                if event["type"] != "BOOKMARK" or bookmarks:
                    await self._send(response, event)

        try:
            await asyncio.wait_for(stream(), int(query.get("timeoutSeconds", 1800)))
        except (asyncio.TimeoutError, ConnectionResetError):
            pass
        finally:
            self._watches.discard(entry)
        return response

    @staticmethod
    async def _send(response: web.StreamResponse, event: dict) -> None:
        await response.write(json.dumps(event).encode() + b"\n")
