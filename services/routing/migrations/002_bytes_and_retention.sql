-- A dead letter keeps its record's key as bytes: a key that is not UTF-8 text (a NUL byte, an invalid sequence)
-- must never make storing its dead letter fail, or the record would be retried for ever and stall its partition.
ALTER TABLE dead_letters ALTER COLUMN source_key TYPE bytea USING convert_to(source_key, 'UTF8');
-- Retention: dead letters are pruned by age (DEAD_LETTER_RETENTION_DAYS), in batches, oldest first.
CREATE INDEX dead_letters_first_seen_at ON dead_letters (first_seen_at);
-- Retention: processed-message rows of complaint.received are pruned by age (PROCESSED_RETENTION_DAYS); the case
-- row (complaint_id) dedupes a replayed complaint. Action, callback and sla keys are the natural keys of those facts
-- and are kept.
CREATE INDEX processed_received_at ON processed (processed_at) WHERE message_key LIKE 'received:%';
