"""The pipeline bench's per-hop breakdown of raw → assigned: where the time went, from the send's wall clock and the
Kafka timestamps of `complaints.received` and `complaint.assigned`."""

from __future__ import annotations

from shared.devtools.bench_pipeline import HOPS, hop_breakdown


def test_each_hop_is_the_gap_between_its_two_stamps() -> None:
    hops = hop_breakdown(
        sent_wall={"a": 100.000},
        received_ms={"a": 100_040},
        assigned_ms={"a": 100_100},
        read_wall={"a": 100.125},
    )
    assert list(hops) == list(HOPS)
    assert hops["intake"]["p50"] == 40.0
    assert hops["routing"]["p50"] == 60.0
    assert hops["read_back"]["p50"] == 25.0
    assert {h: v["n"] for h, v in hops.items()} == {"intake": 1, "routing": 1, "read_back": 1}


def test_a_complaint_not_seen_at_both_ends_of_a_hop_is_left_out_of_that_hop() -> None:
    hops = hop_breakdown(
        sent_wall={"a": 10.0, "b": 10.0},
        received_ms={"a": 10_010, "b": 10_500},
        assigned_ms={"a": 10_020},
        read_wall={"a": 10.030},
    )
    assert hops["intake"]["n"] == 2
    assert hops["intake"]["p99"] == 500.0
    assert hops["routing"]["n"] == 1
    assert hops["read_back"]["n"] == 1


def test_a_stamp_a_millisecond_early_counts_as_no_time_and_nothing_seen_is_no_figure() -> None:
    hops = hop_breakdown(sent_wall={"a": 5.0006}, received_ms={"a": 5_000}, assigned_ms={}, read_wall={})
    assert hops["intake"]["p50"] == 0.0
    assert hops["routing"] == {"p50": None, "p95": None, "p99": None, "n": 0}
