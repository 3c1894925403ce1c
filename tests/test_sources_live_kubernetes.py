"""The Kubernetes source against a replay of the API's list and watch answers, over real HTTPS.

tests/kube_apiserver_replay.py serves the recorded shapes (tests/data/kube/README.md
names where each comes from); the source reads them through a kubeconfig with a CA and
a token (or a client certificate), as it would read a cluster's.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import shutil

import pytest

from kube_apiserver_replay import SERVICES, SLICES, ApiServer, make_certificates
from lbcore import ConfigError
from lbcore.sources import kubeconfig
from lbcore.sources import kubernetes_watch
from lbcore.sources._watching import Backoff
from lbcore.sources.live import open_source

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")

WAIT = 10 * (Backoff.MOST + 1)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("pki"))


def write_kubeconfig(path, server, certificates, *, token="test-token", client_certificate=False):
    def data(name):
        return base64.b64encode(certificates[name].read_bytes()).decode()

    user = {"token": token} if token else {}
    if client_certificate:  # one as data, one as a path relative to the file, as kubectl allows
        shutil.copy(certificates["client.key"], path.parent / "client.key")
        user = {"client-certificate-data": data("client.crt"), "client-key": "client.key"}
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "replay", "cluster": {"server": server, "certificate-authority-data": data("ca.crt")}}],
        "users": [{"name": "lbcore", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "replay", "user": "lbcore"}}],
    }
    path.write_text(json.dumps(config))
    return str(path)


def service(namespace, name, vip, port=80, **annotations):
    return {"metadata": {"name": name, "namespace": namespace, "annotations": annotations},
            "spec": {"clusterIP": vip, "clusterIPs": [vip], "type": "ClusterIP",
                     "ports": [{"name": "http", "protocol": "TCP", "port": port, "targetPort": 8080}]}}


def endpoint_slice(namespace, service_name, slice_name, *addresses):
    return {"metadata": {"name": slice_name, "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": "IPv4", "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in addresses]}


def table(snapshot):
    return {s.name: [e.address for e in s.endpoints] for s in snapshot.services}


class Cluster:
    """A replayed API server loaded with the recorded lists, and a source watching it."""

    def __init__(self, tmp_path, certificates, **server_options):
        self.server = ApiServer(certificates, **server_options)
        self.server.load(SERVICES, "services-list.json")
        self.server.load(SLICES, "endpointslices-list.json")
        self.tmp_path = tmp_path
        self.certificates = certificates

    async def __aenter__(self):
        await self.server.start()
        return self

    async def __aexit__(self, *exc_info):
        if hasattr(self, "snapshots"):
            await self.snapshots.aclose()
        await self.server.stop()

    def open(self, **kubeconfig_options):
        path = write_kubeconfig(self.tmp_path / "kubeconfig", self.server.url, self.certificates, **kubeconfig_options)
        self.source = open_source("kubernetes", kubeconfig=path)
        self.snapshots = self.source.watch()
        return self.source

    async def next(self, timeout=WAIT):
        return await asyncio.wait_for(self.snapshots.__anext__(), timeout)

    async def until_connected(self):
        """Wait for ``connected``: the server counts a watch a moment before the source sees its answer."""
        for _ in range(int(WAIT / 0.01)):
            if self.source.connected:
                return
            await asyncio.sleep(0.01)

    async def watching(self, count=2):
        """Wait until the source has ``count`` watches open."""
        for _ in range(int(WAIT / 0.01)):
            if self.server.open_watches >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the source did not start watching")


def run(coroutine):
    return asyncio.run(coroutine)


RECORDED = {
    "default/kubernetes:https": ["172.18.0.2:6443"],
    "kube-system/kube-dns:dns": ["10.244.0.3:53"],
    "kube-system/kube-dns:dns-tcp": ["10.244.0.3:53"],
    "kube-system/kube-dns:metrics": ["10.244.0.3:9153"],
    "shop/web:http": ["10.244.1.7:8080", "10.244.2.9:8080"],
}


# -- list, then watch -------------------------------------------------------------------


def test_the_recorded_lists_map_as_lbcore_check_maps_a_dump(tmp_path, certificates):
    async def main():
        async with Cluster(tmp_path, certificates) as cluster:
            cluster.open()
            first = await cluster.next()
            await cluster.watching()
            await cluster.until_connected()
            return first, cluster.source.connected, cluster.server

    first, connected, server = run(main())
    assert table(first) == RECORDED and first.problems == () and connected
    web = next(s for s in first.services if s.name == "shop/web:http")
    assert (web.scheduler, web.affinity_timeout, web.vip, web.protocol) == ("wrr", 10800, "10.96.12.40", "tcp")
    assert [(e.ready, e.terminating) for e in web.endpoints] == [(True, False), (False, True)]
    dns = next(s for s in first.services if s.name == "kube-system/kube-dns:dns")
    assert dns.protocol == "udp"
    # a list in pages, then a watch from the list's version with bookmarks
    for path in (SERVICES, SLICES):
        assert server.lists(path) == 1
        [watch] = server.watches(path)
        assert watch["resourceVersion"] == "60485" and watch["allowWatchBookmarks"] == "true"
        assert 300 <= int(watch["timeoutSeconds"]) <= 600


def test_watch_events_change_the_services_in_order(tmp_path, certificates):
    async def main():
        async with Cluster(tmp_path, certificates) as cluster:
            server = cluster.server
            cluster.open()
            seen = [table(await cluster.next())]
            await cluster.watching()
            server.put(SERVICES, service("shop", "api", "10.96.12.41"))
            seen.append(table(await cluster.next()))
            server.put(SLICES, endpoint_slice("shop", "api", "api-abcde", "10.244.3.1"))
            seen.append(table(await cluster.next()))
            server.put(SLICES, endpoint_slice("shop", "api", "api-abcde", "10.244.3.1", "10.244.3.2"))
            seen.append(table(await cluster.next()))
            server.delete(SERVICES, "shop", "web")
            seen.append(table(await cluster.next()))
            return seen

    seen = run(main())
    assert [row.get("shop/api:http") for row in seen] == [
        None, [], ["10.244.3.1:8080"], ["10.244.3.1:8080", "10.244.3.2:8080"], ["10.244.3.1:8080", "10.244.3.2:8080"]]
    assert "shop/web:http" in seen[3] and "shop/web:http" not in seen[4]
    assert all(row[name] == RECORDED[name] for row in seen for name in RECORDED if name != "shop/web:http")


def test_a_bookmark_moves_the_version_the_next_watch_starts_from(tmp_path, certificates):
    async def main():
        async with Cluster(tmp_path, certificates) as cluster:
            server = cluster.server
            cluster.open()
            await cluster.next()
            await cluster.watching()
            # changes to objects of another kind move the shared version on
            for i in range(3):
                server.put(SERVICES, service("other", f"s{i}", f"10.96.13.{i}"))
            await cluster.next()
            server.bookmark()
            await asyncio.sleep(0.2)
            server.end_watches()  # as the server's timeoutSeconds would
            await asyncio.sleep(0.2)
            await cluster.watching()
            return server

    server = run(main())
    slices = server.watches(SLICES)
    assert [w["resourceVersion"] for w in slices] == ["60485", "60488"]
    assert server.lists(SLICES) == 1 and server.lists(SERVICES) == 1  # a watch that ends is no reason to list


@pytest.mark.parametrize("expired_as", ["event", "status"])
def test_a_410_lists_again_and_the_difference_is_served(tmp_path, certificates, expired_as):
    async def main():
        async with Cluster(tmp_path, certificates) as cluster:
            server = cluster.server
            server.expired_as = expired_as
            cluster.open()
            await cluster.next()
            await cluster.watching()
            # changes the source never hears of, then the history that held them is gone
            server.delete(SERVICES, "shop", "web", deliver=False)
            server.put(SERVICES, service("shop", "api", "10.96.12.41"), deliver=False)
            server.put(SLICES, endpoint_slice("shop", "api", "api-abcde", "10.244.3.1"), deliver=False)
            server.compact()
            if expired_as == "event":
                server.send_expired()  # an ERROR event with code 410 on the open watches
            else:
                server.end_watches()  # the watches come back and get HTTP 410
            after = await cluster.next()
            await cluster.watching()
            return after, server

    after, server = run(main())
    expected = {**RECORDED, "shop/api:http": ["10.244.3.1:8080"]}
    del expected["shop/web:http"]
    assert table(after) == expected
    assert server.lists(SERVICES) == 2 and server.lists(SLICES) == 2


def test_lists_come_in_pages_at_one_version(tmp_path, certificates, monkeypatch):
    monkeypatch.setattr(kubernetes_watch, "PAGE", 2)

    async def main():
        async with Cluster(tmp_path, certificates) as cluster:
            cluster.open()
            first = await cluster.next()
            return first, cluster.server

    first, server = run(main())
    assert table(first) == RECORDED
    pages = [query for path, query in server.requests if path == SERVICES and "watch" not in query]
    assert [("continue" in q, q["limit"]) for q in pages] == [(False, "2"), (True, "2")]


# -- problems and faults ----------------------------------------------------------------


def test_a_bad_object_is_named_and_the_rest_is_served(tmp_path, certificates):
    async def main():
        async with Cluster(tmp_path, certificates) as cluster:
            cluster.open()
            await cluster.next()
            await cluster.watching()
            cluster.server.put(SERVICES, service("shop", "api", "10.96.12.41", **{"lbcore.io/scheduler": "fastest"}))
            bad = await cluster.next()
            cluster.server.put(SERVICES, service("shop", "api", "10.96.12.41", **{"lbcore.io/scheduler": "mh"}))
            fixed = await cluster.next()
            return bad, fixed

    bad, fixed = run(main())
    assert table(bad) == RECORDED
    assert bad.problems == ("kubernetes: Service shop/api: metadata.annotations[lbcore.io/scheduler]: "
                            "'fastest' is not one of rr, wrr, lc, wlc, dh, sh, mh, p2c, ring",)
    assert fixed.problems == () and table(fixed)["shop/api:http"] == []


def test_a_server_that_goes_away_keeps_the_set_and_is_caught_up_with_when_back(tmp_path, certificates):
    async def main():
        async with Cluster(tmp_path, certificates) as cluster:
            server = cluster.server
            cluster.open()
            await cluster.next()
            await cluster.watching()
            following = asyncio.ensure_future(cluster.next())
            await server.stop()
            for _ in range(int(WAIT / 0.01)):
                if not cluster.source.connected:
                    break
                await asyncio.sleep(0.01)
            connected_while_down = cluster.source.connected
            server.delete(SERVICES, "shop", "web")
            await asyncio.sleep(1)
            assert not following.done()
            await server.start()  # the same port, the history kept: the watch resumes
            after = await following
            await cluster.watching()
            await cluster.until_connected()
            return connected_while_down, after, cluster.source.connected, server

    connected_while_down, after, connected, server = run(main())
    assert not connected_while_down and connected
    assert "shop/web:http" not in table(after) and len(table(after)) == len(RECORDED) - 1
    assert server.lists(SERVICES) == 1  # resumed from its version, not listed again


def test_a_client_certificate_authenticates(tmp_path, certificates):
    async def main():
        async with Cluster(tmp_path, certificates, token=None, client_certificates=True) as cluster:
            cluster.open(token=None, client_certificate=True)
            return await cluster.next()

    assert table(run(main())) == RECORDED


def test_a_refused_token_leaves_the_source_unconnected_and_says_why_once(tmp_path, certificates, caplog):
    async def main():
        async with Cluster(tmp_path, certificates) as cluster:
            cluster.open(token="wrong")
            with pytest.raises(asyncio.TimeoutError):
                await cluster.next(timeout=1.5)
            return cluster.source.connected, cluster.server

    connected, server = run(main())
    assert not connected and server.lists(SERVICES) >= 2  # refused, and tried again
    said = [r.getMessage() for r in caplog.records if r.name == "lbcore.sources" and "/api/v1/services" in r.getMessage()]
    assert said == ["kubernetes /api/v1/services: GET /api/v1/services: HTTP 401: Unauthorized; "
                    "keeping the last set and retrying"]


# -- configuration ----------------------------------------------------------------------


def test_kubeconfig_problems_are_named(tmp_path, certificates):
    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, "https://127.0.0.1:1", certificates)
    config = json.loads(path.read_text())

    def refused(change, message):
        broken = copy.deepcopy(config)
        change(broken)
        path.write_text(json.dumps(broken))
        with pytest.raises(ConfigError) as caught:
            open_source("kubernetes", kubeconfig=str(path))
        assert str(caught.value) == f"{path}: {message}"

    refused(lambda c: c.pop("current-context"), "current-context: None is required: it names the context to use")
    refused(lambda c: c.update({"current-context": "prod"}), "contexts: 'prod' has no entry of that name; valid: test")
    refused(lambda c: c["users"][0]["user"].update({"exec": {"command": "aws"}}),
            "users[lbcore].user.exec: {'command': 'aws'} is an exec credential plugin, which lbcore does not run; "
            "use a token or a client certificate")
    refused(lambda c: c["clusters"][0]["cluster"].update({"server": "127.0.0.1:6443"}),
            "clusters[replay].cluster.server: '127.0.0.1:6443' must be an http(s):// URL")
    with pytest.raises(ConfigError, match="kubeconfig: 1 must be the path of a kubeconfig file"):
        open_source("kubernetes", kubeconfig=1)


def test_in_cluster_reads_the_environment_and_the_service_account(tmp_path, certificates):
    account = tmp_path / "serviceaccount"
    account.mkdir()
    shutil.copy(certificates["ca.crt"], account / "ca.crt")
    (account / "token").write_text("first\n")
    cluster = kubeconfig.in_cluster({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}, str(account))
    assert cluster.server == "https://[fd00::1]:443"
    assert cluster.headers() == {"Authorization": "Bearer first"}
    (account / "token").write_text("rotated\n")  # the kubelet rotates projected tokens
    assert cluster.headers() == {"Authorization": "Bearer rotated"}
    with pytest.raises(ConfigError, match="needs --kubeconfig PATH outside a pod"):
        kubeconfig.in_cluster({}, str(account))
