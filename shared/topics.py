"""Topic names of contract section 1, each with the optional `TOPIC_PREFIX`."""

from __future__ import annotations

from dataclasses import dataclass

from shared.domain import RAW_CHANNELS, Channel

BASE_NAMES = {
    "intake_hotline": "intake.hotline",
    "intake_complaint_line": "intake.complaint_line",
    "intake_supervisor": "intake.supervisor",
    "received": "complaints.received",
    "assigned": "complaints.assigned",
    "actions": "departments.actions",
    "callbacks": "hotline.callbacks",
    "sla": "complaints.sla",
    "lifecycle": "complaints.lifecycle",
    "dlq": "complaints.dlq",
    "supervision": "complaints.supervision",
    "alerts": "complaints.alerts",
    "survey_responses": "surveys.responses",
}


@dataclass(frozen=True)
class Topics:
    """Every topic the project reads or writes, prefixed."""

    prefix: str = ""

    def _name(self, key: str) -> str:
        return f"{self.prefix}{BASE_NAMES[key]}"

    @property
    def received(self) -> str:
        return self._name("received")

    @property
    def assigned(self) -> str:
        return self._name("assigned")

    @property
    def actions(self) -> str:
        return self._name("actions")

    @property
    def callbacks(self) -> str:
        return self._name("callbacks")

    @property
    def sla(self) -> str:
        return self._name("sla")

    @property
    def lifecycle(self) -> str:
        return self._name("lifecycle")

    @property
    def dlq(self) -> str:
        return self._name("dlq")

    @property
    def supervision(self) -> str:
        """Supervision item changes (contract 10.3), written by reporting."""
        return self._name("supervision")

    @property
    def alerts(self) -> str:
        """Early warnings (contract 10.4), written by reporting."""
        return self._name("alerts")

    @property
    def survey_responses(self) -> str:
        return self._name("survey_responses")

    def intake(self, channel: Channel) -> str:
        """The raw topic of a channel, e.g. `intake.hotline`."""
        return f"{self.prefix}intake.{channel.value}"

    def channel_of(self, topic: str) -> Channel | None:
        """Which channel a raw intake topic belongs to."""
        for channel in RAW_CHANNELS:
            if topic == self.intake(channel):
                return channel
        return None

    def raw(self) -> list[str]:
        """Every raw intake topic (contract 1): one per channel that has one."""
        return [self.intake(channel) for channel in RAW_CHANNELS]

    def all(self) -> list[str]:
        names = [self._name(key) for key in BASE_NAMES]
        return names + [t for t in self.raw() if t not in names]

    def stamped_by_broker(self) -> list[str]:
        """Topics outside systems write facts to, whose time the product judges by: the broker stamps each record
        when it takes it (LogAppendTime), so a sender cannot backdate a fact and a slow consumer cannot make it late."""
        return [self.actions, self.callbacks]
