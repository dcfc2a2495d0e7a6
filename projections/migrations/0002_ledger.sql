-- Double-entry ledger read model (projection "ledger").
--
-- Sign convention: postings.amount_minor is signed, CREDIT POSITIVE, DEBIT NEGATIVE. Customer
-- accounts are liabilities of the platform, so a customer balance is positive when we owe the
-- customer money. An entry balances when its postings sum to zero per currency.
--
-- Every object here is created unqualified: `payments replay ledger` runs this same file with
-- search_path set to a fresh schema to rebuild the tables beside the live ones, then swaps them.
-- The trigger function refers to `postings` unqualified for the same reason: it resolves through
-- the writer's search_path (the live tables normally, the rebuilt ones inside a replay).

-- Parties of each payment, from PaymentInitiated: later events (FundsReserved, FundsCommitted,
-- PaymentRefunded) name only the payment, and the posting rules need its accounts and partner.
CREATE TABLE ledger_payments (
    payment_id     text    PRIMARY KEY,
    payer_account  text    NOT NULL,
    payee_account  text    NOT NULL,
    partner        text    NOT NULL,
    currency       char(3) NOT NULL
);

-- The chart of accounts, filled on first use: customer:<acc>:available, customer:<acc>:held,
-- partner:<name>:clearing.
CREATE TABLE ledger_accounts (
    account   text    NOT NULL,
    currency  char(3) NOT NULL,
    kind      text    NOT NULL CHECK (kind IN ('customer_available', 'customer_held', 'partner_clearing')),
    PRIMARY KEY (account, currency)
);

-- One entry per applied event: the unique source_event_id makes a replayed event a no-op.
-- entry_id is derived from the event id (uuid5), so a rebuild produces identical rows.
CREATE TABLE journal_entries (
    entry_id         uuid        PRIMARY KEY,
    source_event_id  text        NOT NULL UNIQUE,
    payment_id       text        NOT NULL,
    kind             text        NOT NULL,
    occurred_at      timestamptz NOT NULL
);
CREATE INDEX journal_entries_payment_idx ON journal_entries (payment_id);

CREATE TABLE postings (
    entry_id      uuid    NOT NULL REFERENCES journal_entries (entry_id),
    line          integer NOT NULL CHECK (line >= 1),
    account       text    NOT NULL,
    currency      char(3) NOT NULL,
    amount_minor  bigint  NOT NULL CHECK (amount_minor <> 0),
    PRIMARY KEY (entry_id, line),
    FOREIGN KEY (account, currency) REFERENCES ledger_accounts (account, currency)
);
CREATE INDEX postings_account_idx ON postings (account, currency);

-- Saga events that needed a payment's parties that were never seen (no PaymentInitiated
-- before them on the topic, e.g. after retention dropped it): kept for an operator, not posted.
CREATE TABLE ledger_unposted (
    source_event_id  text PRIMARY KEY,
    payment_id       text NOT NULL,
    event_type       text NOT NULL,
    reason           text NOT NULL
);

-- Sum of postings per account and currency, maintained in the same transaction as the postings.
CREATE TABLE account_balances (
    account        text    NOT NULL,
    currency       char(3) NOT NULL,
    balance_minor  bigint  NOT NULL,
    PRIMARY KEY (account, currency),
    FOREIGN KEY (account, currency) REFERENCES ledger_accounts (account, currency)
);

-- Refuses, at commit, any journal entry with fewer than two postings or whose postings do not
-- sum to zero per currency. Deferred: an entry and its postings are written by separate
-- statements, and only the committed whole must balance.
CREATE FUNCTION ledger_check_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    checked uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.entry_id ELSE NEW.entry_id END;
    lines integer;
    bad_currency text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM journal_entries WHERE entry_id = checked) THEN
        RETURN NULL;  -- the whole entry was deleted in this transaction
    END IF;
    SELECT count(*) INTO lines FROM postings WHERE entry_id = checked;
    IF lines < 2 THEN
        RAISE EXCEPTION 'journal entry % has % posting(s); at least 2 are required', checked, lines
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT currency INTO bad_currency FROM postings WHERE entry_id = checked
        GROUP BY currency HAVING sum(amount_minor) <> 0 LIMIT 1;
    IF bad_currency IS NOT NULL THEN
        RAISE EXCEPTION 'journal entry % does not balance in %', checked, bad_currency
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER journal_entries_balanced
    AFTER INSERT OR UPDATE ON journal_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_entry_balanced();

CREATE CONSTRAINT TRIGGER postings_balanced
    AFTER INSERT OR UPDATE OR DELETE ON postings
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_entry_balanced();
