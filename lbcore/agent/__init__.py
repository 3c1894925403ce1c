"""The node agent behind ``lbcore run``: kube-proxy's loop over lbcore's sources and
data planes.

`Agent` ties live sources (`lbcore.sources.live`) to a sink (`lbcore.agent.sinks`:
nftables, iptables + ipset, IPVS, the in-process forwarder) through a change tracker and a
bounded-frequency runner, and answers ``/healthz``, ``/livez`` and Prometheus
``/metrics``; `run` is the blocking entry of ``lbcore run`` (signals, HTTP servers,
``--cleanup``).

Embedding it::

    import asyncio
    from lbcore.agent import Agent, make_sink
    from lbcore.sources.live import open_source

    agent = Agent([open_source("etcd://127.0.0.1:2379/lbcore/services")], make_sink("iptables"))
    asyncio.run(agent.run())    # agent.healthz(), agent.metrics.registry meanwhile

Importing this package imports asyncio and prometheus-client (extra ``lbcore[agent]``);
``import lbcore`` alone does not.
"""

from .agent import DEFAULT_MIN_SYNC_PERIOD, DEFAULT_SYNC_PERIOD, Agent
from .run import run
from .runner import BoundedFrequencyRunner
from .sinks import MODES, ApplyError, Sink, make_sink
from .tracker import ChangeTracker

__all__ = [
    "Agent",
    "run",
    "ChangeTracker",
    "BoundedFrequencyRunner",
    "Sink",
    "ApplyError",
    "make_sink",
    "MODES",
    "DEFAULT_MIN_SYNC_PERIOD",
    "DEFAULT_SYNC_PERIOD",
]
