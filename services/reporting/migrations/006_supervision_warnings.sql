-- Supervision items (督查事项, contract 10.3) and early warnings (防未病, 10.4), with the per-case rows both read.
CREATE SCHEMA IF NOT EXISTS reporting;

-- Every received case, as the watch consumer (consumer group `reporting-watch`) read it: what the weekly counts,
-- the enterprise rule and the opening of items need. A replay of complaints.received adds nothing.
CREATE TABLE reporting.watch_cases (
    complaint_id     text PRIMARY KEY,
    received_at      timestamptz NOT NULL,
    week             date        NOT NULL,  -- local Monday of the ISO week of received_at
    region_code      text        NOT NULL,
    category         text        NOT NULL,
    enterprise_field text,                  -- `uscc` or `enterprise_name`; null without an enterprise
    enterprise_value text,
    stored_at        timestamptz NOT NULL
);
CREATE INDEX watch_cases_region_week ON reporting.watch_cases (region_code, category, week);
CREATE INDEX watch_cases_category_week ON reporting.watch_cases (category, week);
CREATE INDEX watch_cases_enterprise ON reporting.watch_cases (enterprise_field, enterprise_value, received_at)
    WHERE enterprise_field IS NOT NULL;

CREATE TABLE reporting.supervision_items (
    item_id        text PRIMARY KEY,
    seq            bigserial   NOT NULL,
    phenomenon     text        NOT NULL
        CHECK (phenomenon IN ('corruption', 'judicial', 'government_integrity', 'law_enforcement')),
    complaint_ids  text[]      NOT NULL CHECK (cardinality(complaint_ids) >= 1),
    opened_at      timestamptz NOT NULL,
    opened_by      text        NOT NULL,
    reason         text,
    status         text        NOT NULL CHECK (status IN ('opened', 'supervising', 'transferred', 'concluded')),
    warn_at        timestamptz NOT NULL,
    due_at         timestamptz NOT NULL,
    warned_at      timestamptz,
    overdue_at     timestamptz,
    next_fire_at   timestamptz,            -- when the due time fires next (warning, then overdue); null when done
    transferred_to text,
    transfer_note  text,
    transferred_at timestamptz,
    follow_ups     jsonb       NOT NULL DEFAULT '[]',
    result         text,
    decided_by     text,
    concluded_at   timestamptz,
    updated_at     timestamptz NOT NULL,
    CHECK ((status = 'concluded') = (concluded_at IS NOT NULL)),
    CHECK (status <> 'concluded' OR (result IS NOT NULL AND decided_by IS NOT NULL)),
    CHECK (status <> 'transferred' OR transferred_to IS NOT NULL)
);
CREATE INDEX supervision_items_seq ON reporting.supervision_items (seq);
CREATE INDEX supervision_items_next_fire ON reporting.supervision_items (next_fire_at) WHERE next_fire_at IS NOT NULL;
CREATE INDEX supervision_items_complaints ON reporting.supervision_items USING gin (complaint_ids);

CREATE TABLE reporting.early_warnings (
    warning_id    text PRIMARY KEY,
    kind          text        NOT NULL CHECK (kind IN ('rising', 'enterprise_repeat')),
    key           jsonb       NOT NULL,
    week          date        NOT NULL,   -- local Monday of the ISO week
    count         integer     NOT NULL,
    baseline      double precision,
    p_value       double precision,
    complaint_ids text[]      NOT NULL,
    raised_at     timestamptz NOT NULL
);
CREATE INDEX early_warnings_week ON reporting.early_warnings (week);
