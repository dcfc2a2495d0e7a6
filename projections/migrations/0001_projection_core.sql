-- Exactly-once bookkeeping shared by every projection, and the payment-status read model.

-- Consumed positions, written in the same transaction as the read-model change they cover.
-- next_offset is the next offset to read (last applied + 1), as Kafka commits it.
CREATE TABLE projection_offsets (
    projection   text        NOT NULL,
    topic        text        NOT NULL,
    partition    integer     NOT NULL CHECK (partition >= 0),
    next_offset  bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, topic, partition)
);

-- Records a projection could not decode: kept with the original bytes, never dropped.
CREATE TABLE projection_dead_letters (
    id            bigserial   PRIMARY KEY,
    projection    text        NOT NULL,
    topic         text        NOT NULL,
    partition     integer     NOT NULL,
    "offset"      bigint      NOT NULL,
    record_key    bytea,
    record_value  bytea,
    headers       jsonb       NOT NULL DEFAULT '[]',
    error_class   text        NOT NULL,
    reason        text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (projection, topic, partition, "offset")
);

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
