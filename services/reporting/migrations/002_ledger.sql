-- The rectification ledger (整改台账, contract section 8): one row per item, updated in place on re-import.
CREATE SCHEMA IF NOT EXISTS reporting;

CREATE TABLE reporting.ledger_items (
    item_id     text PRIMARY KEY,
    seq         bigserial   NOT NULL,  -- first-seen order: the ledger lists and exports items as they were imported
    source      text        NOT NULL,
    source_year integer,               -- ledger.source_year(source): first four digits; null when it has none
    area        text        NOT NULL,
    problem     text        NOT NULL,
    measures    text        NOT NULL DEFAULT '',
    departments text[]      NOT NULL CHECK (cardinality(departments) >= 1),
    due_date    date        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('open', 'in_progress', 'closed')),
    closed_at   timestamptz,
    evidence    text,
    approved_by text,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    CHECK ((status = 'closed') = (closed_at IS NOT NULL)),
    CHECK (status <> 'closed' OR (evidence IS NOT NULL AND approved_by IS NOT NULL))
);
CREATE INDEX ledger_items_seq ON reporting.ledger_items (seq);
-- The earlier items that make an item recurring are those of the year before its source's.
CREATE INDEX ledger_items_source_year ON reporting.ledger_items (source_year);
CREATE INDEX ledger_items_departments ON reporting.ledger_items USING gin (departments);
