-- The HTTP intake's Idempotency-Key store (intake/http/idempotency.py): one row per (client, key), the
-- request first made under it and, once answered, the answer a retry gets again. Not a read model: no
-- projection owns it and nothing rebuilds it; rows past PAYMENTS_IDEMPOTENCY_WINDOW_S are deleted.
CREATE TABLE http_idempotency (
    client           text        NOT NULL,
    idempotency_key  text        NOT NULL,
    request_hash     text        NOT NULL,
    operation        text        NOT NULL CHECK (operation IN ('initiate', 'cancel', 'refund')),
    payment_id       text        NOT NULL,
    state            text        NOT NULL CHECK (state IN ('in_progress', 'done')),
    response_status  integer,
    response_body    jsonb,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    PRIMARY KEY (client, idempotency_key),
    CHECK ((state = 'done') = (response_status IS NOT NULL AND response_body IS NOT NULL))
);
CREATE INDEX http_idempotency_created_idx ON http_idempotency (created_at);
CREATE INDEX http_idempotency_payment_idx ON http_idempotency (payment_id);
