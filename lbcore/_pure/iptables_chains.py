"""The chains of an iptables payload put together: each chain's text from its Service's
`ChainParts` and its endpoints, and the payload's lines with every chain in descending
name order.  The pure-Python twin of ``lbcore/_fast/iptables_chains.pyx``, which
writes the same payload straight into one string; `lbcore.render.iptables` makes the
parts and chooses the twin.

A Service's chain::

    :SVC - [0:0]
    -A SVC -m comment --comment "LABEL -> ADDRESS" -m set --match-set SVE src -j SVE   (affinity: each endpoint)
    -A SVC -m comment --comment "LABEL -> ADDRESS" JUMP SVE                            (each endpoint)

An endpoint's chain::

    :SVE - [0:0]
    -A SVE HAIRPIN IP -j LBCORE-MARK-MASQ               (not for a loopback endpoint)
    -A SVE ADD_SET SVE REFRESH                          (affinity)
    -A SVE DNAT ADDRESS
"""

from __future__ import annotations

import itertools
from typing import Iterator, NamedTuple, TypeVar

__all__ = ["ChainColumns", "ChainParts", "chain_name", "chain_texts", "join_payload"]

_T = TypeVar("_T")


class ChainParts(NamedTuple):
    """What the chains of one Service are made of besides its endpoints' chain names,
    ips and addresses: the text of a Service's chains is these, its endpoints' and the
    fixed words of the two chain shapes (see the module docstring)."""

    chain: str
    head: str  # "\n-A SVC -m comment --comment "LABEL -> ", before an endpoint's address
    jumps: tuple[str, ...]  # per endpoint, the end of its split rule, before its chain
    hairpin: str  # " COMMENT -s ", before the endpoint's ip
    dnat: str  # " COMMENT -m P -p P -j DNAT --to-destination ", before its address
    add_set: str | None  # " COMMENT -j SET --add-set ", None without affinity
    refresh: str | None  # " src --exist --timeout T"


class ChainColumns(NamedTuple):
    """Everything the chains of a payload are made of, as columns: ``parts[i]`` are the
    parts of a Service with ``counts[i]`` endpoints (None when it has none); its
    endpoints are the next ``counts[i]`` entries of ``endpoint_chains``, ``ips`` and
    ``addresses``; ``loopback`` holds the ips that get no hairpin rule; a hairpin rule
    jumps to ``mark_masq_chain``.  Chain names are distinct."""

    parts: list[ChainParts | None]
    counts: list[int]
    endpoint_chains: list[str]
    ips: list[str]
    addresses: list[str]
    loopback: frozenset[str]
    mark_masq_chain: str


def join_payload(head: list[str], first: list[int], columns: ChainColumns, tail: list[str]) -> str:
    """The lines ``head``, then a declaration of the chains at the ranks ``first``, then
    the text of every chain of ``columns`` in descending name order, then ``tail``,
    joined by newlines.  O(c log c) in chains.
    """
    texts = chain_texts(columns)
    # A text starts with ":NAME - [0:0]" and the space after a name sorts below every
    # character a chain name can hold, so the texts sort as their names do (also names
    # of different lengths: test_the_twins_order_any_names_alike).
    texts.sort(reverse=True)
    declared = [f":{chain_name(texts[rank])} - [0:0]" for rank in first]
    return "\n".join([*head, *declared, *texts, *tail])


def chain_texts(columns: ChainColumns) -> list[str]:
    """The text of every chain of ``columns``, in no particular order: each text is the
    chain's declaration and its rules, one line each.

    One f-string per rule or chain: the full payload is 420,000 lines for 10,000
    Services x 10 endpoints.  The endpoint chains of Services without affinity and
    without a loopback endpoint, the usual shape, are made in one comprehension over
    all their endpoints.  O(e).
    """
    parts, counts, endpoint_chains, ips, addresses, loopback, mark_masq_chain = columns
    texts: list[str] = []
    # Per Service, for its endpoint chains made in bulk below: hairpin None if not.
    hairpins: list[str | None] = []
    dnats: list[str | None] = []
    start = 0
    for part, count in zip(parts, counts):
        end = start + count
        if part is None or not count:
            hairpins.append(None)
            dnats.append(None)
            start = end
            continue
        chains, to = endpoint_chains[start:end], addresses[start:end]
        head = part.head
        rules = "".join([f"{head}{a}{jump}{c}" for a, jump, c in zip(to, part.jumps, chains)])
        if part.add_set is not None:
            # Sticky clients first (kube-proxy: every affinity rule before the split).
            rules = "".join([f'{head}{a}" -m set --match-set {c} src -j {c}'
                             for a, c in zip(to, chains)]) + rules
        texts.append(f":{part.chain} - [0:0]{rules}")
        dnats.append(part.dnat)
        if part.add_set is None and (not loopback or loopback.isdisjoint(ips[start:end])):
            hairpins.append(part.hairpin)
        else:
            hairpins.append(None)
            texts += [_endpoint_chain(part, c, ip, a, ip in loopback, mark_masq_chain)
                      for c, ip, a in zip(chains, ips[start:end], to)]
        start = end
    texts += [
        f":{c} - [0:0]\n-A {c}{hairpin}{ip} -j {mark_masq_chain}\n-A {c}{dnat}{a}"
        for c, ip, a, hairpin, dnat in zip(
            endpoint_chains, ips, addresses, _spread(hairpins, counts), _spread(dnats, counts)
        )
        if hairpin is not None
    ]
    return texts


def _endpoint_chain(
    part: ChainParts, chain: str, ip: str, address: str, loopback: bool, mark_masq_chain: str
) -> str:
    """An endpoint chain's text, whatever its shape (`chain_texts` makes the usual one
    itself, as this makes it)."""
    lines = [f":{chain} - [0:0]"]
    if not loopback:
        # Hairpin: an endpoint reaching its own Service must see the reply come back
        # through the node, so its source is masqueraded.  Not for a loopback endpoint:
        # its replies never leave the node, and MASQUERADE out of lo finds no address
        # to use and drops the packet (measured: the connection hangs).
        lines.append(f"-A {chain}{part.hairpin}{ip} -j {mark_masq_chain}")
    if part.add_set is not None:
        # Affinity: add the client to the endpoint's set, or refresh its timeout.
        lines.append(f"-A {chain}{part.add_set}{chain}{part.refresh}")
    lines.append(f"-A {chain}{part.dnat}{address}")
    return "\n".join(lines)


def chain_name(text: str) -> str:
    """The chain a text of `chain_texts` declares: ``:NAME - [0:0]...``."""
    return text[1 : text.index(" ")]


def _spread(per_service: list[_T], counts: list[int]) -> Iterator[_T]:
    """Each Service's value once per endpoint, in C."""
    return itertools.chain.from_iterable(map(itertools.repeat, per_service, counts))
