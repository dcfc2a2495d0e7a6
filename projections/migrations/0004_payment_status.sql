-- Payment status read model (projection "payment_status"): the current state of each payment
-- and its full timeline. Created unqualified so `payments replay payment_status` can rebuild it in
-- a fresh schema (see 0002_ledger.sql).

-- Current state of each payment.
CREATE TABLE payment_status (
    payment_id      text        PRIMARY KEY,
    status          text        NOT NULL,
    payer_account   text,
    payee_account   text,
    amount_minor    bigint      CHECK (amount_minor > 0),
    currency        char(3),
    partner         text,
    last_seq        bigint      NOT NULL CHECK (last_seq >= 1),
    last_event_type text        NOT NULL,
    reason_code     text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX payment_status_status_idx ON payment_status (status);

-- Every event of every payment; the unique event id makes a replayed event a no-op.
CREATE TABLE payment_timeline (
    event_id     text        PRIMARY KEY,
    payment_id   text        NOT NULL,
    seq          bigint      NOT NULL,
    event_type   text        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    detail       jsonb       NOT NULL,
    UNIQUE (payment_id, seq)
);
