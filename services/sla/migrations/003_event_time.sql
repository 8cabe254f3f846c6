-- Judging by event time (docs/sla.md): a deadline remembers the `breached` event that went out for it, so a fact
-- that happened in time but was read after the breach can name the breach its `met` supersedes.
ALTER TABLE deadlines ADD COLUMN breach_event_id text;
