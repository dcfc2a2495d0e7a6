-- A bare machine-readable reason code beside the human-readable reason, as on payments.dlq
-- (dlq_reason_code / dlq_detail). Rows written before this migration keep it NULL.
ALTER TABLE projection_dead_letters ADD COLUMN reason_code text;
