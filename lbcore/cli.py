"""The ``lbcore`` command: check, render and forward the Services that files describe.

::

    lbcore check FILE...                                    validate, print a table
    lbcore render iptables FILE... [--diff OLD] [--fallback] [--install] [--family 6]
                                                            iptables-restore input
    lbcore render ipset FILE... [--diff OLD [--cleanup]]    ipset restore input
    lbcore render ipvs FILE... [--diff OLD] [--fallback]    ipvsadm-restore input
    lbcore render ipvs-node FILE... [--interface NAME]      VIPs on a dummy interface
    lbcore render nft FILE... [--diff OLD] [--fallback] [--family 4|6]
                                                            nft -f input
    lbcore forward FILE... [--connect-timeout S] ...        the userspace forwarder
    lbcore run --source SOURCE... --mode MODE [options]     the node agent (kube-proxy's loop)
    lbcore simulate [--trace FILE] [--endpoints N] [--event E]... [--schedulers LIST]
                                                            replay traffic through schedulers
    lbcore demo                                             every scheduler on 127.0.0.1

FILE is lbcore's own YAML or a Kubernetes Service + EndpointSlice dump (YAML or JSON);
see `lbcore.sources`.  Exit status 0 on success, 2 on bad input: one line per problem
on stderr, naming the file, the object and the field, and nothing on stdout.  Notes
about objects skipped on purpose (headless Services, ...) go to stderr.

Each subcommand imports what it needs when it runs, so ``lbcore check`` loads no
renderer and no asyncio.  A subcommand is one ``_add_*`` function that adds its parser
and sets ``run`` (`_add_command` does both for those that read FILE...); `COMMANDS`
lists them in help order.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from .errors import ConfigError, LbcoreError
from .models import SCHEDULERS, Endpoint, HealthCheck, Service, usable_endpoints

__all__ = ["main", "COMMANDS", "EXIT_BAD_INPUT", "check_table", "describe_check"]

#: Exit status for bad input: the files (or the command line, as argparse does).
EXIT_BAD_INPUT = 2

_FILES_HELP = "lbcore YAML, or Kubernetes Services and EndpointSlices (kubectl get -o yaml|json)"


def _add_command(subparsers: argparse._SubParsersAction, name: str, run: Callable[[argparse.Namespace], int],
                help_text: str, description: str, *, diff: bool = False) -> argparse.ArgumentParser:
    """A subcommand that reads FILE... and runs ``run``; with ``diff``, also --diff OLD."""
    parser = subparsers.add_parser(name, help=help_text, description=description)
    parser.add_argument("files", nargs="+", metavar="FILE", help=_FILES_HELP)
    if diff:
        parser.add_argument(
            "--diff", action="append", metavar="OLD",
            help="print only the changes from the services in OLD (repeat for several files)",
        )
    parser.set_defaults(run=run)
    return parser


def _load(*groups: Sequence[str]) -> list[list[Service]]:
    """The Services of each group of files; problems of every group raise one error.

    Once everything loaded, notes on objects skipped on purpose go to stderr (on bad
    input stderr holds the problems alone, one line each).
    """
    from .sources import SourceError, load_files

    loaded, problems, notes = [], [], []
    for paths in groups:
        try:
            loaded.append(load_files(paths, notes=notes))
        except SourceError as error:
            problems.extend(error.problems)
    if problems:
        raise SourceError(problems)
    for note in notes:
        print(f"lbcore: note: {note}", file=sys.stderr)
    return loaded


# -- check -----------------------------------------------------------------------------


def _add_check(commands: argparse._SubParsersAction) -> None:
    _add_command(
        commands, "check", _check, "validate files and print their services and endpoints",
        "Validate the files and print a table of the services they describe: address, "
        "scheduler, affinity, and each endpoint with its state, its weight and whether it "
        "takes new connections.",
    )


def _endpoint_state(ready: bool, serving: bool, terminating: bool) -> str:
    if terminating:
        return "ready, terminating" if ready else ("serving, terminating" if serving else "terminating")
    return "ready" if ready else "not ready"


def _takes_new(endpoint: Endpoint, usable: set[Endpoint], fallback: bool) -> str:
    if endpoint not in usable:
        return "no"
    if endpoint.weight == 0:
        return "no (weight 0)"
    return "yes (fallback)" if fallback else "yes"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def describe_check(check: HealthCheck) -> str:
    """A health check in one line, as `lbcore check` prints it.

    >>> describe_check(HealthCheck("http", path="/healthz", port=8081, jitter=0.1))
    'http GET /healthz, statuses 200-399, port 8081, every 2s ±10%, timeout 1s, rise 2, fall 3'
    >>> describe_check(HealthCheck(send="PING\\r\\n", expect="+PONG", initial="unhealthy"))
    "tcp send b'PING\\\\r\\\\n' expect b'+PONG', every 2s, timeout 1s, rise 2, fall 3, new endpoints start unhealthy"
    """
    if check.type == "http":
        low, high = check.statuses  # type: ignore[misc]  # always set for http
        what = f"http GET {check.path}" + (f" Host {check.host}" if check.host else "")
        what += f", statuses {low}-{high}" if low != high else f", status {low}"
    else:
        what = "tcp " + (" ".join(f"{name} {value!r}" for name, value in (("send", check.send), ("expect", check.expect))
                                  if value is not None) or "connect")
    parts = [what]
    if check.port is not None:
        parts.append(f"port {check.port}")
    parts.append(f"every {check.interval:g}s" + (f" ±{check.jitter:.0%}" if check.jitter else ""))
    parts.append(f"timeout {check.timeout:g}s, rise {check.rise}, fall {check.fall}")
    if check.initial == "unhealthy":
        parts.append("new endpoints start unhealthy")
    return ", ".join(parts)


def check_table(services: Sequence[Service]) -> str:
    """The `lbcore check` table: a row per endpoint, the service's columns on its first row.

    TAKES NEW says whether an endpoint gets new connections: ready ones do, serving and
    terminating ones only while no endpoint is ready (kube-proxy's fallback), weight 0
    never.  SCHED shows the scheduler with its ipvsadm flags, its balance factor, slow
    start window and panic threshold.
    Each service with a health check gets a line after the table.

    >>> from lbcore import Endpoint, Service
    >>> print(check_table([Service("web", "10.96.0.10", 80, scheduler="wrr",
    ...     endpoints=[Endpoint("10.1.0.5", 8080, weight=3), Endpoint("10.1.0.6", 8080, ready=False)])]), end="")
    SERVICE  ADDRESS        PROTO  SCHED  AFFINITY  ENDPOINT       STATE      WEIGHT  TAKES NEW
    web      10.96.0.10:80  tcp    wrr    -         10.1.0.5:8080  ready      3       yes
                                                    10.1.0.6:8080  not ready  1       no
    1 service, 2 endpoints, 1 taking new connections
    """
    rows = [("SERVICE", "ADDRESS", "PROTO", "SCHED", "AFFINITY", "ENDPOINT", "STATE", "WEIGHT", "TAKES NEW")]
    endpoints = taking = 0
    for service in services:
        scheduler = service.scheduler + "".join(f" +{flag}" for flag in service.sched_flags)
        if service.balance_factor is not None:
            scheduler += f" +balance_factor={service.balance_factor:g}"
        if service.slow_start:
            scheduler += f" +slow_start={service.slow_start:g}s"
        if service.panic_threshold is not None:
            scheduler += f" +panic_threshold={service.panic_threshold:g}%"
        affinity = f"{service.affinity_timeout}s" if service.affinity_timeout else "-"
        head = (service.name, service.address, service.protocol, scheduler, affinity)
        usable = set(usable_endpoints(service.endpoints))
        fallback = not any(endpoint.ready for endpoint in usable)
        if not service.endpoints:
            rows.append(head + ("(none)", "-", "-", "connections refused"))
        for i, endpoint in enumerate(service.endpoints):
            takes = _takes_new(endpoint, usable, fallback)
            taking += takes.startswith("yes")
            state = _endpoint_state(endpoint.ready, bool(endpoint.serving), endpoint.terminating)
            rows.append((head if i == 0 else ("",) * len(head)) + (endpoint.address, state, str(endpoint.weight), takes))
        endpoints += len(service.endpoints)
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.append(f"{_count(len(services), 'service')}, {_count(endpoints, 'endpoint')}, {taking} taking new connections")
    lines.extend(f"health check of {service.name}: {describe_check(service.health_check)}"
                 for service in services if service.health_check is not None)
    return "\n".join(lines) + "\n"


def _backends_line() -> str:
    """Which schedulers each backend runs itself (`lbcore.render.BACKEND_SCHEDULERS`)."""
    from .render import BACKEND_SCHEDULERS

    every = [name for name, runs in BACKEND_SCHEDULERS.items() if set(runs) >= set(SCHEDULERS)]
    some = [f"{name} runs {', '.join(runs)}" for name, runs in BACKEND_SCHEDULERS.items() if name not in every]
    run = "runs" if len(every) == 1 else "run"
    return (f"backends: {' and '.join(every)} {run} every scheduler; {'; '.join(some)}; "
            "the others are refused unless rendered with --fallback\n")


def _check(args: argparse.Namespace) -> int:
    [services] = _load(args.files)
    sys.stdout.write(check_table(services))
    sys.stdout.write(_backends_line())
    return 0


# -- render ----------------------------------------------------------------------------


def _add_render(commands: argparse._SubParsersAction) -> None:
    render = commands.add_parser(
        "render", help="print kernel configuration (iptables, ipset, IPVS, nftables) for the services",
        description="Print the services as input for the kernel's tools.  Nothing is "
        "applied: pipe the output to iptables-restore --noflush, ipset restore, ipvsadm -R, "
        "nft -f - or sh.",
    )
    targets = render.add_subparsers(dest="target", required=True, metavar="TARGET")
    iptables = _add_command(
        targets, "iptables", _render_iptables, "iptables-restore input (apply with iptables-restore --noflush)",
        "Print iptables-restore input in kube-proxy's layout under lbcore's chains; apply it "
        "with iptables-restore --noflush (after the ipset payload, for ClientIP affinity).",
        diff=True,
    )
    iptables.add_argument(
        "--fallback", action="store_true",
        help="render schedulers iptables cannot express (lc, wlc, dh, sh, mh, p2c, ring; "
        "balance_factor) by the documented fallback, and drop slow_start, instead of refusing them",
    )
    iptables.add_argument(
        "--install", action="store_true",
        help="the once-per-node form: also add the jumps from the built-in chains (guarded: "
        "on a node where lbcore is installed it fails and changes nothing)",
    )
    iptables.add_argument(
        "--family", type=int, choices=(4, 6), default=4,
        help="4: the IPv4 services, for iptables-restore (default); 6: the IPv6 ones, for "
        "ip6tables-restore",
    )
    ipset = _add_command(
        targets, "ipset", _render_ipset, "ipset restore input for ClientIP affinity (apply before iptables)",
        "Print the ipset restore input that the iptables rules' ClientIP affinity needs; "
        "apply it with ipset restore before the iptables payload.  With --diff OLD, only "
        "the sets to create (before the iptables diff); with --diff OLD --cleanup, the sets "
        "to destroy (after it).",
        diff=True,
    )
    ipset.add_argument(
        "--cleanup", action="store_true",
        help="with --diff: print the sets that are no longer used, to destroy after the iptables diff",
    )
    ipvs = _add_command(
        targets, "ipvs", _render_ipvs, "ipvsadm-restore input (apply with ipvsadm -R)",
        "Print ipvsadm-restore input: one virtual service per service, one real server per endpoint.",
        diff=True,
    )
    ipvs.add_argument(
        "--fallback", action="store_true",
        help="render what IPVS has no scheduler for (p2c as wlc, ring as mh with mh-fallback; "
        "balance_factor and slow_start dropped) instead of refusing it",
    )
    node = _add_command(
        targets, "ipvs-node", _render_ipvs_node, "shell commands that put the VIPs on a dummy interface",
        "Print the node set-up IPVS needs around the rules: the services' VIPs on a dummy interface.",
    )
    node.add_argument("--interface", metavar="NAME", help="the dummy interface (default: the renderer's)")
    nft = _add_command(
        targets, "nft", _render_nft, "nft -f input: lbcore's own nftables tables",
        "Print nft -f input for lbcore's tables (ip lbcore, ip6 lbcore): the whole tables, "
        "replacing what lbcore had there in one transaction (at start and after a failed "
        "sync), or with --diff OLD only the changes from the services in OLD (each sync).  "
        "Other tables are never touched; `nft delete table ip lbcore` (and ip6) removes "
        "lbcore.",
        diff=True,
    )
    nft.add_argument(
        "--fallback", action="store_true",
        help="render schedulers nftables cannot run (lc, wlc, p2c, ring; balance_factor) by the "
        "documented fallback (lc as rr, the others as wrr, the bound and slow_start dropped) instead of refusing them",
    )
    nft.add_argument(
        "--family", type=int, choices=(4, 6),
        help="only the IPv4 (4) or the IPv6 (6) table; default: both, in one transaction",
    )


def _render_iptables(args: argparse.Namespace) -> int:
    if args.diff and args.install:
        raise ConfigError("--install", True, "installs a node from a full payload; it does not go with --diff")
    new, old = _load(args.files, args.diff or ())
    from .render import iptables

    if args.diff:
        text = iptables.render_diff(old, new, fallback=args.fallback, family=args.family)
    else:
        text = iptables.render(new, fallback=args.fallback, install=args.install, family=args.family)
    sys.stdout.write(text)
    return 0


def _render_ipset(args: argparse.Namespace) -> int:
    if args.cleanup and not args.diff:
        raise ConfigError("--cleanup", True, "needs --diff OLD: the sets OLD had and FILE has not")
    new, old = _load(args.files, args.diff or ())
    from .render import ipset

    if args.cleanup:
        text = ipset.render_cleanup(old, new)
    else:
        text = ipset.render_diff(old, new) if args.diff else ipset.render(new)
    sys.stdout.write(text)
    return 0


def _render_nft(args: argparse.Namespace) -> int:
    new, old = _load(args.files, args.diff or ())
    from .render import nft

    if args.diff:
        text = nft.render_diff(old, new, fallback=args.fallback, family=args.family)
    else:
        text = nft.render(new, fallback=args.fallback, family=args.family)
    sys.stdout.write(text)
    return 0


def _render_ipvs(args: argparse.Namespace) -> int:
    new, old = _load(args.files, args.diff or ())
    from .render import ipvs

    if args.diff:
        sys.stdout.write(ipvs.render_diff(old, new, fallback=args.fallback))
    else:
        sys.stdout.write(ipvs.render(new, fallback=args.fallback))
    return 0


def _render_ipvs_node(args: argparse.Namespace) -> int:
    [services] = _load(args.files)
    from .render import ipvs

    options = {"interface": args.interface} if args.interface else {}
    sys.stdout.write(ipvs.render_node_setup(services, **options))
    return 0


# -- forward ---------------------------------------------------------------------------


def _positive(convert: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be a number above 0, not {text!r}")
        return value

    return parse


#: lbcore forward's tuning flags: (flag, keyword of lbcore.forwarder.run, type, metavar,
#: help).
#: A flag left out is not passed, so the forwarder's own default holds.
_FORWARD_OPTIONS = (
    ("--connect-timeout", "connect_timeout", _positive(float), "SECONDS",
     "first connect timeout, doubled on each retry (default 0.25)"),
    ("--idle-timeout", "idle_timeout", _positive(float), "SECONDS",
     "close a TCP connection silent both ways this long (default 300)"),
    ("--udp-idle-timeout", "udp_idle_timeout", _positive(float), "SECONDS",
     "end a UDP flow idle this long (default 30)"),
    ("--tries", "tries", _positive(int), "N",
     "endpoints to try per connection before refusing the client (default 4)"),
    ("--cooldown", "cooldown", _positive(float), "SECONDS",
     "skip an endpoint this long after a failed connect (default 10)"),
    ("--max-connections", "max_connections", _positive(int), "N",
     "per-service cap on open connections unless the service sets its own (default 10000)"),
    ("--drain-timeout", "drain_timeout", _positive(float), "SECONDS",
     "on SIGTERM, wait this long for open connections to finish (default 30)"),
    ("--metrics-listen", "metrics_listen", str, "IP:PORT",
     "serve Prometheus metrics there (needs lbcore[prometheus])"),
)


def _add_forward(commands: argparse._SubParsersAction) -> None:
    parser = _add_command(
        commands, "forward", _forward, "run the userspace forwarder for the services",
        "Listen on each service's listen address (default vip:port) and forward "
        "connections to its endpoints.  SIGHUP reloads the files (a bad file is refused "
        "and the old services keep serving); SIGTERM drains and exits.",
    )
    for flag, keyword, convert, metavar, help_text in _FORWARD_OPTIONS:
        parser.add_argument(flag, dest=keyword, type=convert, metavar=metavar, help=help_text)


def _forward(args: argparse.Namespace) -> int:
    files = list(args.files)
    first = _load(files)  # a bad file is refused before anything listens
    from . import forwarder
    from .sources import load_files

    def load() -> list[Service]:
        # The files as just read for the start, read again on each SIGHUP.
        return first.pop() if first else load_files(files)

    options = {keyword: getattr(args, keyword) for _, keyword, *_ in _FORWARD_OPTIONS
               if getattr(args, keyword) is not None}
    return forwarder.run(load, **options)


# -- run -------------------------------------------------------------------------------


def _add_run(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "run", help="run the node agent: keep the kernel (or the forwarder) in step with the sources",
        description="Watch the sources and keep the data plane carrying their services, as "
        "kube-proxy does: changes coalesced, syncs at least --min-sync-period apart (a burst "
        "of 2), partial syncs, a full sync at start (stale rules removed), after a failure "
        "and every --sync-period.  /healthz and /livez on --healthz-bind-address, Prometheus "
        "/metrics on --metrics-bind-address.  SIGTERM leaves the rules in place unless "
        "--cleanup-on-exit.",
    )
    parser.add_argument(
        "--source", action="append", metavar="SOURCE", default=[],
        help="etcd://HOST:PORT[,HOST:PORT...]/PREFIX, kubernetes, or a file or directory of "
        "lbcore YAML / Kubernetes dumps; repeat for several (on a clash the first listed wins)",
    )
    parser.add_argument("--mode", required=True, choices=("nft", "iptables", "ipvs", "forward"),
                        help="the data plane: nftables, iptables + ipset, IPVS, or the userspace forwarder")
    parser.add_argument("--min-sync-period", type=float, default=1.0, metavar="SECONDS",
                        help="at least this long between syncs, after a burst of 2 (default 1; 0: no limit)")
    parser.add_argument("--sync-period", type=float, default=3600.0, metavar="SECONDS",
                        help="a full sync at least this often; /healthz fails when a change waits "
                        "twice as long (default 3600)")
    # kube-proxy's ports; the defaults live in lbcore.agent.run (not imported before it runs)
    parser.add_argument("--healthz-bind-address", metavar="IP:PORT",
                        help="where /healthz and /livez answer (default 127.0.0.1:10256)")
    parser.add_argument("--metrics-bind-address", metavar="IP:PORT",
                        help="where /metrics answers (default 127.0.0.1:10249)")
    parser.add_argument("--cleanup", action="store_true",
                        help="remove everything lbcore owns in the mode's data plane and exit")
    parser.add_argument("--cleanup-on-exit", action="store_true",
                        help="on SIGTERM, remove everything lbcore owns before exiting")
    parser.add_argument("--kubeconfig", metavar="PATH",
                        help="the kubernetes source's cluster (default: in-cluster)")
    parser.add_argument("--fallback", action="store_true",
                        help="iptables, ipvs and nft modes: run what they cannot (iptables: lc, wlc, dh, "
                        "sh, mh, p2c, ring; ipvs: p2c, ring; nft: lc, wlc, p2c, ring; balance_factor in "
                        "all three) by the documented fallback instead of refusing it")
    parser.add_argument("--interface", metavar="NAME",
                        help="ipvs mode: the dummy interface for the VIPs (default lbcore-ipvs0)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log each change's network programming time")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    import logging

    from .agent import run

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s")
    sink_options: dict = {}
    if args.fallback:
        if args.mode not in ("iptables", "ipvs", "nft"):
            raise ConfigError("--fallback", True,
                              f"is an iptables, ipvs and nft mode option, not one of --mode {args.mode}")
        sink_options["fallback"] = True
    if args.interface is not None:
        if args.mode != "ipvs":
            raise ConfigError("--interface", args.interface, f"is an ipvs mode option, not one of --mode {args.mode}")
        sink_options["interface"] = args.interface
    if not args.cleanup and not args.source:
        raise ConfigError("--source", None, "is required (at least one) unless --cleanup")
    source_options = {"kubeconfig": args.kubeconfig} if args.kubeconfig else {}
    addresses = {name: getattr(args, name) for name in ("healthz_bind_address", "metrics_bind_address")
                 if getattr(args, name) is not None}
    return run(args.source, args.mode, min_sync_period=args.min_sync_period, sync_period=args.sync_period,
               cleanup=args.cleanup, cleanup_on_exit=args.cleanup_on_exit,
               source_options=source_options, sink_options=sink_options, **addresses)
# -- simulate --------------------------------------------------------------------------

#: lbcore simulate's synthetic-traffic flags: (flag, keyword of lbcore.simulate.synthetic,
#: type, metavar, help).  A flag left out is not passed, so synthetic()'s default holds.
_TRAFFIC_OPTIONS = (
    ("--requests", "requests", _positive(int), "N", "synthetic requests (default 1000000)"),
    ("--rate", "rate", _positive(float), "PER_S", "Poisson arrivals per second (default 10000)"),
    ("--keys", "keys", _positive(int), "K", "distinct keys (clients) (default 10000)"),
    ("--zipf", "zipf", float, "S", "Zipf exponent of the keys' popularity; 0: uniform (default 1.0)"),
    ("--duration-median", "duration_median", _positive(float), "SECONDS",
     "median connection duration, lognormal (default 0.1)"),
    ("--duration-p99", "duration_p99", _positive(float), "SECONDS",
     "99th percentile of the duration (default 2.0)"),
)


def _weights(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be integers separated by commas, not {text!r}") from None


def _add_simulate(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "simulate", help="replay traffic and endpoint events through schedulers; report and pictures",
        description="Replay a trace (--trace) or synthetic traffic through each scheduler, with "
        "endpoint events at given times, using lbcore's own balancers.  Prints a summary table "
        "and writes report.json and three PNG pictures (with lbcore[plot]) into --out.  "
        "Needs numpy: pip install \"lbcore[simulate]\".",
    )
    traffic = parser.add_argument_group("traffic: a trace, or synthetic")
    traffic.add_argument("--trace", metavar="FILE",
                         help="CSV with a header (time,key,duration[,bytes]) or JSON lines")
    for flag, keyword, convert, metavar, help_text in _TRAFFIC_OPTIONS:
        traffic.add_argument(flag, dest=keyword, type=convert, metavar=metavar, help=help_text)
    endpoints = parser.add_argument_group("endpoints: numbered, or a service's")
    endpoints.add_argument("--endpoints", type=_positive(int), metavar="N",
                           help="N endpoints 10.0.0.1:8080, 10.0.0.2:8080, ... (default 10)")
    endpoints.add_argument("--weights", type=_weights, metavar="W,...",
                           help="their weights, repeated in turn (default 1)")
    endpoints.add_argument("--services", nargs="+", metavar="FILE", help=_FILES_HELP)
    endpoints.add_argument("--service", metavar="NAME", help="the service of --services to use")
    parser.add_argument("--event", action="append", default=[], metavar="TIME:KIND:IP:PORT[:WEIGHT]",
                        help="remove, add, fail, recover or weight an endpoint at TIME (30s, 1.5m); repeatable")
    parser.add_argument("--schedulers", metavar="LIST",
                        help="comma-separated: rr, wlc, mh+affinity, mh:table_size=251, ... "
                        "(default: every scheduler and mh+affinity)")
    parser.add_argument("--affinity-timeout", type=_positive(int), metavar="SECONDS",
                        help="session timeout of +affinity (default: the service's, else 10800)")
    parser.add_argument("--seed", type=int, default=1, help="seeds the traffic and the balancers (default 1)")
    parser.add_argument("--out", default="simulate-report", metavar="DIR",
                        help="where report.json and the pictures go (default simulate-report)")
    parser.set_defaults(run=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    try:
        from .simulate import DEFAULT_SCHEDULERS, command
    except ImportError as error:  # numpy, the lbcore[simulate] extra
        print(f"lbcore: error: lbcore simulate needs {error.name}: pip install \"lbcore[simulate]\"", file=sys.stderr)
        return 1
    if args.services and (args.endpoints or args.weights):
        raise ConfigError("--endpoints" if args.endpoints else "--weights", args.endpoints or args.weights,
                          "numbers endpoints; it does not go with --services")
    if args.service and not args.services:
        raise ConfigError("--service", args.service, "names a service of --services FILE...; give the files")
    timeout = args.affinity_timeout
    if args.services:
        [services] = _load(args.services)
        service = command.choose_service(services, args.service)
        endpoints = list(service.endpoints)
        timeout = timeout or service.affinity_timeout
    else:
        endpoints = command.numbered_endpoints(args.endpoints or 10, args.weights or [1])
    options = {keyword: getattr(args, keyword) for _, keyword, *_ in _TRAFFIC_OPTIONS
               if getattr(args, keyword) is not None}
    return command.run(trace=args.trace, traffic_options=options, endpoints=endpoints, events=args.event,
                       schedulers=args.schedulers or DEFAULT_SCHEDULERS, affinity_timeout=timeout,
                       seed=args.seed, out=args.out)


# -- main ------------------------------------------------------------------------------

def _add_demo(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "demo", help="run every scheduler on 127.0.0.1 and print the spread",
        description="Start four backends and a forwarder on 127.0.0.1, drive traffic from "
        "many 127.x client addresses through rr, wrr, wlc, sh, mh and mh with affinity "
        "(removing a backend mid-run), and print each scheduler's spread, failures and "
        "pick cost.  Takes about ten seconds; needs nothing but this package.",
    )
    parser.set_defaults(run=_demo)


def _demo(args: argparse.Namespace) -> int:
    from . import demo

    return demo.main()


#: The subcommands in help order; each adds its parser and sets ``run``.
COMMANDS = (_add_check, _add_render, _add_forward, _add_run, _add_simulate, _add_demo)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lbcore",
        description="Check, render and forward Kubernetes-style Services read from lbcore "
        "YAML or Kubernetes Service + EndpointSlice dumps.  Exit status 2 means bad input.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``lbcore`` command with ``argv`` (default: ``sys.argv[1:]``); the exit status."""
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except LbcoreError as error:
        for line in str(error).splitlines():
            print(f"lbcore: error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        # The reader left (`lbcore render ... | head`): stop quietly, and keep Python's
        # final flush from failing on the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
