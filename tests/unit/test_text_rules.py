"""The text rules (shared/text.py) and the edges that apply them: department actions and callback results (free
text sanitized and flagged, identifiers refused) and intake's source ids (refused, never silently changed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.intake.normalize import Rejection, normalize
from shared.domain import Channel
from shared.events import CallbackResult, DepartmentAction
from shared.text import TEXT_SANITIZED, identifier_problem, loads_json, sanitize_fields, sanitize_text

NOW = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
BAD_CHARS = ["\x00", "\x01", "\x08", "\x0b", "\x1f", "\x7f", "\ud800", "\udfff", "\udc00"]
# Text the strategies draw from: ordinary characters, Chinese, and everything PostgreSQL or a consumer cannot take.
texts = st.text(alphabet=st.one_of(st.characters(codec=None), st.sampled_from([*BAD_CHARS, "\t", "\n", "\r", "办"])))


def _refused_in_text(char: str) -> bool:
    """C0 controls but tab, newline and carriage return; DEL; lone surrogates."""
    code = ord(char)
    return (code < 0x20 and char not in "\t\n\r") or code == 0x7F or 0xD800 <= code <= 0xDFFF


def _storable(text: str) -> bool:
    """What PostgreSQL takes in `text` and `jsonb`: encodable as UTF-8 and no NUL."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


@given(texts)
def test_sanitized_text_is_storable_and_flagged_exactly_when_changed(value: str) -> None:
    cleaned, changed = sanitize_text(value)
    assert _storable(cleaned)
    assert changed == (cleaned != value)
    assert not any(_refused_in_text(c) for c in cleaned)
    if not any(_refused_in_text(c) for c in value):
        assert cleaned == value
        assert not changed


@given(texts)
def test_sanitizing_twice_changes_nothing_more(value: str) -> None:
    once, _ = sanitize_text(value)
    assert sanitize_text(once) == (once, False)


def test_ordinary_text_is_kept_whole() -> None:
    text = "已办结。\n联系电话 13912345678\t<script>x</script>"
    assert sanitize_text(text) == (text, False)


@given(texts)
def test_identifier_rule_refuses_every_control_character_and_surrogate(value: str) -> None:
    bad = any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF for c in value)
    assert (identifier_problem(value) is not None) == bad


@pytest.mark.parametrize("char", BAD_CHARS)
def test_identifier_problem_says_what_and_where(char: str) -> None:
    problem = identifier_problem(f"A{char}")
    assert problem is not None
    assert "position 1" in problem


def test_sanitize_fields_keeps_other_fields_and_adds_the_flag_once() -> None:
    data = {"note": "a\x00b", "reason": "ok", "x": "\x00", "quality_flags": [TEXT_SANITIZED]}
    out = sanitize_fields(data, ("note", "reason"))
    assert out == {"note": "ab", "reason": "ok", "x": "\x00", "quality_flags": [TEXT_SANITIZED]}
    assert sanitize_fields("not a dict", ("note",)) == "not a dict"


def test_loads_json_keeps_lone_surrogates_for_the_sanitizer() -> None:
    assert loads_json(b'{"note": "x\\ud800"}') == {"note": "x\ud800"}
    for bad in (b"\xff", b"{", b"NaN", b"[" * 100000):
        with pytest.raises(ValueError, match="not"):
            loads_json(bad)


# --- department actions and callback results --------------------------------------------------------------------


def _action(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "action_id": "act-1",
        "complaint_id": "hotline:TL1",
        "department": "spj",
        "action": "resolve",
        "at": "2026-11-26T02:00:00Z",
        "note": "已办结",
    }
    return {**base, **fields}


@given(note=texts, reason=texts)
def test_action_free_text_is_stored_sanitized_and_flagged(note: str, reason: str) -> None:
    action = DepartmentAction.model_validate(_action(note=note[:2000], reason=reason[:2000]))
    assert action.note is not None
    assert _storable(action.note)
    assert action.reason is not None
    assert _storable(action.reason)
    changed = action.note != note[:2000] or action.reason != reason[:2000]
    assert (TEXT_SANITIZED in action.quality_flags) == changed
    # What routing stores is the model's JSON: it must parse back to the same action (flag included).
    assert DepartmentAction.model_validate_json(action.model_dump_json()) == action


def test_action_with_nul_in_note_over_json_is_taken_sanitized_and_flagged() -> None:
    raw = json.dumps(_action(note="办结\u0000了\ud800")).encode("utf-8", "surrogatepass")
    action = DepartmentAction.model_validate(loads_json(raw))
    assert action.note == "办结了\ufffd"
    assert action.quality_flags == (TEXT_SANITIZED,)


def test_a_client_cannot_set_its_own_flags() -> None:
    action = DepartmentAction.model_validate(_action(quality_flags=["anything", TEXT_SANITIZED]))
    assert action.quality_flags == (TEXT_SANITIZED,)
    assert DepartmentAction.model_validate(_action(quality_flags=["anything"])).quality_flags == ()


@pytest.mark.parametrize("field", ["action_id", "complaint_id", "department", "lead_department"])
@pytest.mark.parametrize("char", ["\x00", "\x1f", "\ud800", "\x85"])
def test_action_identifiers_with_control_characters_are_refused(field: str, char: str) -> None:
    with pytest.raises(ValidationError) as caught:
        DepartmentAction.model_validate(_action(**{field: f"A{char}"}))
    # pydantic itself refuses a lone surrogate in a string field; the rule refuses the rest, each with its reason.
    assert field in str(caught.value)
    assert "identifier" in str(caught.value) or "unicode string" in str(caught.value)


def test_callback_comment_is_sanitized_and_its_case_id_checked() -> None:
    body = {
        "complaint_id": "hotline:TL1",
        "callback_at": "2026-11-26T02:00:00Z",
        "satisfaction": "satisfied",
        "resolved": True,
        "comment": "满意\x00",
    }
    callback = CallbackResult.model_validate(body)
    assert callback.comment == "满意"
    assert callback.quality_flags == (TEXT_SANITIZED,)
    with pytest.raises(ValidationError, match="identifier"):
        CallbackResult.model_validate({**body, "complaint_id": "hotline:TL1\x00"})


# --- intake's source ids ----------------------------------------------------------------------------------------


def _hotline(gdbh: object) -> bytes:
    return json.dumps(
        {"gdbh": gdbh, "ldsj": "2026-11-26 10:00:00", "sqlx": "投诉", "sqnr": "拖欠工程款"}, ensure_ascii=True
    ).encode()


@pytest.mark.parametrize("char", BAD_CHARS)
def test_a_source_id_with_a_control_character_is_refused_not_merged(char: str) -> None:
    raw = _hotline(f"A{char}")
    result = normalize(Channel.HOTLINE, raw, NOW)
    assert isinstance(result, Rejection), result
    assert result.error_type == "invalid_field"
    assert "gdbh" in result.reason


def test_a_clean_source_id_is_still_taken() -> None:
    result = normalize(Channel.HOTLINE, _hotline("A"), NOW)
    assert not isinstance(result, Rejection)
    assert result.complaint_id == "hotline:A"
