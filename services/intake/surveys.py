"""Pure reading of a satisfaction-survey response (满意度问卷, contract 10.2): the `survey.responded` message for
`surveys.responses`, and a complaint for each category scored 1 or 2 when the enterprise left a comment (channel
`survey`, kind `complaint`, source id `<responseId>#<category>`).

`normalize_survey_response(raw, now)` never raises: the response with its complaints, or a `Rejection`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import NAMESPACE_URL, uuid5

from services.intake.normalize import (
    Rejection,
    _build,
    _category_code,
    _enterprise,
    _Flags,
    _Invalid,
    _json_type,
    _object,
    _offset_time,
    _received_at,
    _region,
    _required_text,
    _source_id,
    _text,
    read_guarded,
)
from shared.domain import Category, Channel, Kind, Urgency, category_from_label
from shared.events import ComplaintReceived, SurveyResponded

LOW_SCORES: Final = (1, 2)
RESPONSE_ID_MAX: Final = 40  # `#<category>` is added for a complaint's source id, 64 characters at most


@dataclass(frozen=True)
class SurveyIntake:
    """A response and the complaints it opens (none when no score is low or there is no comment)."""

    response: SurveyResponded
    complaints: tuple[ComplaintReceived, ...]


def complaint_source_id(response_id: str, category: Category) -> str:
    return f"{response_id}#{category.value}"


def normalize_survey_response(raw: bytes, now: datetime) -> SurveyIntake | Rejection:
    return read_guarded(raw, now, read_survey, "responseId", "a response")


def read_survey(body: Mapping[str, Any], now: datetime) -> SurveyIntake:
    flags = _Flags()
    response_id = _source_id(body, "responseId", flags)
    if len(response_id) > RESPONSE_ID_MAX:
        raise _Invalid("invalid_field", f"field responseId must be at most {RESPONSE_ID_MAX} characters")
    answered_at = _received_at(_offset_time(_required_text(body, "answeredAt", flags), "answeredAt"), now, flags)
    company = _object(body, "enterprise")
    enterprise = None
    if company is not None:
        enterprise = _enterprise(
            _text(company, "name", flags, path="enterprise."),
            _text(company, "creditCode", flags, path="enterprise."),
            flags,
        )
    region_code = _region(_text(body, "region", flags), flags)
    scores = _scores(body)
    comment = _text(body, "comment", flags)
    complaints: list[ComplaintReceived] = []
    if comment is not None:
        for category, score in scores.items():
            if score in LOW_SCORES:
                complaints.append(
                    _build(
                        Channel.SURVEY,
                        complaint_source_id(response_id, category),
                        answered_at,
                        now,
                        kind=Kind.COMPLAINT,
                        category=category,
                        title=None,
                        content=comment,
                        urgency=Urgency.NORMAL,
                        region_code=region_code,
                        enterprise=enterprise,
                        contact=None,
                        anonymous=False,
                        flags=_Flags(list(flags.items)),
                    )
                )
    response = SurveyResponded(
        event_id=uuid5(NAMESPACE_URL, f"complaints:survey:{response_id}"),
        occurred_at=now,
        response_id=response_id,
        answered_at=answered_at,
        enterprise=enterprise,
        region_code=region_code,
        scores=scores,
        comment=comment,
        complaint_ids=tuple(c.complaint_id for c in complaints),
        quality_flags=tuple(flags.items),
    )
    return SurveyIntake(response, tuple(complaints))


def _scores(body: Mapping[str, Any]) -> dict[Category, int]:
    """`{"government_services": 1-5, ...}`: a category code of 3.1 (or its Chinese name) to an integer 1-5."""
    value = body.get("scores")
    if value is None or value == {}:
        raise _Invalid("missing_field", "required field scores is missing or empty")
    if not isinstance(value, dict):
        raise _Invalid("invalid_field", f"field scores must be an object, got {_json_type(value)}")
    scores: dict[Category, int] = {}
    for key, score in value.items():
        category = _category_code(key) or category_from_label(key)
        if category is None:
            raise _Invalid("invalid_field", f"field scores.{key[:30]} is not a category of contract 3.1")
        if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
            raise _Invalid("invalid_field", f"field scores.{key[:30]} must be an integer 1-5, got {score!r:.20}")
        scores[category] = score
    return scores
