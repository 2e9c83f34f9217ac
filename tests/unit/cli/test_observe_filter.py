"""observe's filters: parsing the command line, and the predicate over flow events."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybridmesh.agent.datapath import FlowEvent
from hybridmesh.cli._observe_filter import (
    BadFlowRecord,
    FilterError,
    FlowFilter,
    PodMatch,
    build_filter,
    flow_from_json,
    parse_pod,
)


def event(**kw: Any) -> FlowEvent:
    base: dict[str, Any] = dict(time_ns=1, kind="open", src_ip="10.0.0.1", src_port=40000,
                                dst_ip="10.0.0.2", dst_port=5432, src_pod="shop/web-0",
                                dst_pod="data/db-0")  # fmt: skip
    return FlowEvent(**{**base, **kw})


def test_parse_pod_forms() -> None:
    assert parse_pod("shop/web-0") == PodMatch(name="web-0", namespace="shop")
    assert parse_pod("web-0") == PodMatch(name="web-0")
    assert parse_pod("web-0", "shop") == PodMatch(name="web-0", namespace="shop")
    assert parse_pod("10.0.0.7") == PodMatch(ip="10.0.0.7")


@pytest.mark.parametrize("bad", ["", "/web", "shop/", "a/b/c", "web 0", "  "])
def test_parse_pod_rejects(bad: str) -> None:
    with pytest.raises(FilterError, match="not \\[namespace/\\]name"):
        parse_pod(bad)


def test_a_pod_outside_the_namespace_filter_is_an_error() -> None:
    with pytest.raises(FilterError, match="not in --namespace data"):
        build_filter(pod="shop/web-0", namespace="data")


@pytest.mark.parametrize(
    ("kw", "message"),
    [({"port": 0}, "not in 1..65535"), ({"verdict": "maybe"}, "not one of FORWARDED, DROPPED"),
     ({"namespace": "a/b"}, "not a namespace name")],
)  # fmt: skip
def test_build_filter_rejects(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(FilterError, match=message):
        build_filter(**kw)


@pytest.mark.parametrize(
    ("kw", "shown"),
    [
        ({}, True),
        ({"pod": "web-0"}, True),
        ({"pod": "db-0"}, True),
        ({"pod": "shop/db-0"}, False),
        ({"pod": "10.0.0.2"}, True),
        ({"from_pod": "shop/web-0"}, True),
        ({"from_pod": "data/db-0"}, False),
        ({"to_pod": "db-0"}, True),
        ({"to_pod": "web-0"}, False),
        ({"namespace": "data"}, True),
        ({"namespace": "other"}, False),
        ({"pod": "web-0", "namespace": "data"}, False),  # web-0 taken in data: no such end
        ({"port": 5432}, True),
        ({"port": 40000}, True),
        ({"port": 80}, False),
        ({"verdict": "forwarded"}, True),
        ({"verdict": "DROPPED"}, False),
        ({"from_pod": "web-0", "to_pod": "db-0", "port": 5432}, True),
        ({"from_pod": "web-0", "to_pod": "db-0", "port": 80}, False),
    ],
)
def test_filter(kw: dict[str, Any], shown: bool) -> None:
    assert build_filter(**kw)(event()) is shown


def test_endpoints_without_pods_match_by_ip_only() -> None:
    bare = event(src_pod=None, dst_pod=None)
    assert not build_filter(pod="web-0")(bare)
    assert build_filter(from_pod="10.0.0.1")(bare)
    assert not build_filter(namespace="shop")(bare)


def test_empty() -> None:
    assert build_filter().empty
    assert not build_filter(port=1).empty


def test_json_round_trip() -> None:
    drop = event(kind="drop", verdict="DROPPED", policy="shop/deny", rtt_us=12, node="n1",
                 bytes_sent=5, bytes_received=6, retransmits=2)  # fmt: skip
    for original in (event(), drop, event(src_pod=None, dst_pod=None)):
        assert flow_from_json(original.to_json()) == original


@pytest.mark.parametrize(
    "doc",
    [None, [], {}, {**event().to_json(), "kind": "hello"}, {**event().to_json(), "time": "1"},
     {**event().to_json(), "time": True}, {**event().to_json(), "source": {"ip": "x"}},
     {**event().to_json(), "rttUs": "fast"}],
)  # fmt: skip
def test_json_rejects(doc: Any) -> None:
    with pytest.raises(BadFlowRecord):
        flow_from_json(doc)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner)))  # fmt: skip
def test_json_never_raises_anything_else(doc: Any) -> None:
    with contextlib.suppress(BadFlowRecord):
        flow_from_json(doc)


@given(st.text())
def test_parse_pod_never_raises_anything_else(text: str) -> None:
    try:
        match = parse_pod(text)
    except FilterError:
        return
    assert isinstance(match, PodMatch)
    assert FlowFilter(pod=match)(event()) in (True, False)
