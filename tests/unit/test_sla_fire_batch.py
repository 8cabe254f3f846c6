"""The scheduler's batch path (`clockwork.fire_batch`) decides, names and writes every firing exactly as `fire` and
`Firing.payload` do, on arbitrary pending rows, clocks, horizons and graces."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid5

from hypothesis import given, settings
from hypothesis import strategies as st

from services.sla.clockwork import _IDS, DUE_COLUMNS, DeadlineRow, _uuid5_text, fire, fire_batch
from shared.calendar import LOCAL_TZ
from shared.events.sla import SlaEventType, Stage

PROPERTY = settings(max_examples=400, deadline=None, database=None)
T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=30)
OFFSET = st.integers(-(10**7), 10**7).map(lambda us: timedelta(microseconds=us * 997))


def _record(row_id: int, row: DeadlineRow) -> tuple[object, ...]:
    by_name = {"id": row_id, **{name: getattr(row, name) for name in DUE_COLUMNS if name != "id"}}
    by_name["stage"] = row.stage.value
    return tuple(by_name[name] for name in DUE_COLUMNS)


@st.composite
def pending_rows(draw: st.DrawFn) -> DeadlineRow:
    due = T0 + draw(OFFSET)
    warn = due - draw(st.sampled_from([timedelta(0), timedelta(microseconds=1)]) | OFFSET.map(abs))
    warned_for = draw(st.none() | st.sampled_from([warn, warn - timedelta(seconds=1), warn + timedelta(seconds=1)]))
    tz = draw(st.sampled_from([UTC, LOCAL_TZ]))
    return DeadlineRow(
        draw(TEXT), draw(st.sampled_from(list(Stage))), draw(st.integers(1, 50)), draw(TEXT),
        T0 - timedelta(days=1), due.astimezone(tz), warn.astimezone(tz), warned_for=warned_for,
        set_event_id=draw(st.none() | st.uuids().map(str) | TEXT),
        breach_event_id=draw(st.none() | st.uuids().map(str)),
    )  # fmt: skip


@PROPERTY
@given(
    rows=st.lists(pending_rows(), max_size=8),
    now=OFFSET.map(lambda d: T0 + d),
    horizon=st.none() | OFFSET.map(lambda d: T0 + d),
    grace=st.sampled_from([timedelta(0), timedelta(seconds=30), timedelta(microseconds=7)]),
    late_after=st.sampled_from([timedelta(0), timedelta(seconds=60)]),
)
def test_fire_batch_is_fire_row_by_row(
    rows: list[DeadlineRow], now: datetime, horizon: datetime | None, grace: timedelta, late_after: timedelta
) -> None:
    batch = fire_batch(
        [_record(i, r) for i, r in enumerate(rows)], now, late_after=late_after, horizon=horizon, grace=grace
    )
    firings = [(i, fire(r, now, late_after=late_after, horizon=horizon, grace=grace)) for i, r in enumerate(rows)]
    fired = [(i, f) for i, f in firings if f is not None]
    assert batch.payloads == [f.payload() for _, f in fired]
    assert batch.keys == [f.row.complaint_id.encode() for _, f in fired]
    assert batch.breached_ids == [i for i, f in fired if f.kind is SlaEventType.BREACHED]
    assert batch.breach_event_ids == [str(f.event_id) for _, f in fired if f.kind is SlaEventType.BREACHED]
    assert batch.breach_event_ids == [f.row.breach_event_id for _, f in fired if f.kind is SlaEventType.BREACHED]
    assert batch.warned_ids == [i for i, f in fired if f.kind is SlaEventType.WARNING]
    meant = [f.target + (grace if f.kind is SlaEventType.BREACHED else timedelta(0)) for _, f in fired]
    assert [round(m, 6) for m in batch.meant] == [round(m.timestamp(), 6) for m in meant]
    assert sum(batch.labels.values()) == batch.fired == len(fired)
    for (kind, stage, department), n in batch.labels.items():
        assert n == sum(
            1 for _, f in fired if (f.kind, f.row.stage.value, f.row.department) == (kind, stage, department)
        )


def test_a_due_batch_fires_breaches_and_warnings_in_claim_order() -> None:
    """A hand-made case, so the property above cannot pass on two empty lists alone."""
    now = T0
    breach = DeadlineRow("c-1", Stage.RESOLVE, 2, "spj", T0, T0 - timedelta(minutes=5), T0 - timedelta(hours=1),
                         warned_for=T0 - timedelta(hours=1), set_event_id="e-1")  # fmt: skip
    warning = DeadlineRow("c-2", Stage.ACCEPT, 1, "scj", T0, T0 + timedelta(hours=1), T0 - timedelta(seconds=1))
    held = DeadlineRow("c-3", Stage.ACCEPT, 1, "scj", T0, T0 - timedelta(seconds=1), T0 - timedelta(hours=1))
    batch = fire_batch(
        [_record(7, breach), _record(8, warning), _record(9, held)],
        now,
        late_after=timedelta(seconds=60),
        horizon=T0 - timedelta(seconds=2),
    )
    assert batch.breached_ids == [7]
    assert batch.warned_ids == [8]
    assert [k.decode() for k in batch.keys] == ["c-1", "c-2"]
    assert b'"type":"breached"' in batch.payloads[0]
    assert b'"late":true' in batch.payloads[0]
    assert b'"type":"warning"' in batch.payloads[1]
    assert b'"late":false' in batch.payloads[1]
    assert batch.labels == {(SlaEventType.BREACHED, "resolve", "spj"): 1, (SlaEventType.WARNING, "accept", "scj"): 1}


@settings(max_examples=300, deadline=None, database=None)
@given(name=st.text(st.characters(codec="utf-8")))
def test_event_id_text_is_uuid5(name: str) -> None:
    assert _uuid5_text(name) == str(uuid5(_IDS, name))


def test_back_from_an_outage_late_means_later_than_late_after_past_due_plus_grace() -> None:
    """The fault suite's "sla down an hour" (docs/operations.md): sla away 60 s while deadlines fall due, the
    first round after its restart 20 s later, grace 2 s. `late` is "sent more than SLA_LATE_AFTER_S after its
    time", so against the default 60 s only what fell due in the outage's first 18 s is late; the scenario, an hour
    in a minute, scales SLA_LATE_AFTER_S down with it (1 s), and then every one of them is."""
    killed, grace = T0, timedelta(seconds=2)
    fired_at = killed + timedelta(seconds=80)  # back after 60 s, 20 s to start and catch up
    into = [0.5, 10, 17.5, 18.5, 30, 45, 59.5]  # seconds into the outage of each due
    rows = [
        DeadlineRow(f"c-{i}", Stage.ACCEPT, 1, "spj", T0 - timedelta(minutes=1), killed + timedelta(seconds=s),
                    killed - timedelta(seconds=4), warned_for=killed - timedelta(seconds=4), set_event_id=f"s-{i}")
        for i, s in enumerate(into)
    ]  # fmt: skip
    records = [_record(i, r) for i, r in enumerate(rows)]

    def late(late_after_s: float) -> list[bool]:
        batch = fire_batch(
            records, fired_at, late_after=timedelta(seconds=late_after_s), horizon=fired_at - grace, grace=grace
        )
        assert batch.breached_ids == list(range(len(rows)))  # every one fires, once
        return [b'"late":true' in p for p in batch.payloads]

    assert late(60) == [True, True, True, False, False, False, False]
    assert late(1) == [True] * len(rows)
