"""Small shared pieces: phone masking in logs, scoped keys, topic prefixes, lag arithmetic."""

from __future__ import annotations

import json
import logging

import pytest
from aiokafka.structs import TopicPartition

from shared.auth import KeyRing, KeysFileError, digest, new_key
from shared.domain import Channel
from shared.lag import lag_by_topic
from shared.observability import JsonFormatter, mask_phone, mask_phones_in_text
from shared.topics import Topics


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("call 13912345678 now", "call 139****5678 now"),
        ("+86 139-1234-5678", "139****5678"),
        ("座机 0475-8234567", "座机 0475****567"),
        ("工单 TL2026112600123", "工单 TL2026112600123"),
        ("createdAt 1795662932000", "createdAt 1795662932000"),
    ],
)
def test_phone_numbers_in_free_text_are_masked(text: str, masked: str) -> None:
    assert mask_phones_in_text(text) == masked


def test_mask_phone() -> None:
    assert mask_phone("13912345678") == "139****5678"
    assert mask_phone("04758234567") == "0475****567"
    assert mask_phone(None) is None


def test_json_logs_mask_phones_in_message_and_extras() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "caller %s", ("13912345678",), None)
    record.contact = {"phone": "13804751234"}
    line = JsonFormatter().format(record)
    assert "13912345678" not in line
    assert "13804751234" not in line
    assert json.loads(line)["msg"] == "caller 139****5678"


def test_keys_file_and_scopes() -> None:
    key, line = new_key("department:spj")
    ring = KeyRing.from_yaml(line)
    principal = ring.authenticate(key)
    assert principal is not None
    assert principal.department() == "spj"
    assert not principal.may_post_channel("hotline")
    assert ring.authenticate(key + "x") is None
    assert key not in line
    assert digest(key) in line


@pytest.mark.parametrize(
    "text",
    ["- sha256: abc\n  scope: admin\n", f'- sha256: "{"a" * 64}"\n  scope: "root"\n', "not: a list\n", "- [1, 2]\n"],
)
def test_bad_keys_files_are_refused(text: str) -> None:
    with pytest.raises(KeysFileError):
        KeyRing.from_yaml(text)


def test_topic_prefix() -> None:
    topics = Topics("t1.")
    assert topics.intake(Channel.HOTLINE) == "t1.intake.hotline"
    assert topics.channel_of("t1.intake.supervisor") is Channel.SUPERVISOR
    assert topics.channel_of("intake.supervisor") is None
    assert topics.intake(Channel.PORTAL) in topics.all()
    assert topics.channel_of("t1.intake.visit") is Channel.VISIT
    # Survey responses come over HTTP and go out on surveys.responses: there is no raw survey topic.
    assert topics.channel_of("t1.intake.survey") is None
    assert "t1.intake.survey" not in topics.all()
    assert topics.survey_responses == "t1.surveys.responses"
    assert len(topics.all()) == len(set(topics.all())) == 15
    assert all(t.startswith("t1.") for t in topics.all())


def test_lag_counts_uncommitted_partitions_from_zero() -> None:
    a0, a1, b0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)
    assert lag_by_topic({a0: 5, b0: 9}, {a0: 7, a1: 3, b0: 9}) == {"a": 5, "b": 0}
