"""The TCP relay (`Relay`) from the twin in use, wired to the forwarder's passive health
and splice pump.  lbcore/_pure/relay.py holds the rules (admit, pick, replay, copy, release);
lbcore/_fast/relay.pyx is the same relay compiled, so that a connection's set-up and end
cost C calls."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._twins import twin
from . import splice
from .retry import failed

if TYPE_CHECKING:
    from .._pure.copier import Copier
    from .._pure.relay import REPLAY_LIMIT, Relay
else:
    _relay = twin("relay")
    Relay, REPLAY_LIMIT = _relay.Relay, _relay.REPLAY_LIMIT
    Copier = twin("copier").Copier
    _relay.wire(failed, splice.Pump if splice.AVAILABLE else None, splice.BULK_READ)

__all__ = ["Relay", "REPLAY_LIMIT", "Copier"]
