"""What text may enter the product (pure, no I/O): the one rule every edge applies, intake's normalizer, the
inbound message models (department actions, callback results) and the HTTP path parameters alike.

Two kinds of text, two rules (documented in docs/intake.md, "Text rules"):

- Free text (a complaint's content, an action's note or reason, a callback's comment) is kept exactly as given,
  except NUL and the other C0 control characters (but tab, newline and carriage return) and DEL, which PostgreSQL
  or the consumers cannot take, are removed, and lone UTF-16 surrogates (possible through JSON `\\ud800` escapes)
  become U+FFFD. Either adds the flag `text_sanitized` to the message, so nothing is changed silently.
- An identifier (a source id, `complaint_id`, `action_id`, a department code) is never changed: two ids that
  differ only by a control character must not become one (`"A\\u0000"` is not `"A"`). One that holds a control
  character (C0, DEL or C1) or a lone surrogate is refused, with a reason a person can read.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

TEXT_SANITIZED: Final = "text_sanitized"
"""The quality flag a message carries when its free text had characters removed or replaced."""

_CONTROL: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATE: Final = re.compile(r"[\ud800-\udfff]")
_ID_FORBIDDEN: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")

IDENTIFIER_PATTERN: Final = r"^[^\x00-\x1f\x7f-\x9f]+$"
"""The identifier rule as a regular expression for OpenAPI path parameters (a URL path cannot carry surrogates)."""


def sanitize_text(value: str) -> tuple[str, bool]:
    """Free text made storable: (the text, whether anything was removed or replaced)."""
    cleaned = _SURROGATE.sub("\ufffd", _CONTROL.sub("", value))
    return cleaned, cleaned != value


def identifier_problem(value: str) -> str | None:
    """Why `value` cannot be an identifier, or None when it can."""
    found = _ID_FORBIDDEN.search(value)
    if found is None:
        return None
    char = found.group()
    at = found.start()
    if char == "\x00":
        return f"contains a NUL character at position {at}"
    if "\ud800" <= char <= "\udfff":
        return f"contains a lone UTF-16 surrogate (U+{ord(char):04X}) at position {at}"
    return f"contains the control character U+{ord(char):04X} at position {at}"


def check_identifier(value: str) -> str:
    """`value` unchanged, or ValueError with the reason (for pydantic validators)."""
    problem = identifier_problem(value)
    if problem is not None:
        raise ValueError(f"an identifier must not contain control characters or lone surrogates: it {problem}")
    return value


def sanitize_fields(data: Any, fields: tuple[str, ...], flags_field: str = "quality_flags") -> Any:
    """A raw message (a dict) with its free-text `fields` sanitized and `text_sanitized` added to `flags_field` when
    anything changed; anything else is returned as is (the model's own validation then says what is wrong)."""
    if not isinstance(data, dict):
        return data
    changed = False
    out = dict(data)
    for name in fields:
        value = out.get(name)
        if isinstance(value, str):
            out[name], touched = sanitize_text(value)
            changed = changed or touched
    if changed:
        given = out.get(flags_field)
        flags = [f for f in given if isinstance(f, str)] if isinstance(given, list | tuple) else []
        if TEXT_SANITIZED not in flags:
            flags.append(TEXT_SANITIZED)
        out[flags_field] = flags
    return out


class JsonBodyError(ValueError):
    """A body that is not a UTF-8 JSON document; the message says why, for a person."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads_json(raw: bytes) -> Any:
    """A JSON body parsed the way intake parses one: UTF-8 strictly, NaN and Infinity refused, and lone surrogate
    escapes kept (for `sanitize_text` to replace) rather than refusing the whole message for them."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonBodyError(f"not UTF-8: invalid byte at position {exc.start}") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise JsonBodyError("not usable JSON: nested too deeply") from None
    except ValueError as exc:
        raise JsonBodyError(f"not valid JSON: {exc}") from None
