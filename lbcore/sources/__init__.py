"""Inputs: files in lbcore's own format or Kubernetes dumps, read into Services.

`load_files` reads any mix of files, each JSON or YAML, and decides per document:
a mapping with ``kind``/``apiVersion`` is a Kubernetes object (`kubernetes`), one with
``services`` is lbcore's own format (`native`).  Kubernetes objects join across files
(Services in one, EndpointSlices in another).  Every problem in every file is collected
and raised at once as `SourceError`, one line each naming the file, the object and the
field; nothing is returned unless everything loaded.

Importing this package loads PyYAML; ``import lbcore`` does not import this package.
"""

from __future__ import annotations

from typing import Iterable

from ..models import Service
from . import kubernetes, native
from ._problems import Problems, SourceError
from ._unique import Located, check_unique
from .documents import parse, read

__all__ = ["SourceError", "load_files", "load_text", "parse", "read", "kubernetes", "native"]


def _load(sources: Iterable[tuple[str, list[object]]], problems: Problems, notes: list[str] | None) -> list[Service]:
    """Services from (source, documents) pairs; every problem goes to ``problems``."""
    located = locate(sources, problems, notes if notes is not None else [])
    check_unique(located, problems)
    problems.raise_if_any()
    return [item.service for item in located]


def locate(sources: Iterable[tuple[str, list[object]]], problems: Problems, notes: list[str]) -> list[Located]:
    """The good services of (source, documents) pairs, each with where it came from.

    Bad entries are left out and reported to ``problems``; names and addresses are not
    yet checked for clashes (`check_unique`).  A watched directory re-reads its files
    with this, serving the good entries while it reports the others.
    """
    located: list[Located] = []
    kube_documents = []
    for source, documents in sources:
        if not documents:
            problems.report(source, "file", source, "holds no document; expected lbcore's 'services:' or Kubernetes objects")
        for number, document in enumerate(documents, 1):
            where = f"{source}: document {number}" if len(documents) > 1 else source
            if kubernetes.is_kubernetes(document):
                kube_documents.append((where, document))
            elif isinstance(document, dict) and "services" in document:
                located.extend(native.services_from(document, where, problems))
            else:
                shown = sorted(map(str, document)) if isinstance(document, dict) else document
                problems.report(where, "document", shown,
                                "is neither lbcore's format (a 'services:' list) nor a Kubernetes object (apiVersion, kind)")
    located.extend(kubernetes.services_from(kube_documents, problems, notes))
    return located


def load_files(paths: Iterable[str], *, notes: list[str] | None = None) -> list[Service]:
    """The Services described by the files at ``paths``, in lbcore's format or Kubernetes'.

    Services of lbcore's format come first, in file order, then those of Kubernetes
    objects, in object order.  Raises `SourceError` carrying every problem of every file
    (syntax, kinds, fields, values, duplicates); if ``notes`` is a list, one line is
    appended per object skipped on purpose (headless Services, ExternalName, ...).
    O(total size + endpoints · log endpoints).

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "services.yaml")
    >>> with open(path, "w") as file:
    ...     _ = file.write("services:\\n- {name: web, vip: 10.96.0.10, port: 80}\\n")
    >>> [service.address for service in load_files([path])]
    ['10.96.0.10:80']
    """
    problems = Problems()
    parsed = []
    for path in paths:
        try:
            parsed.append((path, read(path)))
        except SourceError as error:
            problems.extend(error)
    return _load(parsed, problems, notes)


def load_text(text: str, source: str = "<input>", *, notes: list[str] | None = None) -> list[Service]:
    """The Services described by ``text`` (JSON or YAML, either format); see `load_files`.

    >>> [s.name for s in load_text('{"services": [{"name": "dns", "vip": "10.96.0.10", "port": 53, "protocol": "udp"}]}')]
    ['dns']
    """
    return _load([(source, parse(text, source))], Problems(), notes)
