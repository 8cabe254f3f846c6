-- Routing's schema: cases with their state-machine snapshot, assignments, each case's facts in order, the
-- processed-message table (idempotence), routing's read model of the SLA deadlines, posted rule sets, dead
-- letters and the outbox.

CREATE TABLE cases (
    complaint_id          text PRIMARY KEY,
    channel               text        NOT NULL,
    category              text        NOT NULL,
    region_code           text        NOT NULL,
    urgency               text        NOT NULL,
    received_at           timestamptz NOT NULL,
    received_event_id     uuid        NOT NULL,
    state                 text        NOT NULL,          -- the effective state (a case the desk holds: triage)
    round                 integer     NOT NULL,
    lead_department       text,
    assisting_departments text[]      NOT NULL DEFAULT '{}',
    level                 text,
    rule_id               text,
    assigned_at           timestamptz,                    -- of the latest assignment
    snapshot              jsonb       NOT NULL,          -- lifecycle.CaseSnapshot, the state machine's memory
    complaint             jsonb       NOT NULL,          -- the complaint.received event as it came
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL
);
CREATE INDEX cases_lead_state ON cases (lead_department, state);
CREATE INDEX cases_assisting ON cases USING gin (assisting_departments);
CREATE INDEX cases_open ON cases (lead_department, state) WHERE state <> 'closed';

-- Every assignment made (派单), round by round: who holds or held a case, and by which rule.
CREATE TABLE assignments (
    assignment_id         text PRIMARY KEY,
    event_id              uuid        NOT NULL UNIQUE,
    complaint_id          text        NOT NULL,
    round                 integer     NOT NULL,
    lead_department       text        NOT NULL,
    assisting_departments text[]      NOT NULL,
    level                 text        NOT NULL,
    rule_id               text        NOT NULL,
    rules_version         text,                           -- null for a manual placement
    reason                text        NOT NULL,
    assigned_at           timestamptz NOT NULL,
    causation_id          text
);
CREATE INDEX assignments_complaint ON assignments (complaint_id, assigned_at);
CREATE INDEX assignments_lead ON assignments (lead_department, complaint_id);
CREATE INDEX assignments_assisting ON assignments USING gin (assisting_departments);

-- A case's facts in the order routing took them: received, assigned, action, callback, lifecycle, sla.
CREATE TABLE case_events (
    id           bigserial PRIMARY KEY,
    complaint_id text        NOT NULL,
    kind         text        NOT NULL,
    at           timestamptz,
    recorded_at  timestamptz NOT NULL,
    body         jsonb       NOT NULL
);
CREATE INDEX case_events_complaint ON case_events (complaint_id, id);

-- Idempotence: one row per message taken (received:<event_id>, action:<action_id>, callback:<id>@<time>,
-- sla:<event_id>), written in the same transaction as its effects. `outcome` is what an HTTP caller is told again.
CREATE TABLE processed (
    message_key  text PRIMARY KEY,
    complaint_id text,
    fingerprint  text,
    outcome      jsonb,
    processed_at timestamptz NOT NULL
);

-- Routing's read model of the deadlines the sla service sets (complaints.sla); the sla service owns the clock.
CREATE TABLE deadlines (
    complaint_id  text        NOT NULL,
    stage         text        NOT NULL,
    round         integer     NOT NULL,
    department    text        NOT NULL,
    due_at        timestamptz NOT NULL,
    status        text        NOT NULL,                  -- set | warning | breached | met
    escalate_to   text,
    late          boolean     NOT NULL DEFAULT false,
    updated_at    timestamptz NOT NULL,
    last_event_id uuid        NOT NULL,
    PRIMARY KEY (complaint_id, stage, round)
);

-- Rule sets posted by an administrator (the rules file is the base set and is not stored).
CREATE TABLE rule_sets (
    version        text PRIMARY KEY,
    effective_from timestamptz NOT NULL UNIQUE,
    yaml           text        NOT NULL,
    created_at     timestamptz NOT NULL,
    created_by     text        NOT NULL
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
