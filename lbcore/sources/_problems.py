"""Collecting every problem of an input before refusing it.

A user fixing a file wants the whole list at once, not one error per run: readers add
each problem to a `Problems` collector, located at the file and object it belongs to,
and `SourceError` carries them all.  Each problem is a `ConfigError`, so it prints as
one line: ``file: object: field: value reason``.
"""

from __future__ import annotations

import difflib
from typing import Iterable, Sequence

from ..errors import ConfigError, LbcoreError

__all__ = ["MISSING", "Shown", "SourceError", "Problems", "type_name", "unknown_key"]


class Shown:
    """A value that a problem line shows as ``text``, unquoted: ``(missing)``."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


#: The value of a required field that is absent.
MISSING = Shown("(missing)")


class SourceError(LbcoreError, ValueError):
    """Every problem found in the inputs; nothing was loaded.

    ``problems`` holds one located `ConfigError` per problem; ``str()`` gives one line
    each.

    >>> error = SourceError([ConfigError("port", 0, "is out of range").at("a.yaml: services[0]")])
    >>> print(error)
    a.yaml: services[0]: port: 0 is out of range
    """

    def __init__(self, problems: Iterable[ConfigError]):
        self.problems = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


class Problems:
    """A collector of located problems, each reported once, grouped by object.

    The same bad value can surface more than once (a bad scheduler annotation reaches
    every port of a Service): identical lines are kept once.  Problems come out grouped
    by object, objects in the order `locate` met them (else of their first problem):
    a Service is checked again when its endpoints are joined, after every slice.

    >>> problems = Problems()
    >>> problems.add(ConfigError("port", 0, "is out of range"), "a.yaml: services[0]", "endpoints[1]")
    >>> problems.report("a.yaml: services[0]", "name", MISSING, "is required")
    >>> problems.raise_if_any()
    Traceback (most recent call last):
    ...
    lbcore.sources._problems.SourceError: a.yaml: services[0]: endpoints[1].port: 0 is out of range
    a.yaml: services[0]: name: (missing) is required
    """

    def __init__(self) -> None:
        self._errors: dict[str, ConfigError] = {}
        #: where -> its rank among the objects with a problem, in order of first problem
        self._objects: dict[str | None, int] = {}

    def locate(self, where: str) -> None:
        """Note that the object at ``where`` comes next in the input."""
        self._objects.setdefault(where, len(self._objects))

    def add(self, error: ConfigError, where: str, within: str = "") -> None:
        """Record ``error`` located at ``where`` with ``within`` put before its field."""
        if within:
            error = error.within(within)
        self._keep(error.at(where))

    def _keep(self, error: ConfigError) -> None:
        self._objects.setdefault(error.where, len(self._objects))
        self._errors.setdefault(str(error), error)

    def report(self, where: str, field: str, value: object, reason: str) -> None:
        """Record a new problem: ``field`` at ``where`` holds ``value``, which ``reason``."""
        self.add(ConfigError(field, value, reason), where)

    def extend(self, error: SourceError) -> None:
        """Record every problem an inner reader raised."""
        for problem in error.problems:
            self._keep(problem)

    def raise_if_any(self) -> None:
        """Raise `SourceError` with every recorded problem, if there is one."""
        if self._errors:
            # sorted() is stable: within one object, the order found.
            raise SourceError(sorted(self._errors.values(), key=lambda error: self._objects[error.where]))


_TYPE_NAMES = {dict: "a mapping", list: "a list", str: "a string", int: "an integer", bool: "true or false"}


def type_name(expected: type) -> str:
    """How a problem line names the type a field must have."""
    return _TYPE_NAMES[expected]


def unknown_key(key: str, allowed: Sequence[str], reason: str) -> str:
    """``reason`` for an unknown ``key``, then the closest allowed one and all of them.

    >>> unknown_key("wieght", ("ip", "weight"), "is not a field of an endpoint")
    "is not a field of an endpoint; did you mean 'weight'? valid: ip, weight"
    """
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{reason}; {hint}valid: {', '.join(allowed)}"
