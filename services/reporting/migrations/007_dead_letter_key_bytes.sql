-- A dead letter keeps its record's key as bytes, as in the other services (their 002): a key that is not UTF-8
-- text (a NUL byte, an invalid sequence) must never make storing its dead letter fail. Keys stored before this
-- migration arrived as bytes into a text column and read `\x…` (hex); they are decoded back to their bytes.
ALTER TABLE dead_letters ALTER COLUMN source_key TYPE bytea
    USING CASE WHEN source_key LIKE '\x%' THEN decode(substr(source_key, 3), 'hex')
               ELSE convert_to(source_key, 'UTF8') END;
-- Retention: dead letters are pruned by age (DEAD_LETTER_RETENTION_DAYS), in batches, oldest first.
CREATE INDEX dead_letters_first_seen_at ON dead_letters (first_seen_at);
