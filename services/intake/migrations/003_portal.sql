-- The portal, visits and surveys (contract 10.1, 10.2): tracking numbers, the 10-minute same-submission window,
-- the visits and survey responses as taken, and the case states intake shows, kept from complaints.lifecycle.

-- The day's last tracking sequence (local date): PT + day + sequence.
CREATE TABLE portal_sequences (
    day      date   PRIMARY KEY,
    last_seq bigint NOT NULL
);

CREATE TABLE portal_submissions (
    tracking_number text PRIMARY KEY,
    complaint_id    text        NOT NULL UNIQUE,
    client_address  text        NOT NULL,
    fingerprint     text        NOT NULL,   -- sha256 of enterprise, title and content
    submitted_at    timestamptz NOT NULL
);
CREATE INDEX portal_submissions_recent ON portal_submissions (client_address, fingerprint, submitted_at);

CREATE TABLE visits (
    visit_id    text PRIMARY KEY,
    kind        text        NOT NULL,
    held_at     timestamptz NOT NULL,
    region_code text        NOT NULL,
    problems    integer     NOT NULL,       -- its complaints are visit:<visit_id>#1 .. #problems
    detail      jsonb       NOT NULL,       -- officials and enterprises
    accepted_at timestamptz NOT NULL,
    via         text        NOT NULL
);

CREATE TABLE survey_responses (
    response_id text PRIMARY KEY,           -- dedupe: the same response twice is one
    answered_at timestamptz NOT NULL,
    event       jsonb       NOT NULL,       -- the survey.responded published for it
    accepted_at timestamptz NOT NULL,
    via         text        NOT NULL
);

-- What the tracking page and the visit listing show of the portal's, visits' and surveys' cases: the latest
-- lifecycle state and the latest resolve note. Intake's own copy, as any consumer of complaints.lifecycle may keep.
CREATE TABLE case_states (
    complaint_id    text PRIMARY KEY,
    state           text        NOT NULL,
    lead_department text,
    changed_at      timestamptz NOT NULL,   -- the fact's `at` (else its occurred_at)
    recorded_at     timestamptz NOT NULL,   -- its occurred_at: orders facts with the same `at`
    note            text,
    note_at         timestamptz
);
