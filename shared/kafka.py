"""Kafka plumbing every service uses: producer and broker settings, topic creation, and the consume loop's
retry and dead-letter discipline (RELIABILITY.md).

Delivery rules: producers use `acks=all` with idempotence; consumers use FastStream's MANUAL ack policy and
commit only after the batch's effects are durable in PostgreSQL. A batch handler never raises for bad data
(bad data becomes a dead letter inside the same transaction), retries passing faults forever with capped
backoff (so no offset is ever committed past an unprocessed record), and isolates a record that keeps
failing for another reason by processing the batch one record at a time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from uuid import NAMESPACE_URL, uuid5

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    IllegalStateError,
    InvalidProducerEpoch,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    ProducerFenced,
    TopicAlreadyExistsError,
    UnknownProducerId,
)

from shared.db import Fault, classify
from shared.events import DeadLetter
from shared.observability import mask_phones_in_text
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger(__name__)
LOG_APPEND_TIME: Final = 1  # a record's timestamp_type when the broker, not the producer, stamped it


@dataclass(frozen=True)
class RawRecord:
    """One consumed record, as bytes, with where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int | None = None
    log_append_time: bool = False
    """The broker stamped `timestamp_ms` when it appended the record (not the producer when it sent it)."""

    @property
    def key_text(self) -> str | None:
        return None if self.key is None else key_as_text(self.key, limit=KEY_TEXT_LIMIT)

    @property
    def appended_at(self) -> datetime | None:
        """When the broker took the record, if the broker says so; a producer's own stamp is not trusted."""
        if not self.log_append_time or self.timestamp_ms is None:
            return None
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    @classmethod
    def of(cls, record: Any) -> RawRecord:
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value if record.value is not None else b"",
            timestamp_ms=record.timestamp,
            log_append_time=getattr(record, "timestamp_type", 0) == LOG_APPEND_TIME,
        )


KEY_TEXT_LIMIT = 1024
"""At most this many characters of a key's text in a dead letter (the text is for people; the exact bytes travel in
`source_key_b64`), so a huge key cannot make its dead letter several times bigger than the record."""

DLQ_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
"""The dead-letter topic's `max.message.bytes` and the producers' `max_request_size`: a dead letter carries its
record's key and bytes whole (base64, a third more), so it is bigger than the biggest record the broker took (1 MiB by
default); one the broker refused would hold every outbox message behind it for ever."""


def key_as_text(key: bytes, limit: int | None = None) -> str:
    """A key as text PostgreSQL and JSON both accept: the UTF-8 text itself, but each byte that is not valid UTF-8
    and each NUL written `\\xNN` (so `b"A\\x00\\xff"` reads `A\\x00\\xff`). The exact bytes travel beside it.
    Past `limit` characters the text is cut and says how many bytes the key has."""
    text = key.decode("utf-8", errors="backslashreplace").replace("\x00", "\\x00")
    if limit is not None and len(text) > limit:
        text = f"{text[:limit]}… ({len(key)} bytes)"
    return text


def storable_text(text: str) -> str:
    """Text PostgreSQL can store and pydantic can write as JSON: NUL and lone surrogates replaced by U+FFFD."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    return text


class KafkaSecurityError(ValueError):
    """The KAFKA_* security settings cannot be honoured; the message names the setting."""


SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
"""The SASL mechanisms a service can use with a username and password (aiokafka and FastStream both take these)."""


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A verifying TLS context (certificate and host name checked) for SSL and SASL_SSL, trusting KAFKA_SSL_CAFILE if
    given, else the system's CAs; None for the plaintext protocols."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    cafile = settings.kafka_ssl_cafile
    if cafile is not None and not cafile.is_file():
        raise KafkaSecurityError(f"KAFKA_SSL_CAFILE {cafile} is not a readable file")
    try:
        return ssl.create_default_context(cafile=str(cafile) if cafile else None)
    except (OSError, ssl.SSLError) as exc:
        raise KafkaSecurityError(f"KAFKA_SSL_CAFILE {cafile} holds no usable CA certificate: {exc}") from exc


def sasl_credentials(settings: Settings) -> tuple[str, str, str] | None:
    """(mechanism, username, password) for the SASL protocols, None for the others. A mechanism we cannot use, or a
    missing username or password, is refused here: never quietly replaced by PLAIN, which would send the password."""
    if not settings.kafka_security_protocol.startswith("SASL"):
        return None
    mechanism = (settings.kafka_sasl_mechanism or "PLAIN").strip().upper()
    if mechanism not in SASL_MECHANISMS:
        raise KafkaSecurityError(
            f"KAFKA_SASL_MECHANISM {settings.kafka_sasl_mechanism!r} is not supported: use one of "
            f"{', '.join(SASL_MECHANISMS)}"
        )
    if not settings.kafka_sasl_username:
        raise KafkaSecurityError(f"KAFKA_SASL_USERNAME is needed with {settings.kafka_security_protocol}")
    if settings.kafka_sasl_password is None:
        raise KafkaSecurityError(f"KAFKA_SASL_PASSWORD is needed with {settings.kafka_security_protocol}")
    return mechanism, settings.kafka_sasl_username, settings.kafka_sasl_password.get_secret_value()


def security_kwargs(settings: Settings) -> dict[str, Any]:
    """aiokafka's security arguments from the contract's KAFKA_* settings (producers, admin clients, readers);
    `shared.service` builds FastStream's security object from the same two functions."""
    kwargs: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    sasl = sasl_credentials(settings)
    if sasl is not None:
        kwargs["sasl_mechanism"], kwargs["sasl_plain_username"], kwargs["sasl_plain_password"] = sasl
    return kwargs


def bootstrap_list(settings: Settings) -> list[str]:
    """KAFKA_BOOTSTRAP_SERVERS (`host:port[,host:port…]`) as the list of addresses FastStream needs."""
    return [a.strip() for a in settings.kafka_bootstrap_servers.split(",") if a.strip()]


def make_producer(settings: Settings, client_id: str) -> AIOKafkaProducer:
    """acks=all and idempotence on (aiokafka's defaults are acks=1 without it); batches big enough for 500+ messages.
    No linger: the relay hands a whole claimed batch to `send` before the sender runs, so waiting only delayed it."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=0,
        max_batch_size=1024 * 1024,
        max_request_size=DLQ_MAX_MESSAGE_BYTES,
        request_timeout_ms=int(settings.kafka_send_timeout_s * 1000),
        **security_kwargs(settings),
    )


def make_producers(settings: Settings, client_id: str) -> Producers:
    """The process's producer (`make_producer`), replaced whenever its idempotent state is spoilt."""
    return Producers(lambda: make_producer(settings, client_id), name=client_id)


SPOILING_ERRORS: Final[tuple[type[BaseException], ...]] = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    ProducerFenced,
    ProducerClosed,
    IllegalStateError,
)
"""Errors after which an idempotent producer cannot send again. aiokafka 0.14 numbers each partition's batches when it
drains them and never resets the numbers nor asks for a new producer id: a batch refused as out of order (the broker
restarted and lost or truncated its producer state), an unknown producer id, or a fenced epoch leaves every later
batch of that producer refused the same way, for ever. A closed producer, or one whose sender task has died, cannot
send either. Only a new producer (new id, sequences from 0) can."""


def spoils_producer(exc: BaseException) -> bool:
    """Whether `exc` (or an error it was raised from) means the producer that raised it must be replaced."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, SPOILING_ERRORS):
            return True
        if isinstance(current, BaseExceptionGroup):
            return any(spoils_producer(e) for e in current.exceptions)
        current = current.__cause__ or current.__context__
    return False


def producer_alive(producer: AIOKafkaProducer) -> bool:
    """False once the producer is closed or its sender task has ended: nothing it is given would ever be sent."""
    if getattr(producer, "_closed", False):
        return False
    sender = getattr(producer, "_sender", None)
    task = getattr(sender, "sender_task", None)
    return task is None or not task.done()


class Producers:
    """The one producer a process sends with, replaced when its state is spoilt (`spoils_producer`).

    Senders take the current producer with `get()` and, when a send fails, call `failed(producer, exc)`: if the error
    spoils the producer, it is closed and the next `get()` starts a new one (a new producer id, sequences from 0). A
    producer that cannot be started (the broker away) is not kept: `get()` raises and the caller retries later.

    Order: the old producer is closed, and its unsent batches failed, before a new one is started, so no batch of the
    old one can reach a partition after a batch of the new one. A sender that keeps what it has not seen acknowledged
    (the outbox keeps its rows) sends it again, in its order, through the new producer; a partition then sees at
    worst a repeat of facts it already has, which consumers drop by `event_id`.
    """

    def __init__(
        self,
        make: Callable[[], AIOKafkaProducer],
        *,
        name: str = "producer",
        close_timeout_s: float = 5.0,
        on_replace: Callable[[], None] | None = None,
    ) -> None:
        self._make, self.name, self._close_timeout_s, self._on_replace = make, name, close_timeout_s, on_replace
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._stopped = False
        self.generation = 0
        """How many producers have been started (1 after `start`, +1 for each replacement)."""

    async def start(self) -> AIOKafkaProducer:
        """Start the first producer now (raises if the broker cannot be reached)."""
        return await self.get()

    async def get(self) -> AIOKafkaProducer:
        """The producer to send with: the current one, or a new one if it was dropped, closed or its sender died."""
        async with self._lock:
            if self._stopped:
                raise ProducerClosed()
            current = self._producer
            if current is not None and producer_alive(current):
                return current
            if current is not None:
                log.warning("producer is no longer usable, starting a new one", extra={"producer": self.name})
                self._producer = None
                await self._close(current)
            producer = self._make()
            try:
                await producer.start()
            except BaseException:
                await self._close(producer)
                raise
            self._producer = producer
            self.generation += 1
            if self.generation > 1 and self._on_replace is not None:
                self._on_replace()
            return producer

    async def failed(self, producer: AIOKafkaProducer, exc: BaseException, *, spoilt: bool = False) -> bool:
        """A send through `producer` raised `exc`. If the error spoils it (or the caller knows it does: `spoilt`) and it
        is still the current one, close it so that the next `get()` makes a new one. True if the producer was dropped
        (now or by another sender before)."""
        if not spoilt and not spoils_producer(exc) and producer_alive(producer):
            return False
        async with self._lock:
            if self._producer is producer:
                log.warning(
                    "producer state refused, replacing the producer",
                    extra={"producer": self.name, "error": repr(exc)[:300]},
                )
                self._producer = None
                await self._close(producer)
        return True

    async def send_all(self, messages: Sequence[tuple[str, bytes | None, bytes]], timeout_s: float) -> None:
        """Send (topic, key, value) messages in order and wait, up to `timeout_s`, until every one is acknowledged.

        Raises if any is not. A delivery that failed (a message's future ended with an error) spoils the producer, as
        do the errors of `spoils_producer`: the idempotent producer numbered the batch when it drained it, so the
        partition's next batch would be refused as out of order for ever (aiokafka fails a batch whose partition has
        had no leader for `request_timeout_ms`, as after a broker restart). The producer is replaced; the caller keeps
        what was not acknowledged and sends it again. A timeout keeps the producer: its batches are still retried, in
        order, and a second send of the same messages queues behind them."""
        producer = await self.get()
        futures: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(timeout_s):
                for topic, key, value in messages:
                    futures.append(await producer.send(topic, value, key=key))
                results = await asyncio.gather(*futures, return_exceptions=True)
        except BaseException as exc:
            # Cut short: no one waits on the futures handed over so far; their errors (the producer closed when it
            # is replaced) are retrieved here, not logged by asyncio as never retrieved.
            for fut in futures:
                fut.add_done_callback(_retrieve)
            if isinstance(exc, Exception):
                await self.failed(producer, exc)
            raise
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            error = next((e for e in errors if spoils_producer(e)), errors[0])
            await self.failed(producer, error, spoilt=True)
            raise error

    async def stop(self) -> None:
        """Flush and close the current producer (bounded by the close timeout); `get()` fails afterwards."""
        async with self._lock:
            self._stopped = True
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), self._close_timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - what was not flushed is kept by its sender (the outbox)
                log.warning("producer not flushed at stop", extra={"producer": self.name, "error": repr(exc)[:300]})
                await self._close(producer)

    async def _close(self, producer: AIOKafkaProducer) -> None:
        """Close a producer that will not be used again, without flushing: its state is spoilt (what it still holds
        would be refused, or would land after the new producer's batches), and its sender sends it again."""
        try:
            await asyncio.wait_for(_abort(producer, self._close_timeout_s), 2 * self._close_timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - an old producer that does not close cleanly is dropped anyway
            log.warning("old producer did not close cleanly", extra={"producer": self.name, "error": repr(exc)[:300]})


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


async def _abort(producer: AIOKafkaProducer, wait_s: float = 5.0) -> None:
    """Stop a producer at once: no new sends, its sender task cancelled (nothing more is drained from it), its pending
    batches failed with ProducerClosed (no one waits on them for ever), its connections closed (a request in flight
    ends now). aiokafka has no public call for this: `stop()` flushes first, which does not end while the batches are
    refused or the broker is away."""
    producer._closed = True  # noqa: SLF001 - what stop() sets first: send() refuses from now on
    sender = getattr(producer, "_sender", None)
    task = getattr(sender, "sender_task", None)
    if task is not None and not task.done():
        task.cancel()
    accumulator = getattr(producer, "_message_accumulator", None)
    if accumulator is not None:
        accumulator.fail_all(ProducerClosed())
    client = getattr(producer, "client", None)
    if client is not None:
        await client.close()
    if task is not None and not task.done():
        await asyncio.wait([task], timeout=wait_s)


async def ensure_topics(
    settings: Settings, topics: Sequence[str], partitions: int | None = None, log_append_time: Sequence[str] = ()
) -> None:
    """Create the topics the project uses (idempotent), so partition counts are ours, not auto-creation's. Topics in
    `log_append_time` are stamped by the broker on append: their record time is when the product took the fact. The
    dead-letter topic takes messages up to `DLQ_MAX_MESSAGE_BYTES`. Replicas: TOPIC_REPLICATION_FACTOR (1 on one
    broker, 3 on a cluster, whose `min.insync.replicas` is 2)."""
    dlq = Topics(settings.topic_prefix).dlq
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, **security_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [
                        NewTopic(
                            t,
                            num_partitions=partitions or settings.topic_partitions,
                            replication_factor=settings.topic_replication_factor,
                            topic_configs={
                                **({"message.timestamp.type": "LogAppendTime"} if t in log_append_time else {}),
                                **({"max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES)} if t == dlq else {}),
                            },
                        )
                        for t in missing
                    ]
                )
    finally:
        await admin.close()


class Backoff:
    """Capped exponential backoff with jitter, for passing faults."""

    def __init__(self, first_s: float = 0.1, cap_s: float = 5.0) -> None:
        self.first_s, self.cap_s, self.attempt = first_s, cap_s, 0

    async def wait(self) -> None:
        delay = min(self.cap_s, self.first_s * (2**self.attempt))
        self.attempt += 1
        await asyncio.sleep(delay * (0.5 + random.random() / 2))  # noqa: S311 - jitter, not security


BatchFn = Callable[[list[RawRecord]], Awaitable[None]]
GiveUpFn = Callable[[RawRecord, BaseException, int], Awaitable[None]]
OnFaultFn = Callable[[BaseException], Awaitable[None]]


class Health:
    """What the readiness check reads: set by the loops when a passing fault holds them up."""

    def __init__(self) -> None:
        self.degraded: dict[str, str] = {}

    def fault(self, where: str, exc: BaseException) -> None:
        self.degraded[where] = f"{type(exc).__name__}: {exc}"[:300]

    def clear(self, where: str) -> None:
        self.degraded.pop(where, None)


async def process_with_retries(
    records: list[RawRecord],
    handle: BatchFn,
    give_up: GiveUpFn,
    *,
    where: str,
    health: Health,
    on_retry: Callable[[], None] | None = None,
    on_fault: OnFaultFn | None = None,
    max_attempts: int = 3,
) -> None:
    """Run `handle` on the batch until its effects are durable. Never raises but on cancellation.

    - A passing fault (database or broker away, read-only, a timeout, a deadlock: `shared.db.classify`): retry the
      same records with backoff, forever, after `on_fault` (which may drop the pool's stale connections).
    - Any other error on a batch: split it and run each record alone, so one poison record cannot hold the rest.
    - A single record failing for its own content (a data exception, an integrity violation): `give_up` at once;
      failing `max_attempts` times for another reason (a bug): `give_up`. Either way a dead letter.
    """
    backoff = Backoff()
    attempts = 0
    while True:
        try:
            await handle(records)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            fault = classify(exc)
            if fault is Fault.PASSING or isinstance(exc, KafkaError):
                health.fault(where, exc)
                if on_retry:
                    on_retry()
                log.warning("passing fault, retrying", extra={"where": where, "error": repr(exc)[:300]})
                await _after_fault(on_fault, exc, where)
                await backoff.wait()
                continue
            if len(records) > 1:
                log.warning("batch failed, isolating records", extra={"where": where, "error": repr(exc)[:300]})
                for record in records:
                    await process_with_retries(
                        [record],
                        handle,
                        give_up,
                        where=where,
                        health=health,
                        on_retry=on_retry,
                        on_fault=on_fault,
                        max_attempts=max_attempts,
                    )
                return
            attempts += 1
            if attempts < max_attempts and fault is not Fault.RECORD:
                await backoff.wait()
                continue
            log.exception("record failed for good, dead-lettering", extra={"where": where})
            await _give_up_durably(records[0], exc, attempts, give_up, where, health, on_fault)
            return
        else:
            health.clear(where)
            return


async def _after_fault(on_fault: OnFaultFn | None, exc: BaseException, where: str) -> None:
    if on_fault is None:
        return
    try:
        await on_fault(exc)
    except asyncio.CancelledError:
        raise
    except Exception as err:  # noqa: BLE001 - a failed clean-up must not stop the retries
        log.warning("clean-up after a fault failed", extra={"where": where, "error": repr(err)[:300]})


async def _give_up_durably(
    record: RawRecord,
    exc: BaseException,
    attempts: int,
    give_up: GiveUpFn,
    where: str,
    health: Health,
    on_fault: OnFaultFn | None = None,
) -> None:
    """Write the dead letter, retrying forever: its content is made storable (key and payload as bytes, text
    sanitized), so only a passing fault can stop it, and we must not move past the record until it is durable."""
    backoff = Backoff()
    while True:
        try:
            await give_up(record, exc, attempts)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - we must not move past the record until its dead letter is durable
            health.fault(where, err)
            log.warning("could not write the dead letter yet", extra={"where": where, "error": repr(err)[:300]})
            await _after_fault(on_fault, err, where)
            await backoff.wait()
        else:
            health.clear(where)
            return


def dead_letter_of(
    record: RawRecord, error_type: str, reason: str, now: datetime, *, service: str, attempts: int = 1
) -> DeadLetter:
    """The dead letter of a consumed record. Its id comes from (service, topic, partition, offset): a redelivery or a
    replay from offset 0 makes no second one, and two services giving up on the same record make two."""
    return DeadLetter(
        dead_letter_id=uuid5(NAMESPACE_URL, f"dlq:{service}:{record.topic}:{record.partition}:{record.offset}"),
        source_topic=record.topic,
        source_key=record.key_text,
        source_key_b64=None if record.key is None else base64.b64encode(record.key).decode("ascii"),
        source_partition=record.partition,
        source_offset=record.offset,
        service=service,
        reason=storable_text(mask_phones_in_text(reason)[:2000]),
        error_type=storable_text(error_type)[:100],
        first_seen_at=now,
        attempts=attempts,
        payload_b64=base64.b64encode(record.value).decode("ascii"),
    )


async def raw_decoder(msg: Any, original: Any = None) -> Any:
    """FastStream decoder that hands the handler raw bytes: parsing is the handler's job, so a record that does not
    parse becomes a dead letter instead of failing before the handler."""
    return msg.body
