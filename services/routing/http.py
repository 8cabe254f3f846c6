"""Routing's HTTP side: department actions, a department's cases, one case, dry runs and rule sets."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, Final, TypeVar

import asyncpg
import yaml
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ValidationError

from services.routing import store
from services.routing.lifecycle import SUPERVISOR
from services.routing.rules import (
    RulesError,
    RuleSet,
    decide_route,
    load_rules,
)
from services.routing.views import (
    DryRunRequest,
    case_summary,
    deadline_view,
    describe_validation,
    dry_run_place,
    fact_view,
    inline_schema,
    mask_complaint,
)
from services.routing.worker import RoutingWorker, action_fact
from shared.auth import Principal
from shared.db import bounded_transaction
from shared.domain import is_department
from shared.events import (
    CaseState,
    DepartmentAction,
)
from shared.service import (
    CallerDep,
    IdentifierPath,
    ServiceContext,
    answers,
    context,
    db_or_503,
    read_limited,
    scopes,
)
from shared.text import JsonBodyError, loads_json

log = logging.getLogger(__name__)
MAX_ACTION_BYTES: Final = 64 * 1024
MAX_RULES_BYTES: Final = 256 * 1024
M = TypeVar("M", bound=BaseModel)

api = APIRouter(tags=["routing"])


def _routing(request: Request) -> tuple[ServiceContext, RoutingWorker]:
    ctx = context(request)
    found: RoutingWorker = ctx.extras["worker"]
    return ctx, found


def _parse_body(model: type[M], raw: bytes) -> M:
    """The body as `model`: parsed as intake parses (lone surrogate escapes kept for the text rule to replace, not
    refused with the whole body), then validated; 400 for a body that is not JSON, 422 for one that is invalid."""
    try:
        return model.model_validate(loads_json(raw))
    except JsonBodyError as exc:
        raise HTTPException(400, {"error": "invalid_json", "reason": str(exc)}) from None
    except ValidationError as exc:
        error_type, reason = describe_validation(exc)
        raise HTTPException(
            400 if error_type == "invalid_json" else 422, {"error": error_type, "reason": reason}
        ) from None


def _require_admin(caller: Principal) -> None:
    if not caller.is_admin:
        raise HTTPException(403, {"error": "forbidden", "reason": "this needs an admin key"})


@api.post(
    "/v1/cases/{complaint_id}/actions",
    summary="A department action on a case (contract 3.3)",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": inline_schema(DepartmentAction)}}},
        **scopes("department:*"),
    },
    responses={
        200: {"description": "Taken, or the same action_id again (`duplicate: true`)"},
        **answers(400, 403, 404, 409, 413),
    },
)
async def post_action(complaint_id: IdentifierPath, request: Request, caller: Principal = CallerDep) -> JSONResponse:
    ctx, routing = _routing(request)
    department = caller.department()
    if department is None:
        raise HTTPException(403, {"error": "forbidden", "reason": "only a department key may act on a case"})
    action = _parse_body(DepartmentAction, await read_limited(request, MAX_ACTION_BYTES))
    if action.complaint_id != complaint_id:
        raise HTTPException(
            422, {"error": "invalid", "reason": f"the path names case {complaint_id}, the body {action.complaint_id}"}
        )
    if action.department != department:
        raise HTTPException(
            403, {"error": "forbidden", "reason": f"this key acts for {department}, not for {action.department}"}
        )
    now = ctx.clock()
    async with db_or_503(), bounded_transaction(ctx.pool, ctx.settings.http_db_timeout_s) as conn:
        (outcome,) = await routing.apply(conn, [action_fact(action)], now)
    if outcome.effects is not None:
        routing.count(outcome.effects)
        ctx.relay.wake()
    if outcome.refused:
        log.info(
            "action refused", extra={"action_id": action.action_id, "status": outcome.status, "reason": outcome.reason}
        )
        raise HTTPException(outcome.status, outcome.body)
    return JSONResponse(outcome.body)


@api.get(
    "/v1/departments/{code}/cases",
    summary="A department's cases, with their deadlines",
    openapi_extra=scopes("department:{code}"),
    responses=answers(403),
)
async def department_cases(
    code: IdentifierPath,
    request: Request,
    state: str | None = Query(default=None, description="Only cases in this state (3.6)."),
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0),
    caller: Principal = CallerDep,
) -> JSONResponse:
    ctx, _ = _routing(request)
    if caller.department() != code:
        raise HTTPException(403, {"error": "forbidden", "reason": f"this needs the key of department {code}"})
    if state is not None and state not in {s.value for s in CaseState}:
        raise HTTPException(
            422,
            {"error": "invalid", "reason": f"unknown state {state!r}: one of {', '.join(s.value for s in CaseState)}"},
        )
    rows = await store.department_cases(ctx.pool, code, state, limit, offset)
    deadlines: dict[str, list[Any]] = {}
    for d in await store.deadlines(ctx.pool, [r["complaint_id"] for r in rows]):
        deadlines.setdefault(d["complaint_id"], []).append(d)
    cases = [case_summary(r, deadlines.get(r["complaint_id"], []), code) for r in rows]
    return JSONResponse({"department": code, "state": state, "limit": limit, "offset": offset, "cases": cases})


@api.get(
    "/v1/cases/{complaint_id}",
    summary="One case: its facts in order, deadlines and state",
    openapi_extra=scopes("department:*", "admin"),
    responses=answers(403, 404),
)
async def get_case(complaint_id: IdentifierPath, request: Request, caller: Principal = CallerDep) -> JSONResponse:
    ctx, _ = _routing(request)
    if not caller.is_admin and caller.department() is None:  # before the lookup: a 404 would say the case exists
        raise HTTPException(403, {"error": "forbidden", "reason": "this needs a department's key or the admin key"})
    row = await store.case(ctx.pool, complaint_id)
    if row is None:
        raise HTTPException(404, {"error": "not_found", "reason": f"no case {complaint_id}"})
    viewer = caller.department()
    lead = row["lead_department"]
    allowed = caller.is_admin or (
        viewer is not None
        and (
            viewer in (lead, SUPERVISOR)
            or viewer in (row["assisting_departments"] or ())
            or await store.held_by(ctx.pool, complaint_id, viewer)
        )
    )
    if not allowed:
        raise HTTPException(
            403, {"error": "forbidden", "reason": f"case {complaint_id} is not held by this key's department"}
        )
    full = viewer is not None and viewer == lead
    complaint = mask_complaint(_json_object(row["complaint"]), full)
    body = {
        "complaint_id": complaint_id,
        "state": row["state"],
        "round": row["round"],
        "lead_department": lead,
        "assisting_departments": list(row["assisting_departments"] or ()),
        "level": row["level"],
        "rule_id": row["rule_id"],
        "complaint": complaint,
        "assignments": [
            {
                "assignment_id": a["assignment_id"],
                "round": a["round"],
                "lead_department": a["lead_department"],
                "assisting_departments": list(a["assisting_departments"]),
                "level": a["level"],
                "rule_id": a["rule_id"],
                "rules_version": a["rules_version"],
                "reason": a["reason"],
                "assigned_at": a["assigned_at"].isoformat().replace("+00:00", "Z"),
            }
            for a in await store.assignments_of(ctx.pool, complaint_id)
        ],
        "deadlines": [deadline_view(d) for d in await store.deadlines(ctx.pool, [complaint_id])],
        "history": [
            fact_view(h["kind"], h["at"], h["recorded_at"], _json_object(h["body"]), full)
            for h in await store.history(ctx.pool, complaint_id)
        ],
    }
    return JSONResponse(body)


def _json_object(value: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(value) if isinstance(value, str) else dict(value)
    return loaded


@api.post(
    "/v1/routing/dry-run",
    summary="Where a complaint would go, under the rules in force or a proposed set; assigns nothing",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": inline_schema(DryRunRequest)}}},
        **scopes("admin"),
    },
    responses=answers(400, 403, 413),
)
async def dry_run(request: Request, caller: Principal = CallerDep) -> JSONResponse:
    ctx, routing = _routing(request)
    _require_admin(caller)
    req = _parse_body(DryRunRequest, await read_limited(request, MAX_RULES_BYTES))
    unknown = [code for code in req.exclude if not is_department(code)]
    if unknown:
        raise HTTPException(
            422, {"error": "invalid", "reason": f"unknown department(s) in exclude: {', '.join(unknown)}"}
        )
    try:
        category, region, notes = dry_run_place(req.complaint)
    except ValueError as exc:
        raise HTTPException(422, {"error": "invalid", "reason": str(exc)}) from None
    at = req.at or ctx.clock()
    if req.rules is not None:
        rule_set = _load_posted_rules(req.rules, "proposed rules")
    else:
        async with ctx.pool.acquire() as conn:
            rule_set = await routing.rules.current(conn, at)
    decision = decide_route(category, region, rule_set, exclude=frozenset(req.exclude))
    return JSONResponse(
        {
            "lead_department": decision.lead_department,
            "assisting_departments": list(decision.assisting_departments),
            "level": decision.level,
            "rule_id": decision.rule_id,
            "reason": decision.reason,
            "rules_version": decision.rules_version,
            "passed_over": list(decision.passed_over),
            "category": category.value,
            "region_code": region,
            "proposed": req.rules is not None,
            "at": at.isoformat().replace("+00:00", "Z"),
            "notes": notes,
        }
    )


def _load_posted_rules(text: str, source: str) -> RuleSet:
    try:
        return load_rules(text, source=source)
    except yaml.YAMLError as exc:  # e.g. a control character the YAML reader refuses before it parses anything
        reason = f"{source}: not valid YAML: {exc}"[:500]
        raise HTTPException(422, {"error": "invalid_rules", "reason": reason}) from None
    except RulesError as exc:
        raise HTTPException(
            422,
            {
                "error": "invalid_rules",
                "reason": str(exc),
                "problems": [{"line": p.line, "where": p.where, "message": p.message} for p in exc.problems],
            },
        ) from None


def _rule_set_view(rule_set: RuleSet, *, source: str, in_force: bool, **extra: Any) -> dict[str, Any]:
    return {
        "version": rule_set.version,
        "effective_from": rule_set.effective_from.isoformat(),
        "source": source,
        "in_force": in_force,
        "rules": [r.id for r in rule_set.rules],
        **extra,
    }


@api.get(
    "/v1/routing/rules",
    summary="The rule sets (the file's and those posted) and the one in force",
    openapi_extra=scopes("admin"),
    responses=answers(403),
)
async def list_rules(request: Request, caller: Principal = CallerDep) -> JSONResponse:
    ctx, routing = _routing(request)
    _require_admin(caller)
    now = ctx.clock()
    async with ctx.pool.acquire() as conn:
        in_force = await routing.rules.current(conn, now)
    book = routing.rules
    sets = [_rule_set_view(book.base, source="file", in_force=in_force is book.base, path=book.source)]
    for row in await store.rule_set_list(ctx.pool):
        posted = book.posted.get(row["version"])
        if posted is not None:
            sets.append(
                _rule_set_view(
                    posted,
                    source="api",
                    in_force=in_force is posted,
                    created_at=row["created_at"].isoformat(),
                    created_by=row["created_by"],
                )
            )
    sets.sort(key=lambda s: s["effective_from"])
    return JSONResponse({"at": now.isoformat(), "in_force": in_force.version, "sets": sets})


@api.get(
    "/v1/routing/rules/{version}",
    summary="One rule set as its YAML text",
    openapi_extra=scopes("admin"),
    responses={200: {"content": {"application/yaml": {"schema": {"type": "string"}}}}, **answers(403, 404)},
)
async def get_rules(version: IdentifierPath, request: Request, caller: Principal = CallerDep) -> PlainTextResponse:
    ctx, routing = _routing(request)
    _require_admin(caller)
    text = routing.rules.text if version == routing.rules.base.version else await store.rule_set_yaml(ctx.pool, version)
    if text is None:
        raise HTTPException(404, {"error": "not_found", "reason": f"no rule set {version!r}"})
    return PlainTextResponse(text, media_type="application/yaml")


@api.post(
    "/v1/routing/rules",
    status_code=201,
    summary="Post a new versioned rule set (YAML or JSON) taking effect at its effective_from",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/yaml": {"schema": {"type": "string"}}}},
        **scopes("admin"),
    },
    responses=answers(400, 403, 409, 413),
)
async def post_rules(request: Request, caller: Principal = CallerDep) -> JSONResponse:
    ctx, routing = _routing(request)
    _require_admin(caller)
    raw = await read_limited(request, MAX_RULES_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, {"error": "invalid_utf8", "reason": "a rules file is UTF-8 text"}) from None
    # A broken set is refused here, before anything is stored: the sets in force stay as they were.
    rule_set = _load_posted_rules(text, "POST /v1/routing/rules")
    book = routing.rules
    now = ctx.clock()
    try:
        async with ctx.pool.acquire() as conn, conn.transaction():
            await book.refresh(conn)
            clash = _clash(rule_set, [book.base, *book.posted.values()])
            if clash:
                raise HTTPException(409, {"error": "conflict", "reason": clash})
            await store.insert_rule_set(conn, rule_set.version, rule_set.effective_from, text, now, caller.scope)
    except asyncpg.UniqueViolationError:
        raise HTTPException(
            409, {"error": "conflict", "reason": "a rule set with this version or effective_from was just posted"}
        ) from None
    book.posted[rule_set.version] = rule_set
    in_force = book.in_force(now)
    log.info(
        "rule set posted", extra={"version": rule_set.version, "effective_from": rule_set.effective_from.isoformat()}
    )
    return JSONResponse(
        _rule_set_view(rule_set, source="api", in_force=in_force is rule_set, created_at=now.isoformat()),
        status_code=201,
    )


def _clash(new: RuleSet, existing: Sequence[RuleSet]) -> str | None:
    for old in existing:
        if old.version == new.version:
            return f"rule set version {new.version!r} exists already; rule sets are immutable, post a new version"
        if old.effective_from == new.effective_from:
            return (
                f"rule set {old.version!r} takes effect at {old.effective_from.isoformat()} too: "
                "give the new set another effective_from"
            )
    return None
