"""Files to Services: formats, syntax errors with line numbers, several files at once."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lbcore.sources import SourceError, load_files, parse, read

NATIVE = "services:\n- {name: web, vip: 10.96.0.10, port: 80, endpoints: [{ip: 10.1.0.5, port: 8080}]}\n"
K8S_SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 80, protocol: TCP}]
"""
K8S_SLICE = """\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-x1, namespace: shop, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [{addresses: [10.1.0.9]}]
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def problems_of(paths):
    with pytest.raises(SourceError) as caught:
        load_files(paths)
    return [str(problem) for problem in caught.value.problems]


# -- formats ---------------------------------------------------------------------------


def test_format_is_decided_per_document(tmp_path):
    mixed = write(tmp_path, "mixed.yaml", NATIVE + "---\n" + K8S_SERVICE + "---\n" + K8S_SLICE)
    web, api = load_files([mixed])
    assert (web.name, api.name) == ("web", "shop/api:http")
    assert [e.address for e in api.endpoints] == ["10.1.0.9:8080"]


def test_kubernetes_objects_join_across_files_and_lbcore_services_come_first(tmp_path):
    paths = [write(tmp_path, "svc.yaml", K8S_SERVICE), write(tmp_path, "own.yaml", NATIVE),
             write(tmp_path, "eps.yaml", K8S_SLICE)]
    assert [(s.name, len(s.endpoints)) for s in load_files(paths)] == [("web", 1), ("shop/api:http", 1)]


def test_json_and_yaml_give_the_same_services(tmp_path):
    json_text = '{"services": [{"name": "web", "vip": "10.96.0.10", "port": 80, "endpoints": [{"ip": "10.1.0.5", "port": 8080}]}]}'
    assert load_files([write(tmp_path, "a.json", json_text)]) == load_files([write(tmp_path, "a.yaml", NATIVE)])


def test_empty_yaml_documents_are_skipped():
    assert parse("---\n---\na: 1\n---\n") == [{"a": 1}]


def test_duplicates_are_found_across_files(tmp_path):
    a, b = write(tmp_path, "a.yaml", NATIVE), write(tmp_path, "b.yaml", NATIVE)
    assert problems_of([a, b]) == [
        f"{b}: services[0] (web): name: 'web' is already the name of a service ({a}: services[0] (web))",
        f"{b}: services[0] (web): port: '10.96.0.10:80/tcp' is already taken by service 'web' ({a}: services[0] (web))",
    ]


# -- bad files -------------------------------------------------------------------------


def test_every_file_is_checked_and_all_problems_reported(tmp_path):
    paths = [
        write(tmp_path, "broken.yaml", "services:\n  - name: web\n    port: [80\n"),
        str(tmp_path / "missing.yaml"),
        write(tmp_path, "bad.yaml", "services:\n- {name: web, vip: 10.96.0.10, port: 0}\n"),
        write(tmp_path, "good.yaml", NATIVE),
    ]
    assert problems_of(paths) == [
        f"{paths[0]}: line 4: (end of file) is not valid YAML: did not find expected ',' or ']' (column 1)",
        f"{paths[1]}: file: {paths[1]!r} cannot be read: No such file or directory",
        f"{paths[2]}: services[0] (web): port: 0 is out of range; valid: 1..65535",
    ]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("services:\n- name: a\n  name: b\n",
         "line 3: 'name: b' is not valid YAML: key 'name' is given twice (first on line 2) (column 3)"),
        ("a: !!python/object/apply:os.system ['true']\n",
         "line 1: \"a: !!python/object/apply:os.system ['true']\" is not valid YAML: could not determine a constructor "
         "for the tag 'tag:yaml.org,2002:python/object/apply:os.system' (column 4)"),
        ('{"services": [\n  {"name": "web",}\n]}', "line 2: '{\"name\": \"web\",}' is not valid JSON: Expecting property name enclosed in double quotes (column 18)"),
        ('{"services": [], "services": []}', "key: 'services' is given twice in one JSON object"),
        ("a: \x07\n", "character: '\\x07' at offset 3 is not allowed in YAML (control characters are not allowed)"),
    ],
)
def test_syntax_errors_name_the_line(text, expected):
    with pytest.raises(SourceError) as caught:
        parse(text, "x.yaml")
    assert [str(p) for p in caught.value.problems] == [f"x.yaml: {expected}"]


def test_yaml_error_names_line_text_and_column():
    with pytest.raises(SourceError) as caught:
        parse("services:\n  - name: web\n    vip: 10.0.0.1: 80\n", "x.yaml")
    [problem] = caught.value.problems
    # libyaml says "... not allowed in this context", the pure-Python parser "... here".
    assert str(problem).startswith("x.yaml: line 3: 'vip: 10.0.0.1: 80' is not valid YAML: mapping values are not allowed ")
    assert str(problem).endswith(" (column 18)")


def test_merge_keys_may_override(tmp_path):
    text = "base: &b {port: 80}\nservices:\n- <<: *b\n  port: 81\n  name: web\n  vip: 10.96.0.10\n"
    assert parse(text)[0]["services"][0]["port"] == 81


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("services: [{name: café}]".encode("latin-1"))
    assert problems_of([str(path)]) == [f"{path}: bytes: b'\\xe9' at offset 21 are not UTF-8"]


def test_empty_file(tmp_path):
    path = write(tmp_path, "empty.yaml", "# nothing yet\n")
    assert problems_of([path]) == [f"{path}: file: {path!r} holds no document; expected lbcore's 'services:' or Kubernetes objects"]


@pytest.mark.parametrize(
    "text, shown",
    [
        ("[1, 2]", "[1, 2]"),
        ("hello", "'hello'"),
        ("servers: []\nport: 80", "['port', 'servers']"),
    ],
)
def test_document_of_neither_format(tmp_path, text, shown):
    path = write(tmp_path, "odd.yaml", text)
    assert problems_of([path]) == [
        f"{path}: document: {shown} is neither lbcore's format (a 'services:' list) nor a Kubernetes object (apiVersion, kind)"
    ]


def test_documents_are_numbered_in_multi_document_files(tmp_path):
    path = write(tmp_path, "two.yaml", NATIVE + "---\nservices: [{name: x, vip: 10.96.0.11, port: 0}]\n")
    assert problems_of([path]) == [f"{path}: document 2: services[0] (x): port: 0 is out of range; valid: 1..65535"]


def test_read_gives_the_documents(tmp_path):
    assert read(write(tmp_path, "a.yaml", "a: 1\n---\nb: 2\n")) == [{"a": 1}, {"b": 2}]


def test_import_lbcore_does_not_load_yaml_but_sources_does():
    code = "import sys, lbcore; a = 'yaml' in sys.modules; import lbcore.sources; print(a, 'yaml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_libyaml_loader_is_used_when_built():
    import yaml

    from lbcore.sources import documents

    if not getattr(yaml, "__with_libyaml__", False):
        pytest.skip("PyYAML built without libyaml here")
    assert issubclass(documents._StrictLoader, yaml.CSafeLoader)
