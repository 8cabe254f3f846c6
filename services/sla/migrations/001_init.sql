-- The clock's schema: policies copied onto cases, what the clock knows of each case, the deadlines the
-- scheduler fires, the facts already processed, dead letters and the outbox.

-- Every SLA policy that was ever in force, by the digest of its JSON: a case keeps the one it opened under.
CREATE TABLE policies (
    policy_id     text PRIMARY KEY,        -- sha256 of the policy's canonical JSON (first 32 hex digits)
    body          jsonb       NOT NULL,
    first_used_at timestamptz NOT NULL
);

CREATE TABLE cases (
    complaint_id text PRIMARY KEY,
    policy_id    text REFERENCES policies,  -- null only for the instant between claiming the row and saving it
    closed       boolean     NOT NULL DEFAULT false,
    clock        jsonb,                     -- clockwork.CaseClock: rounds, pauses, extension, parked facts
    updated_at   timestamptz NOT NULL
);

CREATE TABLE deadlines (
    id           bigserial PRIMARY KEY,
    complaint_id text        NOT NULL,
    stage        text        NOT NULL CHECK (stage IN ('accept', 'first_contact', 'resolve', 'callback')),
    round        integer     NOT NULL CHECK (round >= 1),
    department   text        NOT NULL,
    started_at   timestamptz NOT NULL,
    due_at       timestamptz NOT NULL,
    warn_at      timestamptz NOT NULL,
    state        text        NOT NULL CHECK (state IN ('pending', 'paused', 'met', 'breached', 'superseded')),
    next_fire_at timestamptz,                -- when the scheduler looks at it next; null once nothing is left to fire
    warned_for   timestamptz,                -- the warn_at whose warning went out
    settled_at   timestamptz,                -- met, superseded, or (breached) when the stage was finally done
    set_event_id text,                       -- the deadline_set that announced the current due
    updated_at   timestamptz NOT NULL,
    UNIQUE (complaint_id, stage, round),
    CHECK ((next_fire_at IS NULL) = (state <> 'pending'))
);
-- The scheduler's queue: only rows that still have something to fire are in it.
CREATE INDEX deadlines_next_fire ON deadlines (next_fire_at) WHERE next_fire_at IS NOT NULL;
-- The sla_overdue_open gauge: breached and not yet done.
CREATE INDEX deadlines_overdue_open ON deadlines (department, stage) WHERE state = 'breached' AND settled_at IS NULL;

-- Idempotence: every consumed event once (event_id), in the same transaction as its effect.
CREATE TABLE processed (
    event_id     uuid PRIMARY KEY,
    topic        text        NOT NULL,
    processed_at timestamptz NOT NULL
);
CREATE INDEX processed_at ON processed (processed_at);

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
