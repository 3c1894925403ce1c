"""``lbcore forward``: run a Forwarder until told to stop, reloading on SIGHUP.

Signals (the conventions of nginx and HAProxy):
SIGHUP reloads (``load()`` again, then `Forwarder.update`; a bad reload is logged and
the running configuration keeps serving); SIGTERM and SIGINT stop (no new connections,
drain up to ``drain_timeout``); SIGUSR1 prints the stats on stdout.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import sys
from typing import Any, Callable, Iterable

from ..errors import ConfigError
from ..models import Service, join_host_port
from .forwarder import Forwarder
from .metrics import parse_listen, serve_metrics
from .options import Options
from .stats import format_stats

__all__ = ["run", "new_event_loop"]

log = logging.getLogger("lbcore.forwarder")

#: exit statuses: DESIGN.md "bad input: exit status 2"
EXIT_OK, EXIT_BAD_INPUT = 0, 2


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when uvloop is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _raise_fd_limit() -> None:
    # Each proxied connection holds two sockets (and, while splicing, up to four more
    # descriptors); lift the soft limit to the hard one, as the Go runtime does.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run(
    load: Callable[[], Iterable[Service]],
    *,
    metrics_listen: str | None = None,
    **options: Any,
) -> int:
    """Forward the services ``load()`` returns until SIGTERM/SIGINT; return the exit status.

    ``load`` reads the configuration (the CLI's files) and is called again on SIGHUP.
    ``options`` are the `Forwarder` options; ``metrics_listen="127.0.0.1:9100"`` serves
    Prometheus metrics (needs ``lbcore[prometheus]``).  Returns 0 after a clean stop, 2
    when the options, the first ``load()`` or a listener is bad (logged, one line).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        Options.from_kwargs(options)
        metrics = parse_listen(metrics_listen) if metrics_listen is not None else None
        services = list(load())
    except Exception as exc:  # a bad file is a ConfigError; unreadable ones are OSErrors
        log.error("%s", exc)
        return EXIT_BAD_INPUT
    _raise_fd_limit()
    loop = new_event_loop()
    try:
        return loop.run_until_complete(_serve(services, load, options, metrics))
    finally:
        loop.close()


async def _serve(
    services: list[Service],
    load: Callable[[], Iterable[Service]],
    options: dict[str, Any],
    metrics: tuple[str, int] | None,
) -> int:
    loop = asyncio.get_running_loop()
    forwarder = Forwarder(services, **options)
    stop = asyncio.Event()
    started = False
    reload_pending = False

    def reload() -> None:
        nonlocal reload_pending
        if not started:  # SIGHUP during start-up: apply it once the listeners are up
            reload_pending = True
            return
        try:
            services = list(load())
            before = dict(forwarder.addresses)
            forwarder.update(services)
        except Exception as exc:  # anything load() or update() raises: keep serving
            log.error("reload refused, the running configuration stays: %s", exc)
            return
        log.info("reloaded: %d services", len(services))
        _log_listening(forwarder, before)

    def print_stats() -> None:
        print(format_stats(forwarder.stats()), flush=True)

    # Handlers first: a signal that came before them would kill the process.
    handlers = {
        signal.SIGHUP: reload,
        signal.SIGTERM: stop.set,
        signal.SIGINT: stop.set,
        signal.SIGUSR1: print_stats,
    }
    for signum, handler in handlers.items():
        loop.add_signal_handler(signum, handler)
    metrics_server = None
    try:
        try:
            # Metrics bound first: once a service answers, its metrics answer too.
            if metrics is not None:
                metrics_server = await serve_metrics(forwarder, metrics)
            await forwarder.start()
            _log_listening(forwarder, {})
            if metrics is not None:
                log.info("metrics on http://%s/metrics", join_host_port(*metrics))
        except ConfigError as exc:
            log.error("%s", exc)
            await forwarder.stop()
            return EXIT_BAD_INPUT
        started = True
        if reload_pending:
            reload()
        await stop.wait()
        log.info(
            "stopping: no new connections; draining for up to %gs",
            forwarder.options.drain_timeout,
        )
        await forwarder.stop()
    finally:
        for signum in handlers:
            loop.remove_signal_handler(signum)
        if metrics_server is not None:
            await metrics_server.close()
    log.info("stopped")
    return EXIT_OK


def _log_listening(forwarder: Forwarder, before: dict[str, tuple[str, int]]) -> None:
    stats = forwarder.stats()
    for name, address in forwarder.addresses.items():
        if before.get(name) != address:
            protocol = stats[name]["protocol"]
            log.info("%s: listening on %s/%s", name, join_host_port(*address), protocol)
    sys.stderr.flush()
