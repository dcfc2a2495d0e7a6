-- Exactly-once bookkeeping shared by every projection (the payment-status read model is 0004).

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
