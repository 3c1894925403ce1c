"""Active health checks: each endpoint's state comes from checking it, not from a
failed customer.

- `HealthChecker`: checks a set of endpoints as a `lbcore.HealthCheck` says (``tcp``
  connect, ``tcp`` send/expect, ``http`` GET with a status range; interval, timeout,
  rise, fall, jitter, port) and drives any balancer's ``mark_failed`` /
  ``mark_healthy`` and a callback.  Passive failures (a real connection that failed)
  count toward ``fall``.
- `EndpointHealth`: one endpoint's state machine (rise/fall counters, last result, why,
  latency, since when).
- `CheckWheel`: the one timer and the bound on checks in flight that checkers share.
- `HealthMonitor`: the checkers of a whole set of Services, kept across updates (the
  forwarder and a node agent run one).
- `inhibit_unhealthy`: the Services as the kernel should carry them, an unhealthy
  endpoint at weight 0 (keepalived's ``inhibit_on_failure``).

Importing this package imports asyncio; ``import lbcore`` alone does not.
"""

from .checker import HealthChecker
from .kernel import inhibit_unhealthy
from .monitor import HealthMonitor
from .probes import probe
from .state import EndpointHealth
from .wheel import DEFAULT_CONCURRENCY, CheckWheel

__all__ = [
    "HealthChecker",
    "HealthMonitor",
    "EndpointHealth",
    "CheckWheel",
    "DEFAULT_CONCURRENCY",
    "inhibit_unhealthy",
    "probe",
]
