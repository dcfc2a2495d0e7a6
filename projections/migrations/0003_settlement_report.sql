-- Settlement report read model (projection "settlement_report"): totals per UTC day of
-- settled_at, currency and partner. Created unqualified so `payments replay` can rebuild it in
-- a fresh schema (see 0002_ledger.sql).

CREATE TABLE settlement_report (
    day             date    NOT NULL,
    currency        char(3) NOT NULL,
    partner         text    NOT NULL,
    settled_count   bigint  NOT NULL DEFAULT 0 CHECK (settled_count >= 0),
    settled_minor   bigint  NOT NULL DEFAULT 0 CHECK (settled_minor >= 0),
    refunded_count  bigint  NOT NULL DEFAULT 0 CHECK (refunded_count >= 0),
    refunded_minor  bigint  NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0),
    PRIMARY KEY (day, currency, partner)
);

-- Settlement events already counted: a replayed event is a no-op.
CREATE TABLE settlement_report_applied (
    event_id  text PRIMARY KEY
);
