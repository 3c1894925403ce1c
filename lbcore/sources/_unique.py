"""Services that come from several objects and files must not collide.

Two services with one name would share stats, chains and reload identity; two on one
(vip, port, protocol) would fight over the same virtual service.  The second of each
pair is reported, naming the first.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

from ..models import Service
from ._problems import Problems

__all__ = ["Located", "check_unique"]


class Located(NamedTuple):
    """A Service and where it came from, for problems that involve two of them."""

    service: Service
    #: ``file: object`` as problem lines name it.
    where: str
    #: The fields that hold its name and its port, in the source's own words.
    name_field: str
    port_field: str


def check_unique(located: Iterable[Located], problems: Problems) -> list[Located]:
    """Report every service whose name or (vip, port, protocol) an earlier one has.

    Returns the others, in order: what a live source serves while it reports the rest.
    O(n).

    >>> from lbcore import Service
    >>> a = Located(Service("a", "10.0.0.1", 80), "a.yaml: services[0]", "name", "port")
    >>> b = Located(Service("b", "10.0.0.1", 80), "b.yaml: services[0]", "name", "port")
    >>> problems = Problems()
    >>> [item.service.name for item in check_unique([a, b], problems)]
    ['a']
    >>> problems.raise_if_any()
    Traceback (most recent call last):
    ...
    lbcore.sources._problems.SourceError: b.yaml: services[0]: port: '10.0.0.1:80/tcp' is already taken by service 'a' (a.yaml: services[0])
    """
    by_name: dict[str, Located] = {}
    by_address: dict[tuple[str, int, str], Located] = {}
    unique = []
    for item in located:
        service = item.service
        first_named = by_name.setdefault(service.name, item)
        if first_named is not item:
            problems.report(item.where, item.name_field, service.name, f"is already the name of a service ({first_named.where})")
        first = by_address.setdefault((service.vip, service.port, service.protocol), item)
        if first is not item:
            problems.report(
                item.where, item.port_field, f"{service.address}/{service.protocol}",
                f"is already taken by service {first.service.name!r} ({first.where})",
            )
        if first is item and first_named is item:
            unique.append(item)
    return unique
