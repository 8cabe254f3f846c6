"""Topic names of contract section 1, each with the optional `TOPIC_PREFIX`."""

from __future__ import annotations

from dataclasses import dataclass

from shared.domain import Channel

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

    def intake(self, channel: Channel) -> str:
        """The raw topic of a channel, e.g. `intake.hotline`."""
        return f"{self.prefix}intake.{channel.value}"

    def channel_of(self, topic: str) -> Channel | None:
        """Which channel a raw intake topic belongs to."""
        for channel in Channel:
            if topic == self.intake(channel):
                return channel
        return None

    def all(self) -> list[str]:
        return [self._name(key) for key in BASE_NAMES]

    def stamped_by_broker(self) -> list[str]:
        """Topics outside systems write facts to, whose time the product judges by: the broker stamps each record
        when it takes it (LogAppendTime), so a sender cannot backdate a fact and a slow consumer cannot make it late."""
        return [self.actions, self.callbacks]
