"""lbcore's forwarder against HAProxy, side by side in one run, on loopback.

Two nginx backends (one worker each), HAProxy ``mode tcp``, ``balance roundrobin``,
``nbthread 1``; each proxy pinned to one core with taskset, wrk pinned to another; all
from Debian packages (``apt-get install -y haproxy nginx wrk``).  Three workloads:

- keep-alive: small responses over persistent connections (requests/s);
- close: ``Connection: close``, one request per connection (new connections/s);
- bulk: 1 MiB responses (GiB/s), HAProxy with and without ``option splice-auto``.

Each workload runs ``--repeat`` times per proxy, interleaved (so drift in machine load
hits every proxy alike); the medians and the ratio lbcore / HAProxy are printed.

    python bench/forwarder_vs_haproxy.py [--duration 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMALL_BODY = b"x" * 612  # the size of nginx's default index.html
BULK_BODY_SIZE = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def start_nginx(workdir: Path, port: int) -> subprocess.Popen:
    prefix = workdir / f"nginx-{port}"
    (prefix / "logs").mkdir(parents=True)
    conf = prefix / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    client_body_temp_path {prefix}/tmp;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {workdir}/www;
    }}
}}
""")
    proc = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(conf)])
    wait_port(port)
    return proc


def haproxy_config(workdir: Path, port: int, backends: list[int], splice: bool) -> Path:
    conf = workdir / f"haproxy-{port}.cfg"
    servers = "\n".join(f"    server s{i} 127.0.0.1:{p}" for i, p in enumerate(backends))
    conf.write_text(f"""
global
    nbthread 1
    maxconn 4000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
{"    option splice-auto" if splice else ""}
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    balance roundrobin
{servers}
""")
    return conf


def start_proxy(
    kind: str, workdir: Path, core: int, backends: list[int]
) -> tuple[subprocess.Popen, int]:
    port = free_port()
    if kind.startswith("haproxy"):
        conf = haproxy_config(workdir, port, backends, splice=kind == "haproxy-splice")
        cmd = ["haproxy", "-f", str(conf)]
    else:
        cmd = [sys.executable, __file__, "--serve-lbcore", str(port), *map(str, backends)]
    with open(workdir / f"{kind}.log", "ab") as log:
        proc = subprocess.Popen(["taskset", "-c", str(core), *cmd], cwd=ROOT, stderr=log)
    try:
        wait_port(port)
    except RuntimeError:
        stop(proc)
        sys.exit(f"{kind} did not start:\n{(workdir / f'{kind}.log').read_text()}")
    return proc, port


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat utime, stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(core: int, port: int, path: str, connections: int, duration: int, close: bool) -> dict:
    cmd = ["taskset", "-c", str(core), "wrk", "-t1", f"-c{connections}", f"-d{duration}s"]
    if close:
        cmd += ["-H", "Connection: close"]
    cmd.append(f"http://127.0.0.1:{port}{path}")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    scale = {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30}[transfer.group(2)]
    errors = re.search(r"Socket errors: (.*)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "gib": float(transfer.group(1)) * scale / 2**30,
        "errors": (errors.group(1) if errors else "") + (f" non-2xx {bad.group(1)}" if bad else ""),
    }


WORKLOADS = {
    # name: (path, wrk connections, Connection: close, figure, proxies)
    "keep-alive": ("/small", 50, False, "rps", ["haproxy", "lbcore"]),
    "close": ("/small", 50, True, "rps", ["haproxy", "lbcore"]),
    "bulk": ("/1m", 16, False, "gib", ["haproxy", "haproxy-splice", "lbcore"]),
}
# workload: (the proxy lbcore is held against, the target ratio)
TARGETS = {
    "keep-alive": ("haproxy", 1.0),
    "close": ("haproxy", 0.6),
    "bulk": ("haproxy-splice", 1.0),
}


def bench(args: argparse.Namespace) -> None:
    for tool in ("nginx", "haproxy", "wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: apt-get install -y haproxy nginx wrk util-linux")
    proxy_core, client_core = args.proxy_core, args.client_core
    with tempfile.TemporaryDirectory(prefix="lbcore-bench-") as tmp:
        workdir = Path(tmp)
        os.chmod(workdir, 0o755)
        (workdir / "www").mkdir()
        (workdir / "www" / "small").write_bytes(SMALL_BODY)
        (workdir / "www" / "1m").write_bytes(os.urandom(BULK_BODY_SIZE))
        backends = [free_port(), free_port()]
        nginxes = [start_nginx(workdir, port) for port in backends]
        try:
            load = os.getloadavg()
            print(f"# load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
                  f"proxy on core {proxy_core}, wrk on core {client_core}; "
                  f"{args.duration}s runs x {args.repeat}", flush=True)
            results: dict[str, dict[str, list[dict]]] = {}
            for name in args.workloads:
                path, conns, close, figure, proxies = WORKLOADS[name]
                runs = results[name] = {p: [] for p in proxies}
                for _ in range(args.repeat):
                    for kind in proxies:
                        proc, port = start_proxy(kind, workdir, proxy_core, backends)
                        try:
                            wrk(client_core, port, path, conns, 1, close)  # warm up
                            cpu = cpu_seconds(proc.pid)
                            r = wrk(client_core, port, path, conns, args.duration, close)
                            cpu = cpu_seconds(proc.pid) - cpu
                        finally:
                            stop(proc)
                        # The proxy's own CPU time per request: steadier than throughput
                        # on a shared machine, since other load slows it down less.
                        r["cpu_us"] = cpu / (r["rps"] * args.duration) * 1e6
                        runs[kind].append(r)
                        unit = "req/s" if figure == "rps" else "GiB/s"
                        print(f"{name:10} {kind:15} {r[figure]:12.2f} {unit}  proxy CPU "
                              f"{r['cpu_us']:8.1f} us/request {r['errors']}", flush=True)
            print()
            for name, runs in results.items():
                figure = WORKLOADS[name][3]
                medians = {k: statistics.median(r[figure] for r in v) for k, v in runs.items()}
                base, target = TARGETS[name]
                ratio = medians["lbcore"] / medians[base]
                line = "  ".join(f"{k} {v:.2f}" for k, v in medians.items())
                print(f"{name:10} medians: {line}  ratio lbcore/{base} {ratio:.2f} "
                      f"(target >= {target}) {'ok' if ratio >= target else 'MISS'}")
                cpu = {k: statistics.median(r["cpu_us"] for r in v) for k, v in runs.items()}
                print(f"{'':10} proxy CPU per request (median, us): "
                      + "  ".join(f"{k} {v:.1f}" for k, v in cpu.items())
                      + f"  ratio {base}/lbcore {cpu[base] / cpu['lbcore']:.2f}")
                if name == "bulk":
                    plain = medians["lbcore"] / medians["haproxy"]
                    print(f"{'':10} ratio lbcore/haproxy (no splice) {plain:.2f}")
            load = os.getloadavg()
            print(f"# load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        finally:
            for proc in nginxes:
                stop(proc)


def serve_lbcore(port: int, backends: list[int]) -> int:
    sys.path.insert(0, str(ROOT))
    from lbcore import Endpoint, Service
    from lbcore.forwarder import run

    service = Service(
        "bench", "127.0.0.1", port, endpoints=[Endpoint("127.0.0.1", p) for p in backends]
    )
    return run(lambda: [service], drain_timeout=1.0)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-lbcore":
        sys.exit(serve_lbcore(int(sys.argv[2]), [int(p) for p in sys.argv[3:]]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per proxy and workload (default 3)"
    )
    parser.add_argument("--proxy-core", type=int, default=0)
    parser.add_argument("--client-core", type=int, default=1)
    parser.add_argument(
        "workloads", nargs="*", help=f"some of {', '.join(WORKLOADS)} (default all)"
    )
    args = parser.parse_args()
    args.workloads = args.workloads or list(WORKLOADS)
    for name in args.workloads:
        if name not in WORKLOADS:
            parser.error(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    bench(args)


if __name__ == "__main__":
    main()
