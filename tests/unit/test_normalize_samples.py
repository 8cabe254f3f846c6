"""Every sample vector of tests/samples normalizes to its listed fields; every bad one is refused, naming its problem.

Visits and survey responses become several complaints (or none): their `expect` is a list, one entry per complaint."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.intake.normalize import Rejection, normalize
from services.intake.surveys import normalize_survey_response
from services.intake.visits import normalize_visit_record
from shared.domain import Channel
from shared.events import ComplaintReceived

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _lines(*names: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for name in names:
        path = SAMPLES / name
        assert path.exists(), f"samples missing: {path}"
        found += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return found


GOOD = [(c, s) for c in Channel for s in _lines(f"{c.value}.jsonl", f"{c.value}.extra.jsonl")]
BAD = [(c, s) for c in Channel for s in _lines(f"{c.value}.bad.jsonl", f"{c.value}.extra.bad.jsonl")]


def _complaints(channel: Channel, raw: bytes) -> list[ComplaintReceived] | Rejection:
    """What the production entry point of the channel makes of a raw body."""
    if channel is Channel.VISIT:
        visit = normalize_visit_record(raw, NOW)
        return visit if isinstance(visit, Rejection) else list(visit.complaints)
    if channel is Channel.SURVEY:
        survey = normalize_survey_response(raw, NOW)
        return survey if isinstance(survey, Rejection) else list(survey.complaints)
    event = normalize(channel, raw, NOW)
    return event if isinstance(event, Rejection) else [event]


def _source_texts(channel: Channel, raw: dict[str, Any]) -> list[tuple[str | None, str]]:
    """The title and content of each complaint as the source gave them: intake must pass both through unchanged."""
    if channel is Channel.VISIT:
        return [(p.get("title") or None, p["content"]) for p in raw["problems"]]
    if channel is Channel.SURVEY:
        return [(None, raw["comment"])] * sum(1 for v in raw["scores"].values() if v <= 2) if raw.get("comment") else []
    return [_source_text(channel, raw)]


def _source_text(channel: Channel, raw: dict[str, Any]) -> tuple[str | None, str]:
    if channel is Channel.PORTAL:
        return raw.get("title") or None, raw["content"]
    if channel is Channel.HOTLINE:
        return raw.get("sqbt") or None, raw["sqnr"]
    if channel is Channel.COMPLAINT_LINE:
        return raw.get("subject") or None, raw["description"]
    issue = raw["issue"]
    return issue.get("summary") or None, issue.get("detail") or issue["summary"]


def test_there_are_samples_of_every_channel() -> None:
    assert {c for c, _ in GOOD} == set(Channel)
    assert {c for c, _ in BAD} == set(Channel)


def _sample_id(channel: Channel, sample: dict[str, Any]) -> str:
    expect = sample["expect"]
    if isinstance(expect, dict):
        return str(expect["complaint_id"])
    return f"{channel.value}:{len(expect)}:" + ",".join(e["complaint_id"] for e in expect)


@pytest.mark.parametrize(("channel", "sample"), GOOD, ids=[_sample_id(c, s) for c, s in GOOD])
def test_sample_normalizes_to_its_expected_fields(channel: Channel, sample: dict[str, Any]) -> None:
    raw = json.dumps(sample["raw"], ensure_ascii=False).encode("utf-8")
    events = _complaints(channel, raw)
    assert not isinstance(events, Rejection), events
    expects = sample["expect"] if isinstance(sample["expect"], list) else [sample["expect"]]
    assert len(events) == len(expects)
    texts = _source_texts(channel, sample["raw"])
    assert len(texts) == len(events)
    for event, expect, (title, content) in zip(events, expects, texts, strict=True):
        wire = json.loads(event.to_json_bytes())
        for field, expected in expect.items():
            assert wire[field] == expected, field
        # Chinese text comes out exactly as it went in; a title the source left out is derived from the content.
        assert event.content == content
        if title is not None:
            assert event.title == title
        else:
            assert event.title
            assert content.startswith(event.title)
        assert wire["channel"] == channel.value
        assert wire["occurred_at"].endswith("Z")
        assert wire["received_at"].endswith("Z")
        assert wire["schema_version"] == 1
        assert wire["causation_id"] is None


@pytest.mark.parametrize(("channel", "sample"), BAD, ids=[s["why"] for _, s in BAD])
def test_bad_sample_is_refused_naming_its_problem(channel: Channel, sample: dict[str, Any]) -> None:
    raw = json.dumps(sample["raw"], ensure_ascii=False).encode("utf-8")
    result = _complaints(channel, raw)
    assert isinstance(result, Rejection)
    assert result.error_type in {"missing_field", "invalid_field"}
    # "missing sqnr" / "unparseable ldsj" / "createdAt not epoch ms" / "observedAt without offset": the field is named.
    field = next(
        word
        for word in sample["why"].split()
        if word not in {"missing", "unparseable", "not", "epoch", "ms", "without", "offset"}
    )
    assert field in result.reason


def test_same_work_order_gives_the_same_event_id_and_complaint_id() -> None:
    channel, sample = GOOD[0]
    raw = json.dumps(sample["raw"], ensure_ascii=False).encode()
    first = normalize(channel, raw, NOW)
    later = normalize(channel, raw, datetime(2026, 12, 30, tzinfo=UTC))
    assert isinstance(first, ComplaintReceived)
    assert isinstance(later, ComplaintReceived)
    assert (first.complaint_id, first.event_id) == (later.complaint_id, later.event_id)
