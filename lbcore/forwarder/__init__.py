"""The userspace forwarder: kube-proxy's old userspace mode, done properly.

One listener per Service; per TCP connection pick → connect with retries and passive
health → copy both ways with backpressure (bulk through ``splice(2)``, a persistent
connection's steady state through a compiled copier between the raw sockets) → `release()`,
on sockets the forwarder accepts, connects and watches itself (one epoll set);
per-client UDP flows; live updates that never cut established connections; limits,
timeouts, draining, and stats.  Runs on uvloop when it is installed (``lbcore[uvloop]``).

`Forwarder` is the embeddable object; `run` is the blocking entry of
``lbcore forward`` (signals, reloads, optional Prometheus endpoint).  Every timeout runs
on one clock (`lbcore.forwarder.clock`); a test gives the forwarder a `ManualClock`.

Importing this package imports asyncio; ``import lbcore`` alone does not.
"""

from .clock import LoopClock, ManualClock
from .forwarder import Forwarder
from .options import Options
from .run import new_event_loop, run
from .stats import format_stats

__all__ = [
    "Forwarder", "Options", "ManualClock", "LoopClock", "run", "new_event_loop", "format_stats",
]
