"""Files and directories watched live: real files in a temporary directory, real inotify.

Each test waits for snapshots with a timeout ten times what the debounce needs; a test
that expects *no* snapshot proves it by the next one carrying a later change.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from lbcore import ConfigError
from lbcore.sources.live import open_source
from lbcore.sources.watched_files import QUIET

WAIT = 20 * QUIET + 2  # a snapshot is due QUIET after the last event; 10x margin and more


def service(name: str, vip: str, port: int = 80, *endpoints: str) -> str:
    eps = ", ".join(f"{{ip: {ip}, port: 8080}}" for ip in endpoints)
    return f"- {{name: {name}, vip: {vip}, port: {port}, endpoints: [{eps}]}}\n"


def native(*items: str) -> str:
    return "services:\n" + "".join(items)


def write_through_rename(path, text: str) -> None:
    """What editors and kubectl do: write a temporary file, then rename it over the old one."""
    temporary = path.parent / f".{path.name}.tmp{os.getpid()}"
    temporary.write_text(text)
    os.rename(temporary, path)


class Watch:
    """The snapshots of one source, taken one at a time with a deadline."""

    def __init__(self, spec, **options):
        self.source = open_source(str(spec), **options)
        self.snapshots = self.source.watch()

    async def next(self, timeout: float = WAIT):
        return await asyncio.wait_for(self.snapshots.__anext__(), timeout)

    async def close(self):
        await self.snapshots.aclose()


def names(snapshot):
    return [s.name for s in snapshot.services]


def run(coroutine):
    return asyncio.run(coroutine)


# -- a directory ------------------------------------------------------------------------


def test_a_directory_gives_the_services_of_its_files_in_name_order(tmp_path):
    (tmp_path / "b.yaml").write_text(native(service("web", "10.96.0.10")))
    (tmp_path / "a.json").write_text('{"services": [{"name": "api", "vip": "10.96.0.11", "port": 80}]}')
    (tmp_path / "notes.txt").write_text("not read")

    async def main():
        watch = Watch(tmp_path)
        first = await watch.next()
        await watch.close()
        return first

    first = run(main())
    assert names(first) == ["api", "web"]
    assert first.problems == () and first.source == str(tmp_path)


def test_a_write_through_a_rename_is_seen_and_stamped_when_it_happened(tmp_path):
    path = tmp_path / "services.yaml"
    path.write_text(native(service("web", "10.96.0.10", 80, "10.1.0.1")))

    async def main():
        watch = Watch(tmp_path)
        await watch.next()
        before = time.monotonic()
        write_through_rename(path, native(service("web", "10.96.0.10", 80, "10.1.0.1", "10.1.0.2")))
        changed = await watch.next()
        received = time.monotonic()
        await watch.close()
        return before, changed, received

    before, changed, received = run(main())
    assert [e.ip for e in changed.services[0].endpoints] == ["10.1.0.1", "10.1.0.2"]
    # changed_at is the first event's time, before the debounce ran out
    assert before <= changed.changed_at <= received - QUIET * 0.9


def test_editors_temporary_files_are_not_read(tmp_path):
    path = tmp_path / "web.yaml"
    path.write_text(native(service("web", "10.96.0.10")))

    async def main():
        watch = Watch(tmp_path)
        await watch.next()
        # vim's swap and write-test files, emacs' lock and autosave files, backups
        for name in (".web.yaml.swp", "4913", ".#web.yaml", "#web.yaml#", "web.yaml~", ".hidden.yaml"):
            (tmp_path / name).write_text("services: [this is not yaml")
        await asyncio.sleep(3 * QUIET)
        write_through_rename(path, native(service("web", "10.96.0.10"), service("api", "10.96.0.11")))
        after = await watch.next()
        await watch.close()
        return after

    after = run(main())
    # the temporary files made no snapshot: the next one is the real change, clean
    assert names(after) == ["web", "api"] and after.problems == ()


def test_files_added_to_and_removed_from_a_directory(tmp_path):
    (tmp_path / "web.yaml").write_text(native(service("web", "10.96.0.10")))

    async def main():
        watch = Watch(tmp_path)
        seen = [names(await watch.next())]
        write_through_rename(tmp_path / "api.yaml", native(service("api", "10.96.0.11")))
        seen.append(names(await watch.next()))
        os.unlink(tmp_path / "web.yaml")
        seen.append(names(await watch.next()))
        await watch.close()
        return seen

    assert run(main()) == [["web"], ["api", "web"], ["api"]]


def test_kubernetes_objects_join_across_the_files_of_a_directory(tmp_path):
    (tmp_path / "svc.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: shop}\n"
        "spec: {clusterIP: 10.96.0.20, ports: [{name: http, port: 80}], type: NodePort}\n")

    async def main():
        watch = Watch(tmp_path)
        first = await watch.next()
        (tmp_path / "eps.json").write_text(
            '{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",'
            ' "metadata": {"name": "api-x", "namespace": "shop", "labels": {"kubernetes.io/service-name": "api"}},'
            ' "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}], "endpoints": [{"addresses": ["10.1.0.9"]}]}')
        joined = await watch.next()
        await watch.close()
        return first, joined

    first, joined = run(main())
    assert names(first) == ["shop/api:http"] and first.services[0].endpoints == ()
    assert [e.address for e in joined.services[0].endpoints] == ["10.1.0.9:8080"]
    assert any("node ports" in note for note in joined.notes)


# -- bad content ------------------------------------------------------------------------


def test_a_file_that_stops_parsing_keeps_its_last_good_services(tmp_path):
    path = tmp_path / "web.yaml"
    good = native(service("web", "10.96.0.10", 80, "10.1.0.1"))
    path.write_text(good)

    async def main():
        watch = Watch(tmp_path)
        await watch.next()
        write_through_rename(path, good[: len(good) // 2])  # an editor saved half of it
        broken = await watch.next()
        write_through_rename(path, native(service("web", "10.96.0.10", 80, "10.1.0.2")))
        fixed = await watch.next()
        path.write_text("")  # truncated by a writer that has not written yet
        emptied = await watch.next()
        await watch.close()
        return broken, fixed, emptied

    broken, fixed, emptied = run(main())
    assert names(broken) == ["web"] and broken.services[0].endpoints[0].ip == "10.1.0.1"
    [problem] = broken.problems
    assert problem.startswith(f"{path}: line ") and "is not valid YAML" in problem
    assert problem.endswith("(its last good content is still served)")
    assert fixed.problems == () and fixed.services[0].endpoints[0].ip == "10.1.0.2"
    assert names(emptied) == ["web"] and "holds no document" in emptied.problems[0]


def test_a_bad_entry_is_left_out_and_named_while_the_rest_is_served(tmp_path):
    (tmp_path / "a.yaml").write_text(native(service("web", "10.96.0.10"),
                                            "- {name: api, vip: 10.96.0.11, port: 0}\n"))
    (tmp_path / "b.yaml").write_text(native(service("web", "10.96.0.12")))  # a name taken

    async def main():
        watch = Watch(tmp_path)
        first = await watch.next()
        await watch.close()
        return first

    first = run(main())
    assert [(s.name, s.vip) for s in first.services] == [("web", "10.96.0.10")]
    assert first.problems == (
        f"{tmp_path / 'a.yaml'}: services[1] (api): port: 0 is out of range; valid: 1..65535",
        f"{tmp_path / 'b.yaml'}: services[0] (web): name: 'web' is already the name of a service "
        f"({tmp_path / 'a.yaml'}: services[0] (web))",
    )


def test_a_file_written_in_pieces_is_read_once_it_is_closed(tmp_path):
    path = tmp_path / "web.yaml"
    path.write_text(native(service("web", "10.96.0.10")))
    text = native(service("web", "10.96.0.10"), service("api", "10.96.0.11"))

    async def main():
        watch = Watch(tmp_path)
        await watch.next()
        with open(path, "w") as file:  # truncates: no completed write yet
            file.write(text[:30])
            file.flush()
            await asyncio.sleep(5 * QUIET)
            file.write(text[30:])
        after = await watch.next()
        await watch.close()
        return after

    after = run(main())
    assert names(after) == ["web", "api"] and after.problems == ()


# -- one named file ---------------------------------------------------------------------


def test_a_named_file_is_watched_and_its_neighbours_are_not(tmp_path):
    path = tmp_path / "services.yaml"
    path.write_text(native(service("web", "10.96.0.10")))
    (tmp_path / "other.yaml").write_text(native(service("other", "10.96.0.99")))

    async def main():
        watch = Watch(path)
        seen = [names(await watch.next())]
        (tmp_path / "other.yaml").write_text(native(service("other2", "10.96.0.98")))
        await asyncio.sleep(3 * QUIET)
        write_through_rename(path, native(service("api", "10.96.0.11")))
        seen.append(names(await watch.next()))
        os.unlink(path)
        gone = await watch.next()
        path.write_text(native(service("back", "10.96.0.12")))
        seen.append(names(await watch.next()))
        await watch.close()
        return seen, gone

    seen, gone = run(main())
    assert seen == [["web"], ["api"], ["back"]]
    # a named file that went away keeps its services until it comes back
    assert names(gone) == ["api"]
    assert "cannot be read: No such file or directory" in gone.problems[0]


def test_a_burst_of_writes_and_a_slow_consumer_get_one_snapshot_of_the_end_state(tmp_path):
    path = tmp_path / "web.yaml"
    path.write_text(native(service("web", "10.96.0.10", 80, "10.1.0.1")))

    async def main():
        watch = Watch(tmp_path)
        await watch.next()
        for i in range(2, 22):
            write_through_rename(path, native(service("web", "10.96.0.10", 80, f"10.1.0.{i}")))
        burst = await watch.next()
        # the consumer is busy elsewhere while three more changes come, each settled
        for i in (30, 31, 32):
            write_through_rename(path, native(service("web", "10.96.0.10", 80, f"10.1.0.{i}")))
            await asyncio.sleep(3 * QUIET)
        late = await watch.next()
        write_through_rename(path, native(service("web", "10.96.0.10", 80, "10.1.0.40")))
        last = await watch.next()
        await watch.close()
        return burst, late, last

    burst, late, last = run(main())
    assert burst.services[0].endpoints[0].ip == "10.1.0.21"
    assert late.services[0].endpoints[0].ip == "10.1.0.32"  # one snapshot for all three
    assert last.services[0].endpoints[0].ip == "10.1.0.40"


# -- opening ----------------------------------------------------------------------------


def test_a_path_that_does_not_exist_is_refused_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"source: '.*missing.yaml' does not exist"):
        open_source(str(tmp_path / "missing.yaml"))


def test_options_a_source_does_not_take_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"kubeconfig: '/x' is not an option of the source .*; valid: none"):
        open_source(str(tmp_path), kubeconfig="/x")
    with pytest.raises(ConfigError, match=r"source: 'http://x/y' is not a source lbcore reads"):
        open_source("http://x/y")


def test_a_file_source_is_always_connected(tmp_path):
    assert open_source(str(tmp_path)).connected is True


def test_importing_the_sources_and_their_interface_loads_no_asyncio_and_no_http_client():
    code = ("import sys, lbcore.sources, lbcore.sources.live; "
            "print(sorted(m for m in ('asyncio', 'aiohttp') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
