"""Kubernetes Service + EndpointSlice objects map to Services the way kube-proxy maps them."""

from __future__ import annotations

import copy
import json
import os

import pytest
import yaml

from lbcore import Endpoint, Service
from lbcore.sources import SourceError, kubernetes, load_files

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")
DUMP_YAML = os.path.join(EXAMPLES, "k8s-dump.yaml")
DUMP_JSON = os.path.join(EXAMPLES, "k8s-dump.json")


def service(name="web", namespace="shop", cluster_ip="10.96.0.10", ports=None, **spec):
    """A v1 Service as kubectl prints it, with the fields a test cares about."""
    body = {"clusterIP": cluster_ip, "ports": ports or [{"name": "http", "port": 80, "protocol": "TCP"}]}
    body.update(spec)
    annotations = body.pop("annotations", None)
    labels = body.pop("labels", None)
    metadata = {"name": name, "namespace": namespace}
    if annotations is not None:
        metadata["annotations"] = annotations
    if labels is not None:
        metadata["labels"] = labels
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": body}


def endpoint(address, ready=None, serving=None, terminating=None, addresses=None):
    conditions = {k: v for k, v in (("ready", ready), ("serving", serving), ("terminating", terminating)) if v is not None}
    return {"addresses": addresses or [address], "conditions": conditions}


def endpoint_slice(name="web-abc12", namespace="shop", service_name="web", address_type="IPv4",
                   ports=None, endpoints=()):
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace, "labels": {"kubernetes.io/service-name": service_name}},
        "addressType": address_type,
        "ports": ports if ports is not None else [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": list(endpoints),
    }


def load(*objects, notes=None):
    return kubernetes.load(objects, "k8s.yaml", notes=notes)


def problems(*objects):
    with pytest.raises(SourceError) as caught:
        load(*objects)
    return [str(problem) for problem in caught.value.problems]


# -- the sample dump -------------------------------------------------------------------

READY = dict(ready=True, serving=True, terminating=False)


def ep(address, port, **conditions):
    return Endpoint(address, port, **(conditions or READY))


EXPECTED_DUMP = [
    Service("billing/ledger-db", "10.96.200.50", 5432,
            endpoints=[ep("192.168.10.20", 5432), ep("192.168.10.21", 5432)]),
    Service("default/kubernetes:https", "10.96.0.1", 443, endpoints=[ep("172.18.0.2", 6443)]),
    Service("kube-system/kube-dns:dns", "10.96.0.10", 53, "udp",
            endpoints=[ep("10.244.0.3", 53), ep("10.244.0.4", 53)]),
    Service("kube-system/kube-dns:dns-tcp", "10.96.0.10", 53, "tcp",
            endpoints=[ep("10.244.0.3", 53), ep("10.244.0.4", 53)]),
    Service("kube-system/kube-dns:metrics", "10.96.0.10", 9153,
            endpoints=[ep("10.244.0.3", 9153), ep("10.244.0.4", 9153)]),
    Service("shop/cart", "10.96.77.201", 8080, affinity_timeout=600,
            endpoints=[ep("10.244.1.12", 8080), ep("10.244.2.20", 8080)]),
    # Sorted by "ip:port" text as kube-proxy sorts (10.244.2.15 before 10.244.2.9);
    # 10.244.1.7 sits in two slices and counts once.
    Service("shop/frontend:http", "10.96.45.12", 80, scheduler="wrr", endpoints=[
        ep("10.244.1.7", 8080),
        ep("10.244.2.15", 8080),
        ep("10.244.2.9", 8080, ready=False, serving=True, terminating=True),
        ep("10.244.3.4", 8080, ready=False, serving=False, terminating=False),
    ]),
    Service("shop/orders:http", "10.96.88.14", 80, endpoints=[ep("10.244.2.31", 8080), ep("10.244.3.18", 8080)]),
    Service("shop/orders:grpc", "10.96.88.14", 9090, endpoints=[ep("10.244.2.31", 9090), ep("10.244.3.18", 9090)]),
    Service("shop/search:http", "10.96.120.7", 80, endpoints=[ep("10.244.1.40", 9200), ep("10.244.2.41", 9200)]),
    Service("shop/search:http.ipv6", "fd00:10:96::7a1", 80,
            endpoints=[ep("fd00:10:244:1::28", 9200), ep("fd00:10:244:2::29", 9200)]),
]


@pytest.mark.parametrize("path", [DUMP_YAML, DUMP_JSON], ids=["yaml", "json"])
def test_sample_dump_loads_into_exactly_the_expected_services(path):
    notes = []
    assert load_files([path], notes=notes) == EXPECTED_DUMP
    assert notes == [
        f"{path}: Service shop/catalog: skipped: headless (clusterIP: None), clients resolve the endpoints by DNS (kube-proxy skips it too)",
        f"{path}: Service shop/frontend: only the cluster IP is balanced; its node ports and load-balancer IPs are out of lbcore's scope",
        f"{path}: Service shop/payments: skipped: type ExternalName is a DNS alias, nothing to balance (kube-proxy skips it too)",
    ]


def test_json_twin_holds_the_same_objects_as_the_yaml_dump():
    with open(DUMP_YAML) as yaml_file, open(DUMP_JSON) as json_file:
        assert json.load(json_file) == yaml.safe_load(yaml_file)


def test_dump_is_the_list_kubectl_prints():
    with open(DUMP_YAML) as file:
        dump = yaml.safe_load(file)
    assert dump["kind"] == "List" and dump["apiVersion"] == "v1"
    kinds = [item["kind"] for item in dump["items"]]
    # kubectl get svc,endpointslices prints the Services, then the slices.
    assert kinds == sorted(kinds, key=lambda kind: kind != "Service")
    assert {item["metadata"]["namespace"] for item in dump["items"]} == {"billing", "default", "kube-system", "shop"}


def test_services_and_slices_may_come_from_separate_files(tmp_path):
    with open(DUMP_YAML) as file:
        items = yaml.safe_load(file)["items"]
    for kind in ("Service", "EndpointSlice"):
        chosen = [item for item in items if item["kind"] == kind]
        (tmp_path / f"{kind}.yaml").write_text(yaml.safe_dump_all(chosen))  # multi-document form
    assert load_files([str(tmp_path / "Service.yaml"), str(tmp_path / "EndpointSlice.yaml")]) == EXPECTED_DUMP


# -- names and ports -------------------------------------------------------------------


def test_one_service_per_port_named_as_kube_proxy_service_port_name():
    ports = [{"name": "http", "port": 80}, {"name": "metrics", "port": 9100, "protocol": "TCP"}]
    names = [s.name for s in load(service(ports=ports))]
    assert names == ["shop/web:http", "shop/web:metrics"]


def test_unnamed_port_gives_namespace_slash_name():
    [web] = load(service(ports=[{"port": 80}]))
    assert web.name == "shop/web" and web.protocol == "tcp"


def test_missing_namespace_reads_as_default():
    body = service()
    del body["metadata"]["namespace"]
    assert [s.name for s in load(body)] == ["default/web:http"]


def test_endpoint_port_matched_by_name_not_by_position():
    ports = [{"name": "http", "port": 80}, {"name": "admin", "port": 81}]
    slice_ports = [{"name": "admin", "port": 9001, "protocol": "TCP"}, {"name": "http", "port": 8080, "protocol": "TCP"}]
    http, admin = load(service(ports=ports), endpoint_slice(ports=slice_ports, endpoints=[endpoint("10.1.0.5")]))
    assert [e.address for e in http.endpoints] == ["10.1.0.5:8080"]
    assert [e.address for e in admin.endpoints] == ["10.1.0.5:9001"]


def test_endpoint_port_matched_by_protocol_too():
    ports = [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]
    slice_ports = [{"name": "dns", "port": 5353, "protocol": "TCP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]
    dns, dns_tcp = load(service(ports=ports), endpoint_slice(ports=slice_ports, endpoints=[endpoint("10.1.0.5")]))
    assert dns.endpoints == ()  # the slice's "dns" port is TCP, the service's UDP
    assert [e.address for e in dns_tcp.endpoints] == ["10.1.0.5:53"]


def test_unnamed_slice_port_matches_unnamed_service_port():
    [web] = load(service(ports=[{"port": 80}]),
                 endpoint_slice(ports=[{"port": 8080}], endpoints=[endpoint("10.1.0.5")]))
    assert [e.address for e in web.endpoints] == ["10.1.0.5:8080"]


def test_slice_port_without_number_is_skipped_with_a_note():
    notes = []
    [web] = load(service(), endpoint_slice(ports=[{"name": "http", "port": None}], endpoints=[endpoint("10.1.0.5")]),
                 notes=notes)
    assert web.endpoints == ()
    assert notes == ["k8s.yaml: EndpointSlice shop/web-abc12: ports[0] has no port number; skipped (kube-proxy ignores such a port too)"]


def test_slices_join_by_service_name_label_and_namespace():
    slices = [
        endpoint_slice("web-1", endpoints=[endpoint("10.1.0.1")]),
        endpoint_slice("web-2", namespace="other", endpoints=[endpoint("10.1.0.2")]),
        endpoint_slice("api-1", service_name="api", endpoints=[endpoint("10.1.0.3")]),
    ]
    notes = []
    [web] = load(service(), *slices, notes=notes)
    assert [e.ip for e in web.endpoints] == ["10.1.0.1"]
    assert notes == [
        "k8s.yaml: EndpointSlice other/web-2: not used: no Service other/web in the input",
        "k8s.yaml: EndpointSlice shop/api-1: not used: no Service shop/api in the input",
    ]


def test_service_without_slices_has_no_endpoints():
    [web] = load(service())
    assert web.endpoints == ()


def test_endpoints_from_several_slices_are_merged_and_sorted_by_address_text():
    slices = [
        endpoint_slice("web-b", endpoints=[endpoint("10.1.0.9"), endpoint("10.1.0.10")]),
        endpoint_slice("web-a", endpoints=[endpoint("10.1.0.2")]),
    ]
    [web] = load(service(), *slices)
    # kube-proxy byEndpoint compares "ip:port" strings: "10.1.0.10:8080" < "10.1.0.2:8080".
    assert [e.ip for e in web.endpoints] == ["10.1.0.10", "10.1.0.2", "10.1.0.9"]


def test_address_in_two_slices_counts_once_first_slice_by_name_wins():
    slices = [
        endpoint_slice("web-b", endpoints=[endpoint("10.1.0.5", ready=False, serving=True, terminating=True)]),
        endpoint_slice("web-a", endpoints=[endpoint("10.1.0.5", ready=True)]),
    ]
    [web] = load(service(), *slices)
    assert web.endpoints == (Endpoint("10.1.0.5", 8080, ready=True, serving=True, terminating=False),)


def test_same_ip_on_different_target_ports_are_two_endpoints():
    # A named targetPort can resolve to different container ports per pod.
    slices = [
        endpoint_slice("web-a", endpoints=[endpoint("10.1.0.5")]),
        endpoint_slice("web-b", ports=[{"name": "http", "port": 8081, "protocol": "TCP"}], endpoints=[endpoint("10.1.0.5")]),
    ]
    [web] = load(service(), *slices)
    assert [e.address for e in web.endpoints] == ["10.1.0.5:8080", "10.1.0.5:8081"]


def test_only_the_first_address_of_an_endpoint_is_used_with_a_note():
    notes = []
    [web] = load(service(), endpoint_slice(endpoints=[endpoint(None, addresses=["10.1.0.5", "10.1.0.6"])]), notes=notes)
    assert [e.ip for e in web.endpoints] == ["10.1.0.5"]
    assert notes == ["k8s.yaml: EndpointSlice shop/web-abc12: only the first address of each endpoint is used (as kube-proxy does)"]


# -- conditions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, expected",
    [
        ({}, (True, True, False)),  # nil ready: "interpret this unknown state as ready"
        ({"ready": False}, (False, True, False)),  # kube-proxy reads nil serving as true
        ({"ready": False, "serving": True, "terminating": True}, (False, True, True)),
        ({"ready": False, "serving": False, "terminating": True}, (False, False, True)),
        ({"ready": True, "serving": True, "terminating": False}, (True, True, False)),
    ],
)
def test_endpoint_conditions(given, expected):
    [web] = load(service(), endpoint_slice(endpoints=[endpoint("10.1.0.5", **given)]))
    [e] = web.endpoints
    assert (e.ready, e.serving, e.terminating) == expected
    assert e.weight == 1


def test_null_conditions_read_as_absent():
    body = endpoint_slice(endpoints=[{"addresses": ["10.1.0.5"], "conditions": {"ready": None, "terminating": None}}])
    [web] = load(service(), body)
    assert web.endpoints[0].ready is True and web.endpoints[0].terminating is False


def test_terminating_endpoint_is_the_fallback_only():
    slices = endpoint_slice(endpoints=[
        endpoint("10.1.0.5", ready=False, serving=True, terminating=True),
        endpoint("10.1.0.6", ready=False, serving=False, terminating=False),
    ])
    [web] = load(service(), slices)
    assert [e.ip for e in web.usable_endpoints] == ["10.1.0.5"]


# -- affinity and scheduler ------------------------------------------------------------


def test_client_ip_affinity_with_timeout():
    [web] = load(service(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 600}}))
    assert web.affinity_timeout == 600


def test_client_ip_affinity_default_timeout_is_10800():
    [web] = load(service(sessionAffinity="ClientIP"))
    assert web.affinity_timeout == 10800


def test_no_affinity_by_default_and_for_none():
    assert load(service())[0].affinity_timeout is None
    assert load(service(sessionAffinity="None"))[0].affinity_timeout is None


def test_scheduler_annotation_applies_to_every_port_and_defaults_to_rr():
    ports = [{"name": "http", "port": 80}, {"name": "https", "port": 443}]
    assert [s.scheduler for s in load(service(ports=ports, annotations={"lbcore.io/scheduler": "wlc"}))] == ["wlc", "wlc"]
    assert load(service())[0].scheduler == "rr"


def test_other_annotations_are_ignored():
    [web] = load(service(annotations={"prometheus.io/scrape": "true", "kubectl.kubernetes.io/last-applied-configuration": "{}"}))
    assert web.scheduler == "rr"


# -- families --------------------------------------------------------------------------


def dual_stack(**spec):
    return service(clusterIPs=["10.96.0.10", "fd00:10:96::a"], ipFamilies=["IPv4", "IPv6"],
                   ipFamilyPolicy="PreferDualStack", **spec)


def test_dual_stack_gives_one_service_per_family_with_endpoints_of_that_family():
    slices = [
        endpoint_slice("web-v4", endpoints=[endpoint("10.1.0.5")]),
        endpoint_slice("web-v6", address_type="IPv6", endpoints=[endpoint("fd00:10:244::5")]),
    ]
    v4, v6 = load(dual_stack(), *slices)
    assert (v4.name, v4.vip, [e.ip for e in v4.endpoints]) == ("shop/web:http", "10.96.0.10", ["10.1.0.5"])
    assert (v6.name, v6.vip, [e.ip for e in v6.endpoints]) == ("shop/web:http.ipv6", "fd00:10:96::a", ["fd00:10:244::5"])


def test_ipv6_primary_keeps_the_plain_name():
    body = service(cluster_ip="fd00:10:96::a", clusterIPs=["fd00:10:96::a", "10.96.0.10"], ipFamilies=["IPv6", "IPv4"])
    assert [(s.name, s.family) for s in load(body)] == [("shop/web:http", 6), ("shop/web:http.ipv4", 4)]


def test_ipv6_single_stack():
    body = service(cluster_ip="FD00:10:96::A", clusterIPs=["FD00:10:96::A"], ipFamilies=["IPv6"])
    [web] = load(body, endpoint_slice(address_type="IPv6", endpoints=[endpoint("fd00:10:244::5")]))
    assert (web.name, web.vip, web.endpoints[0].address) == ("shop/web:http", "fd00:10:96::a", "[fd00:10:244::5]:8080")


def test_cluster_ip_alone_without_cluster_ips():
    [web] = load(service(cluster_ip="10.96.0.10"))
    assert web.vip == "10.96.0.10"


# -- skipped on purpose, with a note ---------------------------------------------------


def test_headless_service_is_skipped_with_a_note():
    notes = []
    assert load(service(cluster_ip="None"), endpoint_slice(endpoints=[endpoint("10.1.0.5")]), notes=notes) == []
    assert notes == ["k8s.yaml: Service shop/web: skipped: headless (clusterIP: None), clients resolve the endpoints by DNS (kube-proxy skips it too)"]


def test_external_name_service_is_skipped_with_a_note():
    body = service(cluster_ip=None, type="ExternalName", externalName="db.example.com")
    del body["spec"]["clusterIP"]
    notes = []
    assert load(body, notes=notes) == []
    assert notes == ["k8s.yaml: Service shop/web: skipped: type ExternalName is a DNS alias, nothing to balance (kube-proxy skips it too)"]


def test_service_for_another_proxy_is_skipped_with_a_note():
    notes = []
    assert load(service(labels={"service.kubernetes.io/service-proxy-name": "cilium"}), notes=notes) == []
    assert notes == ["k8s.yaml: Service shop/web: skipped: label service.kubernetes.io/service-proxy-name gives it to another proxy (kube-proxy skips it too)"]


def test_fqdn_slice_is_skipped_with_a_note():
    notes = []
    [web] = load(service(), endpoint_slice(address_type="FQDN", endpoints=[endpoint(None, addresses=["db.example.com"])]), notes=notes)
    assert web.endpoints == ()
    assert notes == ["k8s.yaml: EndpointSlice shop/web-abc12: skipped: addressType FQDN has no IP to balance to (kube-proxy ignores it too)"]


def test_selectorless_service_takes_endpoints_from_a_hand_made_slice():
    body = service(ports=[{"port": 5432}])
    assert "selector" not in body["spec"]
    hand_made = endpoint_slice("web-1", ports=[{"name": "", "port": 5432, "protocol": "TCP"}], endpoints=[endpoint("192.168.10.20")])
    hand_made["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] = "staff"
    [web] = load(body, hand_made)
    assert [e.address for e in web.endpoints] == ["192.168.10.20:5432"]


@pytest.mark.parametrize(
    "spec, what",
    [
        ({"type": "NodePort"}, "node ports"),
        ({"type": "LoadBalancer"}, "node ports and load-balancer IPs"),
        ({"externalIPs": ["203.0.113.7"]}, "external IPs"),
    ],
)
def test_out_of_scope_parts_are_noted_and_the_cluster_ip_still_maps(spec, what):
    notes = []
    [web] = load(service(**spec), notes=notes)
    assert web.vip == "10.96.0.10"
    assert notes == [f"k8s.yaml: Service shop/web: only the cluster IP is balanced; its {what} are out of lbcore's scope"]


def test_internal_traffic_policy_local_is_noted():
    notes = []
    load(service(internalTrafficPolicy="Local"), notes=notes)
    assert notes == ["k8s.yaml: Service shop/web: internalTrafficPolicy Local is not applied: lbcore has no node, every endpoint is used"]


# -- bad input: every problem, one line each, naming file, object and field -----------


def test_a_list_of_problems_in_one_run():
    bad_service = service(cluster_ip="10.96.0.999", annotations={"lbcore.io/scheduler": "fastest"},
                          ports=[{"name": "http", "port": 0}], sessionAffinity="ClientIP",
                          sessionAffinityConfig={"clientIP": {"timeoutSeconds": 0}})
    bad_slice = endpoint_slice(ports=[{"name": "http", "port": 99999, "protocol": "TCP"}],
                               endpoints=[endpoint("fd00::1"), endpoint("10.1.0.5", ready="yes")])
    assert problems(bad_service, bad_slice) == [
        "k8s.yaml: Service shop/web: spec.clusterIPs[0]: '10.96.0.999' is not an IPv4 or IPv6 address",
        "k8s.yaml: Service shop/web: spec.ports[0].port: 0 is out of range; valid: 1..65535",
        "k8s.yaml: Service shop/web: metadata.annotations[lbcore.io/scheduler]: 'fastest' is not one of rr, wrr, lc, wlc, dh, sh, mh, p2c, ring",
        "k8s.yaml: Service shop/web: spec.sessionAffinityConfig.clientIP.timeoutSeconds: 0 is out of range; valid: 1..86400",
        "k8s.yaml: EndpointSlice shop/web-abc12: ports[0].port: 99999 is out of range; valid: 1..65535",
        "k8s.yaml: EndpointSlice shop/web-abc12: endpoints[0].addresses[0]: 'fd00::1' is not an IPv4 address",
        "k8s.yaml: EndpointSlice shop/web-abc12: endpoints[1].conditions.ready: 'yes' must be true or false",
    ]


def test_invalid_scheduler_annotation_names_the_annotation():
    assert problems(service(annotations={"lbcore.io/scheduler": "round-robin"})) == [
        "k8s.yaml: Service shop/web: metadata.annotations[lbcore.io/scheduler]: 'round-robin' is not one of rr, wrr, lc, wlc, dh, sh, mh, p2c, ring",
    ]


def test_misspelt_lbcore_annotation_is_an_error_with_a_hint():
    assert problems(service(annotations={"lbcore.io/schedular": "wlc"})) == [
        "k8s.yaml: Service shop/web: metadata.annotations[lbcore.io/schedular]: 'wlc' is not an lbcore annotation; "
        "did you mean 'lbcore.io/scheduler'? valid: lbcore.io/scheduler, lbcore.io/balance-factor, lbcore.io/health-check, "
        "lbcore.io/slow-start, lbcore.io/panic-threshold",
    ]


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda s: s.update(apiVersion="apps/v1", kind="Deployment"),
         "k8s.yaml: Deployment shop/web: kind: 'Deployment' is not a kind lbcore reads; valid: Service, EndpointSlice, List"),
        (lambda s: s.update(kind="Endpoints"),
         "k8s.yaml: Endpoints shop/web: kind: 'Endpoints' is not a kind lbcore reads; valid: Service, EndpointSlice, List "
         "(read EndpointSlices instead: kubectl get svc,endpointslices -A -o yaml)"),
        (lambda s: s.update(apiVersion="v2"),
         "k8s.yaml: Service shop/web: apiVersion: 'v2' is not supported for Service; valid: v1"),
        (lambda s: s.pop("kind"), "k8s.yaml: kind: (missing) is required"),
        (lambda s: s["metadata"].pop("name"), "k8s.yaml: metadata.name: (missing) is required"),
        (lambda s: s["metadata"].update(namespace=7), "k8s.yaml: metadata.namespace: 7 must be a string"),
        (lambda s: s.pop("spec"), "k8s.yaml: Service shop/web: spec: (missing) is required"),
        (lambda s: s["spec"].pop("clusterIP"), "k8s.yaml: Service shop/web: spec.clusterIP: (missing) is required"),
        (lambda s: s["spec"].update(clusterIP=""),
         "k8s.yaml: Service shop/web: spec.clusterIP: '' is empty; lbcore balances the cluster IP, which the API server assigns"),
        (lambda s: s["spec"].update(type="Tunnel"),
         "k8s.yaml: Service shop/web: spec.type: 'Tunnel' is not one of ClusterIP, NodePort, LoadBalancer, ExternalName"),
        (lambda s: s["spec"].pop("ports"), "k8s.yaml: Service shop/web: spec.ports: (missing) is required"),
        (lambda s: s["spec"].update(ports=[]), "k8s.yaml: Service shop/web: spec.ports: [] must list at least one port"),
        (lambda s: s["spec"].update(ports=["http"]), "k8s.yaml: Service shop/web: spec.ports[0]: 'http' must be a mapping"),
        (lambda s: s["spec"]["ports"][0].update(port="80"), "k8s.yaml: Service shop/web: spec.ports[0].port: '80' must be an integer"),
        (lambda s: s["spec"]["ports"][0].update(port=True), "k8s.yaml: Service shop/web: spec.ports[0].port: True must be an integer"),
        (lambda s: s["spec"]["ports"][0].update(port=65536), "k8s.yaml: Service shop/web: spec.ports[0].port: 65536 is out of range; valid: 1..65535"),
        (lambda s: s["spec"]["ports"][0].update(protocol="tcp"), "k8s.yaml: Service shop/web: spec.ports[0].protocol: 'tcp' is not one of TCP, UDP, SCTP"),
        (lambda s: s["spec"]["ports"].append({"name": "http", "port": 81}),
         "k8s.yaml: Service shop/web: spec.ports[1].name: 'http' is already the name of spec.ports[0]; each port needs its own"),
        (lambda s: s["spec"].update(sessionAffinity="Cookie"), "k8s.yaml: Service shop/web: spec.sessionAffinity: 'Cookie' is not one of None, ClientIP"),
        (lambda s: s["spec"].update(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 86401}}),
         "k8s.yaml: Service shop/web: spec.sessionAffinityConfig.clientIP.timeoutSeconds: 86401 is out of range; valid: 1..86400"),
        (lambda s: s["spec"].update(clusterIPs=["10.96.0.11"]),
         "k8s.yaml: Service shop/web: spec.clusterIPs[0]: '10.96.0.11' differs from spec.clusterIP '10.96.0.10'; they must be equal"),
        (lambda s: s["spec"].update(clusterIPs=["10.96.0.10", "fd00::a"], ipFamilies=["IPv4"]),
         "k8s.yaml: Service shop/web: spec.ipFamilies: ['IPv4'] must name one family per spec.clusterIPs entry (2)"),
        (lambda s: s["spec"].update(clusterIPs=["10.96.0.10", "fd00::a"], ipFamilies=["IPv4", "IPv7"]),
         "k8s.yaml: Service shop/web: spec.ipFamilies[1]: 'IPv7' is not one of IPv4, IPv6"),
        (lambda s: s["spec"].update(clusterIPs=["10.96.0.10"], ipFamilies=["IPv6"]),
         "k8s.yaml: Service shop/web: spec.clusterIPs[0]: '10.96.0.10' is not an IPv6 address"),
        (lambda s: s["spec"].update(clusterIPs=["10.96.0.10", "10.96.0.11"]),
         "k8s.yaml: Service shop/web: spec.clusterIPs[1]: '10.96.0.11' is a second IPv4 cluster IP; a Service has one per family"),
        (lambda s: s["metadata"].update(name="web server"),
         "k8s.yaml: Service shop/web server: metadata.name: 'shop/web server:http' is not a valid service name; "
         "use 1..253 of A-Z a-z 0-9 . _ : / - starting with a letter or digit"),
    ],
)
def test_bad_service(change, expected):
    body = service()
    change(body)
    assert problems(body) == [expected]


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda s: s["metadata"].pop("labels"),
         "metadata.labels[kubernetes.io/service-name]: (missing) is required: it names the Service the slice belongs to"),
        (lambda s: s.update(addressType="IPv5"), "addressType: 'IPv5' is not one of IPv4, IPv6, FQDN"),
        (lambda s: s.pop("addressType"), "addressType: (missing) is required"),
        (lambda s: s["endpoints"].append({"conditions": {}}), "endpoints[1].addresses: (missing) is required"),
        (lambda s: s["endpoints"].append({"addresses": []}), "endpoints[1].addresses: [] must hold at least one address"),
        (lambda s: s["endpoints"].append({"addresses": ["10.1.0.300"]}), "endpoints[1].addresses[0]: '10.1.0.300' is not an IPv4 or IPv6 address"),
        (lambda s: s["endpoints"].append({"addresses": ["10.1.0.6"], "conditions": {"terminating": "no"}}),
         "endpoints[1].conditions.terminating: 'no' must be true or false"),
        (lambda s: s["ports"].append({"name": "http", "port": 8081, "protocol": "TCP"}),
         "ports[1].name: 'http' is given twice for TCP; each slice port needs its own name"),
        (lambda s: s["ports"][0].update(port=0), "ports[0].port: 0 is out of range; valid: 1..65535"),
        (lambda s: s["ports"][0].update(port="8080"), "ports[0].port: '8080' must be an integer in 1..65535"),
        (lambda s: (s.update(ports=[]), s["endpoints"].append({"addresses": ["10.1.0.300"]})),
         "endpoints[1].addresses[0]: '10.1.0.300' is not an IPv4 or IPv6 address"),
        (lambda s: s.update(apiVersion="discovery.k8s.io/v1beta1"),
         "apiVersion: 'discovery.k8s.io/v1beta1' is not supported for EndpointSlice; valid: discovery.k8s.io/v1"),
    ],
)
def test_bad_endpoint_slice(change, expected):
    body = endpoint_slice(endpoints=[endpoint("10.1.0.5")])
    change(body)
    assert problems(service(), body) == [f"k8s.yaml: EndpointSlice shop/web-abc12: {expected}"]


def test_object_defined_twice_is_an_error():
    assert problems(service(), service()) == ["k8s.yaml: Service shop/web: metadata.name: 'web' is defined twice (k8s.yaml has it too)"]


def test_two_services_on_one_cluster_ip_and_port_collide():
    assert problems(service("a"), service("b")) == [
        "k8s.yaml: Service shop/b: spec.ports[0].port: '10.96.0.10:80/tcp' is already taken by service 'shop/a:http' (k8s.yaml: Service shop/a)",
    ]


def test_list_item_that_is_not_a_mapping():
    assert problems({"apiVersion": "v1", "kind": "List", "items": [service(), "oops"]}) == [
        "k8s.yaml: items[1]: object: 'oops' must be a mapping (a Kubernetes object)",
    ]


def test_bad_object_does_not_half_apply_the_good_ones():
    good = service("good")
    bad = service("bad", cluster_ip="10.96.0.11", ports=[{"name": "http", "port": 0}])
    # Raised for the bad object alone: the good one loaded cleanly and is still refused.
    assert problems(good, bad) == ["k8s.yaml: Service shop/bad: spec.ports[0].port: 0 is out of range; valid: 1..65535"]


def test_input_objects_are_not_modified():
    objects = [service(), endpoint_slice(endpoints=[endpoint("10.1.0.5")])]
    before = copy.deepcopy(objects)
    load(*objects)
    assert objects == before


def test_slow_start_and_panic_threshold_annotations():
    annotations = {"lbcore.io/scheduler": "p2c", "lbcore.io/slow-start": "45",
                   "lbcore.io/panic-threshold": "33.5"}
    [web] = load(service(annotations=annotations))
    assert (web.slow_start, web.panic_threshold) == (45, 33.5)


@pytest.mark.parametrize(
    "annotations, expected",
    [
        ({"lbcore.io/scheduler": "wrr", "lbcore.io/slow-start": "30s"},
         "metadata.annotations[lbcore.io/slow-start]: '30s' must be a decimal number in a string, e.g. \"30\""),
        ({"lbcore.io/slow-start": "30"},
         "metadata.annotations[lbcore.io/slow-start]: 30 does not apply to scheduler 'rr'; slow start ramps wrr, lc, wlc, p2c"),
        ({"lbcore.io/panic-threshold": "0"},
         "metadata.annotations[lbcore.io/panic-threshold]: 0 is out of range; valid: above 0, at most 100 "
         "(percent; Envoy uses 50)"),
        ({"lbcore.io/panic-threshold": "half"},
         "metadata.annotations[lbcore.io/panic-threshold]: 'half' must be a decimal number in a string, e.g. \"50\""),
    ],
)
def test_bad_slow_start_or_panic_threshold_annotation_names_it(annotations, expected):
    assert problems(service(annotations=annotations)) == [f"k8s.yaml: Service shop/web: {expected}"]
