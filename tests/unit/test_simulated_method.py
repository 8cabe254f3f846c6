"""The simulator's traffic of the rest of the method (portal, visits, surveys) and its planted series: seeded, each
message one the real normalizers take, and a burst that the early-warning rule must flag."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

from scipy.stats import poisson

from services.intake.normalize import normalize
from services.intake.portal import FieldError, read_submission
from services.intake.surveys import SurveyIntake, normalize_survey_response
from services.intake.visits import VisitRecord, normalize_visit_record
from shared.devtools.simulate import PORTAL_WINDOW_S, PortalPacer, warning_received_at
from shared.devtools.traffic import PLANTED_BURST, PLANTED_FROM_ONE, TrafficGenerator, plant
from shared.domain import Channel
from shared.events import ComplaintReceived
from shared.settings import Settings

NOW = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)  # a Thursday, 11:00 local


def received(raw: bytes) -> ComplaintReceived:
    event = normalize(Channel.HOTLINE, raw, NOW)
    assert isinstance(event, ComplaintReceived), event
    return event


def test_the_same_seed_gives_the_same_traffic_and_no_method_share_keeps_old_seeds() -> None:
    a, b = TrafficGenerator(seed=5, method=0.2), TrafficGenerator(seed=5, method=0.2)
    assert [a.next(NOW).body for _ in range(300)] == [b.next(NOW).body for _ in range(300)]
    old, new = TrafficGenerator(seed=5), TrafficGenerator(seed=5, method=0.0)
    assert [old.next(NOW).body for _ in range(100)] == [new.next(NOW).body for _ in range(100)]


def test_the_method_share_and_its_proportions() -> None:
    gen = TrafficGenerator(seed=3, method=0.15, duplicates=0.0, bad=0.0)
    counts = Counter(gen.next(NOW).channel for _ in range(4000))
    method = counts[Channel.PORTAL] + counts[Channel.VISIT] + counts[Channel.SURVEY]
    assert 0.12 < method / 4000 < 0.18
    assert counts[Channel.PORTAL] > counts[Channel.VISIT] > 0
    assert counts[Channel.SURVEY] > counts[Channel.VISIT]


def test_every_method_message_is_taken_by_the_real_normalizers() -> None:
    gen = TrafficGenerator(seed=9, method=1.0)
    low_with_comment = 0
    for _ in range(300):
        msg = gen.next(NOW)
        assert msg.http is not None
        if msg.channel is Channel.PORTAL:
            assert isinstance(normalize(Channel.PORTAL, msg.body, NOW), ComplaintReceived)  # intake.portal's
            form = read_submission(json.loads(msg.http.body))  # the public endpoint's
            assert not isinstance(form, FieldError), form
            assert msg.http.public
            assert msg.http.path == "/v1/portal/submissions"
        elif msg.channel is Channel.VISIT:
            visit = normalize_visit_record(msg.body, NOW)
            assert isinstance(visit, VisitRecord), visit
        else:
            body = json.loads(msg.body)
            assert isinstance(normalize_survey_response(msg.body, NOW), SurveyIntake)
            low_with_comment += any(v <= 2 for v in body["scores"].values()) and "comment" in body
    assert low_with_comment > 5


def test_the_planted_burst_is_a_rising_series_and_an_enterprise_repeat() -> None:
    gen = TrafficGenerator(seed=1)
    series = plant(gen, NOW)
    burst = [received(m.body) for m in series.burst]
    assert len(burst) == PLANTED_BURST
    assert {(c.region_code, c.category.value) for c in burst} == {("150524", "financing")}
    assert Counter(c.enterprise.name for c in burst if c.enterprise)[series.enterprise] == PLANTED_FROM_ONE >= 3
    assert all(NOW - timedelta(minutes=1) <= c.received_at <= NOW for c in burst)
    assert poisson.sf(PLANTED_BURST - 1, 0.5) < 0.01  # the rule's floor, no history: the burst is enough alone
    history = [received(m.body) for m in series.history]
    assert sorted((NOW - c.received_at).days // 7 for c in history) == [2, 3]
    assert plant(TrafficGenerator(seed=1), NOW) == series  # deterministic under a seed


def test_the_warning_case_is_past_its_warning_and_before_its_due() -> None:
    at = warning_received_at(NOW, Settings())
    assert at is not None
    assert at < NOW


def test_the_portal_pacer_keeps_under_the_limit_in_any_window() -> None:
    pacer = PortalPacer(8)
    sent = [t for t in range(600) if pacer.take(float(t) / 2)]  # one try every half second
    times = [t / 2 for t in sent]
    assert all(sum(1 for u in times if t <= u < t + PORTAL_WINDOW_S) <= 8 for t in times)
    assert len(times) >= 8 * 4
