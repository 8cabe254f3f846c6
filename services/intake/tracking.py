"""What intake keeps of `complaints.lifecycle` for the cases it shows (the portal's tracking page, a visit's
problems): per case, the latest state and department, and the latest resolve note (the reply the enterprise sees).
Pure: a batch of facts in, at most one state and one note per case out."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from services.intake.store import NoteFact, StateFact
from shared.domain import Channel
from shared.events import LifecycleChanged

SHOWN_CHANNELS: Final = (Channel.PORTAL, Channel.VISIT, Channel.SURVEY)
_PREFIXES: Final = tuple(f"{c.value}:" for c in SHOWN_CHANNELS)


def is_shown(complaint_id: str) -> bool:
    """Intake keeps states only for the channels whose cases it shows."""
    return complaint_id.startswith(_PREFIXES)


def latest_facts(events: Iterable[LifecycleChanged]) -> tuple[list[StateFact], list[NoteFact]]:
    """The latest state per case (by `at`, then by when recorded) and the latest resolve note per case."""
    states: dict[str, StateFact] = {}
    notes: dict[str, NoteFact] = {}
    for e in events:
        if not is_shown(e.complaint_id):
            continue
        at = e.at or e.occurred_at
        fact = StateFact(e.complaint_id, e.to_state.value, e.lead_department, at, e.occurred_at)
        kept = states.get(e.complaint_id)
        if kept is None or (fact.changed_at, fact.recorded_at) >= (kept.changed_at, kept.recorded_at):
            states[e.complaint_id] = fact
        if e.cause == "resolve" and e.note and e.note.strip():
            held = notes.get(e.complaint_id)
            if held is None or at >= held.at:
                notes[e.complaint_id] = NoteFact(e.complaint_id, e.note.strip(), at)
    return list(states.values()), list(notes.values())
