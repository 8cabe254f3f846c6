-- What the monthly bulletin lists of an overdue case, kept on the case row by the fold (projections.fold_case):
-- the complaint's title, and its standing breach (the breached deadline not since met nor done whose due is the
-- earliest) while the case is open. Rows folded before this migration get them when their case is next folded.
ALTER TABLE cases
    ADD COLUMN title          text,
    ADD COLUMN overdue_stage  text,           -- accept, first_contact or resolve; null when not overdue
    ADD COLUMN overdue_due_at timestamptz;    -- the due of that stage; null when not overdue

-- The bulletin's "most overdue first": the earliest dues among the (few) overdue cases.
CREATE INDEX cases_overdue ON cases (overdue_due_at, complaint_id) WHERE overdue_due_at IS NOT NULL;
