"""``lbcore demo``: every scheduler on real sockets, nothing to configure.

Starts four backend servers and one forwarder on 127.0.0.1, then drives real TCP
traffic through one service per scheduler, from clients bound to many distinct
127.x source addresses (so source hashing and affinity see real, different keys).
Prints, per scheduler, the spread over the backends as a table with bars, the failures
a client saw, and the cost of one pick measured in this process.  One backend answers
slowly, which is what least-connection and least request are for; the Maglev +
affinity service loses a backend in the middle of its run; and one client sends half
of the requests of two Maglev services, one of them with bounded loads, to show that
bound keep that hot client from piling onto one backend.  Everything is torn down at
the end.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable, TextIO

from ._floor import Cost, call_loop, pair_loop, per_call
from .balancers import make_balancer
from .forwarder import Forwarder, new_event_loop
from .models import Endpoint, Service

__all__ = ["main", "run_demo"]

BACKENDS = ("b1", "b2", "b3", "b4")
#: Seconds each backend holds a request: b4 is slow, so it keeps connections open longer.
LATENCY = {"b1": 0.004, "b2": 0.004, "b3": 0.004, "b4": 0.040}
CLIENTS = 160  # distinct source addresses, 127.1.0.1 ...
CONCURRENCY = 32
BAR_WIDTH = 30
#: The hot-client scenarios: every other request comes from the first client.
HOT_CLIENT = 0
#: Their bounded service's balance_factor: no backend above 1.25 x the mean.
BALANCE_FACTOR = 1.25


@dataclass
class Scenario:
    """One service of the demo: its scheduler, its endpoints' weights and what it shows."""

    scheduler: str
    title: str
    shows: str
    weights: tuple[int, ...] = (1, 1, 1, 1)
    affinity_timeout: int | None = None
    balance_factor: float | None = None
    hot: bool = False  # every other request from HOT_CLIENT
    rounds: int = 2  # requests per client
    answers: Counter = field(default_factory=Counter)  # backend name -> requests answered
    failures: int = 0
    placements: dict = field(default_factory=dict)  # (round, client) -> backend name
    hot_answers: Counter = field(default_factory=Counter)  # backend name -> hot client's requests
    peak: Counter = field(default_factory=Counter)  # backend name -> most requests at once

    @property
    def name(self) -> str:
        suffix = "-affinity" if self.affinity_timeout else ""
        suffix += "-hot" if self.hot else ""
        suffix += "-bounded" if self.balance_factor else ""
        return f"demo/{self.scheduler}{suffix}"

    def client(self, n: int) -> int:
        """Who sends the n-th request of a round."""
        return HOT_CLIENT if self.hot and n % 2 else n


SCENARIOS = (
    Scenario("rr", "round robin", "equal shares"),
    Scenario("wrr", "weighted round robin", "shares follow weights 1:2:3:4", weights=(1, 2, 3, 4)),
    Scenario("wlc", "weighted least connection",
             "b4 answers 10x slower, holds its connections longer, gets fewer new ones"),
    Scenario("sh", "source hashing", "each client always reaches the same backend"),
    Scenario("mh", "Maglev consistent hashing", "even spread, each client on one backend"),
    Scenario("mh", "Maglev + ClientIP affinity",
             "b2 removed mid-run: only its clients move, none fail",
             affinity_timeout=600, rounds=3),
    Scenario("p2c", "least request, two random choices",
             "b4 answers 10x slower, holds its requests longer, gets fewer new ones"),
    Scenario("ring", "ring hash", "each client always reaches the same backend"),
    Scenario("mh", "Maglev, one hot client", "half the requests come from one client: "
             "its backend takes them all", hot=True, rounds=1),
    Scenario("mh", f"Maglev + balance_factor {BALANCE_FACTOR:g}, one hot client",
             "the same traffic: a full backend sends the hot client on to the next",
             hot=True, balance_factor=BALANCE_FACTOR, rounds=1),
)


# -- backends and clients ------------------------------------------------------------------

async def _start_backend(name: str, busy: Counter, peak: Counter) -> asyncio.Server:
    """A backend that answers its name after its LATENCY; ``busy`` counts the requests
    it holds, ``peak`` the most it held at once (reset by the caller per scenario)."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        busy[name] += 1
        peak[name] = max(peak[name], busy[name])
        try:
            await reader.readline()
            await asyncio.sleep(LATENCY[name])
            writer.write(f"{name}\n".encode())
            await writer.drain()
        finally:
            busy[name] -= 1
            writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


def client_address(n: int) -> str:
    """The n-th client's own source address: 127.1.0.1, 127.1.0.2, ..."""
    return f"127.1.{n // 250}.{n % 250 + 1}"


async def _request(address: tuple[str, int], source: str) -> str | None:
    """One connection, one request; the backend's name, or None if the client failed."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(*address, local_addr=(source, 0)), 5
        )
        try:
            writer.write(b"hello\n")
            reply = await asyncio.wait_for(reader.readline(), 5)
        finally:
            writer.close()
        name = reply.decode().strip()
        return name if name in BACKENDS else None
    except (OSError, asyncio.TimeoutError):
        return None


async def _drive(
    scenario: Scenario, address: tuple[str, int], round_no: int,
    midway: Callable[[], None] | None = None,
) -> None:
    """Every client makes one request, CONCURRENCY at a time; ``midway`` runs half way."""
    clients = iter(range(CLIENTS))
    done = 0

    async def worker() -> None:
        nonlocal done
        for n in clients:
            client = scenario.client(n)
            name = await _request(address, client_address(client))
            done += 1
            if midway is not None and done == CLIENTS // 2:
                midway()
            if name is None:
                scenario.failures += 1
            else:
                scenario.answers[name] += 1
                if client == n:
                    scenario.placements[(round_no, n)] = name
                else:
                    scenario.hot_answers[name] += 1

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


# -- the run -------------------------------------------------------------------------------

def _service(scenario: Scenario, ports: dict[str, int], without: str | None = None) -> Service:
    endpoints = [
        Endpoint("127.0.0.1", ports[name], weight=weight)
        for name, weight in zip(BACKENDS, scenario.weights)
        if name != without
    ]
    return Service(
        scenario.name, "127.0.0.1", 1, scheduler=scenario.scheduler, endpoints=endpoints,
        affinity_timeout=scenario.affinity_timeout, listen="127.0.0.1:0",
        balance_factor=scenario.balance_factor,
    )


KEY = "198.51.100.200"  # a 15-character client address


def _counts_connections(scenario: Scenario) -> bool:
    """Whether the scheduler counts connections, so a connection pays a release too."""
    return scenario.scheduler in ("lc", "wlc", "p2c") or scenario.balance_factor is not None


def pick_cost(scenario: Scenario) -> Cost:
    """What one pick costs against the floor of bench/ (lbcore._floor), 100 endpoints, a
    15-character client key; per pick + release where connections are counted (lc,
    wlc, p2c, bounded loads), as a connection pays them."""
    endpoints = [Endpoint(f"10.0.{i // 250}.{i % 250 + 1}", 8080, weight=1 + i % 4) for i in range(100)]
    options = {} if scenario.balance_factor is None else {"balance_factor": scenario.balance_factor}
    balancer = make_balancer(scenario.scheduler, endpoints, affinity_timeout=scenario.affinity_timeout,
                             **options)
    if _counts_connections(scenario):
        subject = pair_loop(balancer.pick, balancer.release, KEY)
    else:
        subject = call_loop(balancer.pick, KEY)
    return per_call(subject, calls=50_000, rounds=5)


async def run_demo(out: TextIO, progress: TextIO) -> int:
    """Run every scenario; print the tables to ``out``; return the number of failures."""
    # Fresh tallies each run: SCENARIOS only describes them, so a second run counts anew.
    scenarios = [replace(s, answers=Counter(), failures=0, placements={}, hot_answers=Counter(),
                         peak=Counter()) for s in SCENARIOS]
    busy: Counter = Counter()
    peak: Counter = Counter()
    backends = {name: await _start_backend(name, busy, peak) for name in BACKENDS}
    ports = {name: server.sockets[0].getsockname()[1] for name, server in backends.items()}
    forwarder = Forwarder([_service(s, ports) for s in scenarios], connect_timeout=1.0)
    await forwarder.start()
    show = _progress(progress)
    try:
        for i, scenario in enumerate(scenarios, 1):
            show(f"[{i}/{len(scenarios)}] {scenario.title} ...")
            address = forwarder.addresses[scenario.name]
            peak.clear()
            for round_no in range(scenario.rounds):
                midway = None
                if scenario.affinity_timeout and round_no == 1:
                    def midway(s: Scenario = scenario) -> None:
                        services = [_service(x, ports, without="b2" if x is s else None)
                                    for x in scenarios]
                        forwarder.update(services)
                await _drive(scenario, address, round_no, midway)
            scenario.peak.update(peak)
            cost = pick_cost(scenario)
            show("")
            _print_scenario(scenario, ports, forwarder.stats()[scenario.name], cost, out)
    finally:
        await forwarder.stop()
        for server in backends.values():
            server.close()
            await server.wait_closed()
    return sum(s.failures for s in scenarios)


def _progress(stream: TextIO) -> Callable[[str], None]:
    """Show a status line: rewritten in place on a terminal, one line per step elsewhere."""
    if stream.isatty():
        def show(text: str) -> None:
            stream.write(f"\r\033[K{text}")
            stream.flush()
    else:
        def show(text: str) -> None:
            if text:
                print(text, file=stream, flush=True)
    return show


def _print_scenario(
    scenario: Scenario, ports: dict[str, int], stats: dict, cost: Cost, out: TextIO
) -> None:
    total = sum(scenario.answers.values())
    unit = "pick + release" if _counts_connections(scenario) else "pick"
    clients = len({scenario.client(n) for n in range(CLIENTS)})
    print(f"\n{scenario.scheduler:<5}{scenario.title} — {scenario.shows}", file=out)
    print(f"    {total} requests from {clients} clients, {scenario.failures} failures, "
          f"{cost.ns:.0f} ns per {unit} ({cost.ratio:.1f}x the abs(k) floor), "
          "100 endpoints", file=out)
    for name, weight in zip(BACKENDS, scenario.weights):
        n = scenario.answers[name]
        share = n / total if total else 0.0
        bar = "█" * round(share * BAR_WIDTH * 2)
        print(f"    {name} :{ports[name]:<5} w={weight} {n:5d} {share:6.1%} {bar}", file=out)
    for line in _stickiness(scenario, stats):
        print(f"    {line}", file=out)


def _stickiness(scenario: Scenario, stats: dict) -> list[str]:
    """What the keyed schedulers promise, checked on the answers the clients got."""
    if scenario.hot:
        hot = ", ".join(f"{name} {scenario.hot_answers[name]}" for name in BACKENDS)
        peaks = ", ".join(f"{name} {scenario.peak[name]}" for name in BACKENDS)
        return [f"hot client {client_address(HOT_CLIENT)}: {sum(scenario.hot_answers.values())} "
                f"requests, answered by {hot}",
                f"most requests a backend held at once: {peaks} (b4 answers 10x slower)"]
    if scenario.scheduler not in ("sh", "mh", "ring"):
        return []
    rounds = range(scenario.rounds)
    if not scenario.affinity_timeout:
        kept = sum(
            len({scenario.placements.get((r, n)) for r in rounds}) == 1 for n in range(CLIENTS)
        )
        return [f"clients that reached the same backend every time: {kept} of {CLIENTS}"]
    first, last = 0, scenario.rounds - 1
    on_b2 = {n for n in range(CLIENTS) if scenario.placements.get((first, n)) == "b2"}
    moved = {
        n for n in range(CLIENTS)
        if scenario.placements.get((first, n)) != scenario.placements.get((last, n))
    }
    return [
        f"b2 removed during round 2 of 3: {len(moved)} clients moved, "
        f"{len(on_b2)} were on b2, moved = exactly b2's clients: {moved == on_b2}",
        f"forwarder: {stats['total']} connections, {stats['unavailable']} unavailable, "
        f"{stats['refused']} refused",
    ]


def main(out: TextIO | None = None, progress: TextIO | None = None) -> int:
    """Run the demo; exit status 0 when no client saw a failure, 1 otherwise.

    ``out`` and ``progress`` default to the ``sys.stdout`` and ``sys.stderr`` of the
    call (not of the import), so a redirected stdout gets the tables.
    """
    out = sys.stdout if out is None else out
    progress = sys.stderr if progress is None else progress
    print("lbcore demo: 4 backends and one forwarder on 127.0.0.1, "
          f"clients from {CLIENTS} addresses in 127.1.0.0/16", file=out)
    print("pick costs: per call in a plain Python loop, in rounds alternating with the floor bench/ "
          "uses (abs(k) in the same loop)", file=out, flush=True)
    start = time.perf_counter()
    loop = new_event_loop()
    try:
        failures = loop.run_until_complete(run_demo(out, progress))
    finally:
        loop.close()
    print(f"\n{failures} failures in {time.perf_counter() - start:.1f} s", file=out)
    return 0 if failures == 0 else 1
