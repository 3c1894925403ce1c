"""The two errors lbcore raises on purpose.

`ConfigError` means a value given to lbcore is wrong; its message names the field,
shows the value and says what would be valid.  `NoEndpointsError` means a balancer was
asked to pick while no endpoint can take a new connection.
"""

from __future__ import annotations

__all__ = ["LbcoreError", "ConfigError", "NoEndpointsError"]

_MAX_VALUE_REPR = 80


class LbcoreError(Exception):
    """Base class of every error lbcore raises on purpose."""


class ConfigError(LbcoreError, ValueError):
    """A bad value in a model, a balancer option or an input file.

    ``field`` is a dotted path (``endpoints[1].port``), ``value`` the offending value,
    ``reason`` what is wrong and what would be valid, ``where`` an optional location
    (a file name, an object) put in front of the message.

    >>> str(ConfigError("port", 70000, "is out of range; valid ports are 1..65535"))
    'port: 70000 is out of range; valid ports are 1..65535'
    >>> str(ConfigError("port", 0, "is out of range").within("endpoints[2]").at("svc.yaml"))
    'svc.yaml: endpoints[2].port: 0 is out of range'
    """

    def __init__(self, field: str, value: object, reason: str, *, where: str | None = None):
        self.field = field
        self.value = value
        self.reason = reason
        self.where = where
        super().__init__(self._message())

    def _message(self) -> str:
        text = repr(self.value)  # repr escapes newlines: one problem, one line
        if len(text) > _MAX_VALUE_REPR:
            text = text[: _MAX_VALUE_REPR - 3] + "..."
        message = f"{self.field}: {text} {self.reason}"
        return f"{self.where}: {message}" if self.where else message

    def within(self, prefix: str) -> ConfigError:
        """The same error with ``prefix`` put in front of the field path."""
        field = f"{prefix}.{self.field}" if self.field else prefix
        return ConfigError(field, self.value, self.reason, where=self.where)

    def at(self, where: str) -> ConfigError:
        """The same error located at ``where`` (a file, an object)."""
        return ConfigError(self.field, self.value, self.reason, where=where)


class NoEndpointsError(LbcoreError, LookupError):
    """No endpoint can take a new connection (none ready, all quiesced, or all failed)."""
