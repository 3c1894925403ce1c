"""The helpers every balancer's update runs: which endpoints are pickable, which failure
marks survive.  They are written for speed, so they are held to their definitions."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lbcore import Endpoint
from lbcore._shared.endpoint_state import endpoint_key, pickable_indices, surviving_failures
from lbcore.models import check_endpoints, usable_endpoints

endpoint_lists = st.lists(
    st.builds(
        Endpoint,
        ip=st.sampled_from([f"10.0.0.{i}" for i in range(1, 9)]),
        port=st.sampled_from([80, 443]),
        weight=st.sampled_from([0, 1, 3]),
        ready=st.booleans(),
        serving=st.sampled_from([None, True, False]),
        terminating=st.booleans(),
    ),
    max_size=10,
    unique_by=lambda e: (e.ip, e.port),
)


@settings(max_examples=500, deadline=None)
@given(endpoints=endpoint_lists, data=st.data())
def test_pickable_indices_is_usable_by_condition_weighted_and_not_failed(endpoints, data):
    endpoints = check_endpoints(endpoints)
    failed = frozenset(data.draw(st.sets(st.sampled_from([endpoint_key(e) for e in endpoints]))
                                 if endpoints else st.just(set())))
    usable = {endpoint_key(e) for e in usable_endpoints(endpoints)}
    expected = [i for i, e in enumerate(endpoints)
                if e.weight > 0 and endpoint_key(e) in usable and endpoint_key(e) not in failed]
    assert pickable_indices(endpoints, failed) == expected


@settings(max_examples=200, deadline=None)
@given(old=endpoint_lists, new=endpoint_lists)
def test_surviving_failures_are_the_marks_of_endpoints_still_listed(old, new):
    failed = frozenset(endpoint_key(e) for e in old)
    assert surviving_failures(failed, new) == failed & {endpoint_key(e) for e in new}
    assert surviving_failures(frozenset(), new) == frozenset()
