"""Loading inputs: what `lbcore.sources.load_files` costs over building the same models.

Run (figures in bench/README.md, section "Sources"):

    python -m pytest bench/bench_sources.py --benchmark-enable -q

A dump of 1,000 Services x 10 endpoints, as kubectl prints it (JSON and YAML), and the
same Services in lbcore's own format.  The floor is constructing those 1,000 Services
and 10,000 Endpoints directly: the models' validation, which no loader can skip.
"""

from __future__ import annotations

import json

import pytest
import yaml

from lbcore import Endpoint, Service
from lbcore.sources import load_files

SERVICES = 1000
ENDPOINTS = 10


def _vip(i: int) -> str:
    return f"10.96.{i // 256}.{i % 256}"


def _endpoint_ip(i: int, j: int) -> str:
    return f"10.{200 + j}.{i // 256}.{i % 256}"


def _kubernetes_dump() -> dict:
    items = []
    for i in range(SERVICES):
        namespace, name = f"ns{i % 20}", f"svc{i}"
        items.append({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterIP": _vip(i), "clusterIPs": [_vip(i)], "ipFamilies": ["IPv4"], "type": "ClusterIP",
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]},
        })
        items.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{name}-x1", "namespace": namespace, "labels": {"kubernetes.io/service-name": name}},
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [_endpoint_ip(i, j)], "conditions": {"ready": True, "serving": True, "terminating": False}}
                          for j in range(ENDPOINTS)],
        })
    return {"apiVersion": "v1", "kind": "List", "items": items}


def _native() -> dict:
    return {"services": [
        {"name": f"svc{i}", "vip": _vip(i), "port": 80,
         "endpoints": [{"ip": _endpoint_ip(i, j), "port": 8080} for j in range(ENDPOINTS)]}
        for i in range(SERVICES)
    ]}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("sources")
    paths = {}
    for name, document in (("kubernetes", _kubernetes_dump()), ("native", _native())):
        for suffix, text in (("json", json.dumps(document)), ("yaml", yaml.safe_dump(document))):
            path = directory / f"{name}.{suffix}"
            path.write_text(text)
            paths[f"{name}.{suffix}"] = str(path)
    return paths


def _models() -> list[Service]:
    return [Service(f"svc{i}", _vip(i), 80, endpoints=[Endpoint(_endpoint_ip(i, j), 8080) for j in range(ENDPOINTS)])
            for i in range(SERVICES)]


def test_floor_models(benchmark):
    assert len(benchmark(_models)) == SERVICES


@pytest.mark.parametrize("name", ["native.json", "kubernetes.json", "native.yaml", "kubernetes.yaml"])
def test_load_files(benchmark, files, name):
    services = benchmark.pedantic(load_files, args=([files[name]],), rounds=5, iterations=1)
    assert len(services) == SERVICES and all(len(s.endpoints) == ENDPOINTS for s in services)
