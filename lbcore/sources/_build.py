"""Building a model from input fields, reporting every bad field in one run.

The models validate their fields and stop at the first bad one.  A user fixing a file
wants them all: `build` reports the bad field, sets it aside (its default, or a valid
placeholder for a required field) and asks the model again, until the model accepts
the rest.  Validation stays in one place, the model, in the model's own words.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Mapping, TypeVar

from ..errors import ConfigError
from ._problems import MISSING, Problems

__all__ = ["STAND_IN_IP", "build", "model_keys"]

T = TypeVar("T")

#: A valid address (TEST-NET-1, RFC 5737) that stands in where one is bad or missing.
STAND_IN_IP = "192.0.2.1"
# Valid stand-ins for a bad required field, so the model goes on checking the others.
_PLACEHOLDERS = {"name": "placeholder", "vip": STAND_IN_IP, "ip": STAND_IN_IP, "port": 1}
_TOP_FIELD = re.compile(r"[.\[]")


@functools.lru_cache(maxsize=None)  # a dump builds a model per endpoint: read the fields once
def model_keys(model: type) -> tuple[tuple[str, ...], dict[str, Any]]:
    """(every constructor keyword, the defaults of the optional ones) of a dataclass model.

    The defaults are shared: read them, never change them.
    """
    keys, defaults = [], {}
    for f in dataclasses.fields(model):
        if f.init:
            keys.append(f.name)
            if f.default is not dataclasses.MISSING:
                defaults[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                defaults[f.name] = f.default_factory()
    return tuple(keys), defaults


def build(model: type[T], fields: Mapping[str, Any], problems: Problems, where: str, *,
          what: str, within: str = "", paths: Mapping[str, str] | None = None) -> T | None:
    """``model(**fields)``, or None after reporting every bad or missing field.

    Problems are located at ``where``, their field put after ``within``; ``paths`` maps a
    model field to the input's own path for it (``port`` -> ``spec.ports[0].port``).
    At most one retry per field.

    >>> from lbcore import Endpoint
    >>> problems = Problems()
    >>> build(Endpoint, {"ip": "10.0.0.300", "weight": -1}, problems, "a.yaml", what="an endpoint")
    >>> problems.raise_if_any()
    Traceback (most recent call last):
    ...
    lbcore.sources._problems.SourceError: a.yaml: port: (missing) is required in an endpoint
    a.yaml: ip: '10.0.0.300' is not an IPv4 or IPv6 address
    a.yaml: weight: -1 is out of range; valid: 0..2147483647
    """
    keys, defaults = model_keys(model)
    fields = dict(fields)
    failed = False
    for key in keys:
        if key not in fields and key not in defaults:
            problems.report(where, f"{within}.{key}" if within else key, MISSING, f"is required in {what}")
            fields[key] = _PLACEHOLDERS[key]
            failed = True
    set_aside: set[str] = set()
    while True:
        try:
            result = model(**fields)
        except ConfigError as error:
            top = _TOP_FIELD.split(error.field, maxsplit=1)[0]  # "endpoints[1].ip" -> "endpoints"
            if paths and top in paths:
                error = ConfigError(paths[top] + error.field[len(top):], error.value, error.reason)
            problems.add(error, where, within)
            if top in set_aside or top not in fields:
                return None
            set_aside.add(top)
            fields[top] = defaults.get(top, _PLACEHOLDERS.get(top))
            continue
        return None if failed or set_aside else result
