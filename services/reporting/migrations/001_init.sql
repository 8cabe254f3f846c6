-- The reporting read model: every fact of a case kept by event id (a replay adds nothing), each case's current
-- contribution to the rollups, and the rollups per (local day, dimension, key) that the summary adds up.

-- The project's own facts (complaints.received, .assigned, .lifecycle, .sla), one row per event id.
CREATE TABLE facts (
    event_id     uuid PRIMARY KEY,
    complaint_id text        NOT NULL,
    topic        text        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    body         jsonb       NOT NULL,      -- the event as read (unknown fields dropped)
    stored_at    timestamptz NOT NULL
);
CREATE INDEX facts_complaint ON facts (complaint_id);

-- What each case is counted as now: folded from its facts by projections.fold_case.
CREATE TABLE cases (
    complaint_id    text PRIMARY KEY,
    received_at     timestamptz,             -- null until its complaint.received has been read
    received_day    date,                    -- local (Asia/Shanghai) date of received_at
    channel         text,
    region_code     text,
    category        text,
    department      text,                    -- lead of the latest assignment, `unassigned` before one
    enterprise_key  text,                    -- uscc, else the enterprise's name: what repeats group on
    enterprise_name text,
    uscc            text,
    contribution    jsonb       NOT NULL,    -- [[dimension, key, [counts…]], …] added to the rollups of received_day
    updated_at      timestamptz NOT NULL
);
CREATE INDEX cases_received_day ON cases (received_day);
CREATE INDEX cases_enterprise ON cases (enterprise_key, category) WHERE enterprise_key IS NOT NULL;

-- Counts per local day of receipt, dimension (department, channel, region, category, total) and key.
-- Kept in the projection's transaction: old contribution subtracted, new one added.
CREATE TABLE rollups (
    day                     date    NOT NULL,
    dimension               text    NOT NULL,
    key                     text    NOT NULL,
    received                integer NOT NULL DEFAULT 0,
    resolved                integer NOT NULL DEFAULT 0,
    closed                  integer NOT NULL DEFAULT 0,
    overdue_open            integer NOT NULL DEFAULT 0,
    on_time                 integer NOT NULL DEFAULT 0,
    on_time_after_extension integer NOT NULL DEFAULT 0,
    late                    integer NOT NULL DEFAULT 0,
    assignments             integer NOT NULL DEFAULT 0,
    accepted_on_time        integer NOT NULL DEFAULT 0,
    response_base           integer NOT NULL DEFAULT 0,
    returns                 integer NOT NULL DEFAULT 0,
    returns_overturned      integer NOT NULL DEFAULT 0,
    callbacks               integer NOT NULL DEFAULT 0,
    satisfied               integer NOT NULL DEFAULT 0,
    solved                  integer NOT NULL DEFAULT 0,
    contacted_on_time       integer NOT NULL DEFAULT 0,
    contact_base            integer NOT NULL DEFAULT 0,
    PRIMARY KEY (dimension, day, key)
);

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
CREATE UNIQUE INDEX dead_letters_source ON dead_letters (source_topic, source_partition, source_offset)
    WHERE source_offset IS NOT NULL;

CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    topic      text        NOT NULL,
    key        bytea,
    value      bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
