"""Files to documents: JSON or YAML (one or many documents), safely, with line numbers.

A file whose first character is ``{`` or ``[`` is JSON (what ``kubectl -o json``
prints), anything else YAML (``kubectl -o yaml``, multi-document manifests, lbcore's
own format).  YAML is loaded with the safe loader only (libyaml's when PyYAML was built
with it), so a file can never construct Python objects.  A key given twice in one
mapping is an error in both formats: YAML and JSON parsers keep the last one silently,
which would let a typo or a bad merge win unnoticed.
"""

from __future__ import annotations

import json

import yaml

from ..errors import ConfigError
from ._problems import Shown, SourceError

__all__ = ["parse", "read"]

_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):  # type: ignore[misc, valid-type]
    """The safe loader, refusing a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_lines: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = first_lines.get(key)
            except TypeError:  # an unhashable key: the base constructor refuses it
                break
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (first on line {first + 1})",
                    key_node.start_mark,
                )
            first_lines[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _line(text: str, number: int) -> object:
    """Line ``number`` (1-based) as a problem line shows it."""
    lines = text.splitlines()
    if 0 < number <= len(lines) and lines[number - 1].strip():
        return lines[number - 1].strip()
    return Shown("(end of file)") if number > len(lines) else Shown("(blank line)")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):  # rare: find the culprit only then
        keys = [key for key, _ in pairs]
        raise ValueError(next(key for key in keys if keys.count(key) > 1))
    return result


def _parse_json(text: str, source: str) -> list[object]:
    try:
        return [json.loads(text, object_pairs_hook=_unique_keys)]
    except json.JSONDecodeError as error:
        problem = ConfigError(
            f"line {error.lineno}", _line(text, error.lineno),
            f"is not valid JSON: {error.msg} (column {error.colno})",
        )
    except ValueError as error:  # from _unique_keys; json gives no position for it
        problem = ConfigError("key", error.args[0], "is given twice in one JSON object")
    raise SourceError([problem.at(source)])


def _parse_yaml(text: str, source: str) -> list[object]:
    try:
        return [document for document in yaml.load_all(text, Loader=_StrictLoader) if document is not None]
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem_text = error.problem or error.context or "unreadable"
        line = mark.line + 1 if mark is not None else 0
        column = f" (column {mark.column + 1})" if mark is not None else ""
        problem = ConfigError(f"line {line}", _line(text, line), f"is not valid YAML: {problem_text}{column}")
    except yaml.reader.ReaderError as error:  # a control character, before any parsing
        character = error.character if isinstance(error.character, str) else chr(error.character)
        problem = ConfigError(
            "character", character, f"at offset {error.position} is not allowed in YAML ({error.reason})"
        )
    raise SourceError([problem.at(source)])


def parse(text: str, source: str = "<input>") -> list[object]:
    """The documents in ``text`` (empty YAML documents left out), JSON or YAML.

    A syntax error raises `SourceError` naming ``source`` and the line.  O(len(text)).

    >>> parse('{"services": []}')
    [{'services': []}]
    >>> parse("a: 1\\n---\\nb: 2\\n")
    [{'a': 1}, {'b': 2}]
    >>> parse("a: 1\\na: 2\\n", "x.yaml")
    Traceback (most recent call last):
    ...
    lbcore.sources._problems.SourceError: x.yaml: line 2: 'a: 2' is not valid YAML: key 'a' is given twice (first on line 1) (column 1)
    """
    if text.lstrip()[:1] in ("{", "["):
        return _parse_json(text, source)
    return _parse_yaml(text, source)


def read(path: str) -> list[object]:
    """The documents of the file at ``path``; see `parse`.

    An unreadable or non-UTF-8 file raises `SourceError` naming it.
    """
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except UnicodeDecodeError as error:
        raise SourceError([
            ConfigError("bytes", error.object[error.start:error.end], f"at offset {error.start} are not UTF-8").at(path)
        ]) from None
    except OSError as error:
        raise SourceError([ConfigError("file", path, f"cannot be read: {error.strerror}").at(path)]) from None
    return parse(text, path)
