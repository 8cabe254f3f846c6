"""What routing's HTTP side shows, as pure functions: cases and their facts for a department (phone numbers in full
for the lead department only, contract 3.1), deadlines, dry-run requests, and readable validation errors."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from shared.domain import CITY_CODE, REGIONS, Category, category_from_text, region_code_of
from shared.observability import mask_phone, mask_phones_in_text

_TEXT_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "received": ("title", "content"),
    "action": ("note", "reason"),
    "callback": ("comment",),
}


def describe_validation(exc: ValidationError, limit: int = 5) -> tuple[str, str]:
    """(error_type, reason) of a message that does not parse: `invalid_json` or `invalid_message`."""
    errors = exc.errors(include_url=False)
    if any(e["type"] in ("json_invalid", "json_type") for e in errors):
        first = next(e for e in errors if e["type"] in ("json_invalid", "json_type"))
        return "invalid_json", f"not valid UTF-8 JSON: {first['msg']}"
    parts = []
    for e in errors[:limit]:
        where = ".".join(str(p) for p in e["loc"]) or "body"
        parts.append(f"{where}: {e['msg']}")
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return "invalid_message", "; ".join(parts) + more


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def mask_complaint(complaint: Mapping[str, Any], full: bool) -> dict[str, Any]:
    """The complaint as the viewer may see it: the handling (lead) department sees phone numbers whole."""
    shown = dict(complaint)
    if full:
        return shown
    contact = shown.get("contact")
    if isinstance(contact, Mapping):
        shown["contact"] = {**contact, "phone": mask_phone(contact.get("phone"))}
    for key in _TEXT_FIELDS["received"]:
        if isinstance(shown.get(key), str):
            shown[key] = mask_phones_in_text(shown[key])
    return shown


def fact_view(
    kind: str, at: datetime | None, recorded_at: datetime, body: Mapping[str, Any], full: bool
) -> dict[str, Any]:
    """One fact of a case's history, masked for a viewer who is not the lead."""
    shown = dict(body)
    if kind == "received":
        shown = mask_complaint(shown, full)
    elif not full:
        for key in _TEXT_FIELDS.get(kind, ()):
            if isinstance(shown.get(key), str):
                shown[key] = mask_phones_in_text(shown[key])
    return {"kind": kind, "at": _iso(at), "recorded_at": _iso(recorded_at), "fact": shown}


def deadline_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "stage": row["stage"],
        "round": row["round"],
        "department": row["department"],
        "due_at": _iso(row["due_at"]),
        "status": row["status"],
        "escalate_to": row["escalate_to"],
        "late": row["late"],
    }


def current_deadlines(rows: Iterable[Mapping[str, Any]], round_: int) -> list[dict[str, Any]]:
    """The deadlines that matter now: those of the current round, and the latest resolve deadline (the resolve
    window runs from `received_at` across returns, so it may belong to an earlier round)."""
    rows = list(rows)
    shown = [r for r in rows if r["round"] == round_]
    if not any(r["stage"] == "resolve" for r in shown):
        resolves = [r for r in rows if r["stage"] == "resolve"]
        if resolves:
            shown.append(max(resolves, key=lambda r: (r["round"], r["due_at"])))
    return [deadline_view(r) for r in sorted(shown, key=lambda r: r["due_at"])]


def case_summary(row: Mapping[str, Any], deadlines: Sequence[Mapping[str, Any]], viewer: str | None) -> dict[str, Any]:
    """A case as a department's list shows it."""
    complaint = json.loads(row["complaint"]) if isinstance(row["complaint"], str) else dict(row["complaint"])
    lead = row["lead_department"]
    full = viewer is not None and viewer == lead
    shown = mask_complaint(complaint, full)
    return {
        "complaint_id": row["complaint_id"],
        "state": row["state"],
        "round": row["round"],
        "role": "lead" if viewer == lead else ("assisting" if viewer in (row["assisting_departments"] or ()) else None),
        "lead_department": lead,
        "assisting_departments": list(row["assisting_departments"] or ()),
        "level": row["level"],
        "rule_id": row["rule_id"],
        "channel": row["channel"],
        "category": row["category"],
        "region_code": row["region_code"],
        "urgency": row["urgency"],
        "received_at": _iso(row["received_at"]),
        "assigned_at": _iso(row["assigned_at"]),
        "title": shown.get("title"),
        "enterprise": shown.get("enterprise"),
        "contact": shown.get("contact"),
        "anonymous": shown.get("anonymous", False),
        "deadlines": current_deadlines(deadlines, row["round"]),
    }


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its `$defs` inlined, to declare a hand-parsed request body in OpenAPI."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(copy.deepcopy(defs[ref.removeprefix("#/$defs/")]))
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


# --- dry run ------------------------------------------------------------------------------------------------


class DryRunComplaint(BaseModel):
    """Enough of a complaint to place it: a category and a division, or text to find the category in."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    category: Category | None = Field(default=None, description="Omitted: found from title and content (6.1).")
    region_code: str | None = Field(default=None, description="Division code or name; omitted: the city (150500).")
    title: str | None = None
    content: str | None = None


class DryRunRequest(BaseModel):
    """`POST /v1/routing/dry-run`: where would this complaint go, under the rules in force or proposed ones?"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    complaint: DryRunComplaint
    rules: str | None = Field(default=None, description="YAML text of a proposed rule set; omitted: the set in force.")
    exclude: tuple[str, ...] = Field(default=(), description="Departments that returned the case (退单).")
    at: AwareDatetime | None = Field(default=None, description="Pick the rule set in force at this time; default now.")


def dry_run_place(complaint: DryRunComplaint) -> tuple[Category, str, list[str]]:
    """The category and division a dry run routes on, with notes on what was assumed."""
    notes: list[str] = []
    category = complaint.category
    if category is None:
        text = f"{complaint.title or ''}\n{complaint.content or ''}"
        if not text.strip():
            raise ValueError("give complaint.category, or complaint.title / complaint.content to find it in")
        category = category_from_text(text)
        notes.append(f"category {category.value} found from the text")
    given = (complaint.region_code or "").strip()
    region = CITY_CODE if not given else (given if given in REGIONS else region_code_of(given))
    if region is None:
        notes.append(f"unknown region {given!r}: routed as the city ({CITY_CODE})")
        region = CITY_CODE
    return category, region, notes
