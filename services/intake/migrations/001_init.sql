-- Intake's schema: one row per complaint (dedupe on channel + source id), dead letters, and the outbox.
CREATE TABLE complaints (
    complaint_id  text PRIMARY KEY,          -- <channel>:<source id>: the dedupe key, across Kafka and HTTP
    channel       text        NOT NULL,
    source_id     text        NOT NULL,
    event_id      uuid        NOT NULL UNIQUE,
    received_at   timestamptz NOT NULL,
    accepted_at   timestamptz NOT NULL,      -- when intake took it in
    via           text        NOT NULL,      -- kafka | http
    event         jsonb       NOT NULL       -- the canonical complaint.received, for republishing
);
CREATE INDEX complaints_received_at ON complaints (received_at);

CREATE TABLE dead_letters (
    dead_letter_id   uuid PRIMARY KEY,
    source_topic     text        NOT NULL,
    source_partition integer,
    source_offset    bigint,
    source_key       text,
    error_type       text        NOT NULL,
    reason           text        NOT NULL,
    first_seen_at    timestamptz NOT NULL,
    attempts         integer     NOT NULL,
    payload          bytea       NOT NULL
);
-- A record redelivered or replayed from offset 0 gives no second dead letter.
CREATE UNIQUE INDEX dead_letters_source ON dead_letters (source_topic, source_partition, source_offset)
    WHERE source_offset IS NOT NULL;

CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    topic      text        NOT NULL,
    key        bytea,
    value      bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
