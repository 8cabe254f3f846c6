-- The projection's speed (docs/reporting.md, "Performance"): each case keeps its folded state, the compact facts
-- the fold reads (projections.fold_state_to_json), so a batch folds a touched case from that state plus its new
-- facts instead of reading back and re-validating every stored fact of it. Null (a case stored before this
-- migration, or loaded in bulk): the projection folds it once from `facts` and keeps the state from then on.
-- `json`, not `jsonb`: written and read whole by the projection only, so its text is kept as is (no conversion).
ALTER TABLE cases ADD COLUMN fold_state json;
