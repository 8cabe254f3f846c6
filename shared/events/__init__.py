"""Every message of contract section 3, one frozen pydantic model each (schema_version 1)."""

from shared.events.actions import ActionType, CallbackResult, DepartmentAction, ReturnReason
from shared.events.alerts import WarningKind, WarningRaised
from shared.events.assigned import ComplaintAssigned
from shared.events.base import Event, GroupEvent, Message, UtcDatetime, dump
from shared.events.dlq import DeadLetter
from shared.events.received import ComplaintReceived, Contact, Enterprise
from shared.events.sla import CaseState, LifecycleChanged, SlaEvent, SlaEventType, Stage
from shared.events.supervision import Phenomenon, SupervisionChange, SupervisionChanged, SupervisionStatus
from shared.events.survey import SurveyResponded

__all__ = [
    "ActionType",
    "CallbackResult",
    "CaseState",
    "ComplaintAssigned",
    "ComplaintReceived",
    "Contact",
    "DeadLetter",
    "DepartmentAction",
    "Enterprise",
    "Event",
    "GroupEvent",
    "LifecycleChanged",
    "Message",
    "Phenomenon",
    "ReturnReason",
    "SlaEvent",
    "SlaEventType",
    "Stage",
    "SupervisionChange",
    "SupervisionChanged",
    "SupervisionStatus",
    "SurveyResponded",
    "UtcDatetime",
    "WarningKind",
    "WarningRaised",
    "dump",
]
