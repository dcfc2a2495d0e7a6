"""The orchestrator's first hop written with Quix Streams: the peer in benchmarks/hops.py.

InitiatePayment commands in (as the gate admits them: Avro single-object encoding, CloudEvents headers),
a PaymentInitiated-like event out, per-payment state in between, exactly once:

- the record's envelope is read (the required ce_* headers, ce_type, ce_id against the command's id);
- the value is decoded as the project's serde does it: the C3 01 marker, the writer schema found by its
  8-byte fingerprint among every version in schemas/, the Avro body read with fastavro (schemaless) into
  the latest version, all of the body consumed;
- the command is validated as the saga validates an InitiatePayment (ids, idempotency key, accounts,
  currency and amount limit, partner, requested_at within the retention and the clock skew);
- a stateful step keyed by the record key (the payment id) keeps the payment's state: a payment already
  initiated emits nothing again, a new one is stored as INITIATED with its terms (one state key, so one
  changelog record per payment, as the orchestrator writes one snapshot);
- the event (request hash, a derived event id, seq 1) is encoded with fastavro against
  schemas/payments.events.PaymentInitiated, framed as a single object, with CloudEvents headers.

A record that fails any of that is dropped (counted in the log), where the orchestrator would emit a
PaymentRejected or a dead letter: the benchmark's input is all valid. The orchestrator also issues the
risk command of each payment, a second output this peer does not make.

It cannot import the project: quixstreams 3.28.1 pins confluent-kafka<2.13 and the project runs 2.16.1,
so this runs in its own venv, made by `benchmarks/hops.py` (`peer_python`). Application settings:
processing_guarantee exactly-once, auto_offset_reset earliest, a checkpoint (one transaction) every
`--batch` records or 0.5 s, the producer tuned as the services' (linger.ms 5, retry.backoff.ms 20, the
murmur2 partitioner), changelog topics on (Quix's default), the state in `--state-dir`. It runs until
SIGTERM (hops.py sends it once the consumer group has committed every record).

    <peer venv>/bin/python benchmarks/peer_quix.py BOOTSTRAP INPUT OUTPUT GROUP --state-dir DIR [--batch 500]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import re
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form
from quixstreams import Application
from quixstreams.state import State

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
COMMAND = "payments.commands.InitiatePayment"
EVENT = "payments.events.PaymentInitiated"
MAGIC = b"\xc3\x01"
HEADER_BYTES = 10  # the marker and the 8-byte fingerprint
REQUIRED_HEADERS = ("ce_specversion", "ce_id", "ce_type", "ce_source", "ce_time", "content-type")
UUID_PATTERN = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
ACCOUNT_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CURRENCY_EXPONENTS = {"EUR": 2, "USD": 2, "GBP": 2, "CHF": 2, "SEK": 2, "NOK": 2, "DKK": 2, "PLN": 2, "JPY": 0,
                      "BHD": 3, "KWD": 3}
AMOUNT_MAJOR_MAX = 1_000_000
PARTNERS = frozenset({"simbank"})
RETENTION = timedelta(days=7)
CLOCK_SKEW = timedelta(minutes=5)
NAMESPACE = uuid.UUID("6f1c3f5e-8a52-4c1e-9d0b-2b8f0e7f4a10")
log = logging.getLogger("peer")


class Schema:
    def __init__(self, path: Path) -> None:
        raw = json.loads(path.read_text())
        self.parsed = parse_schema(raw, named_schemas={})
        canonical = to_parsing_canonical_form(parse_schema(raw, named_schemas={}))
        self.fingerprint = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


def versions(name: str) -> list[Schema]:
    """Every version of a record, oldest first."""
    paths = sorted((SCHEMAS / name).glob("v*.avsc"), key=lambda path: int(path.stem[1:]))
    return [Schema(path) for path in paths]


class Initiate:
    """The stateful step: InitiatePayment record -> (headers, PaymentInitiated value), or None."""

    def __init__(self) -> None:
        commands = versions(COMMAND)
        self.writers = {schema.fingerprint: schema.parsed for schema in commands}
        self.reader = commands[-1].parsed
        self.event = versions(EVENT)[-1]
        self.dropped = 0

    def __call__(self, value: bytes, key: bytes, timestamp: int, headers: Any,
                 state: State) -> tuple[list[tuple[str, bytes]], bytes] | None:
        try:
            envelope = self.envelope(headers)
            command = self.decode(value)
            if envelope["ce_type"] != COMMAND or envelope["ce_id"] != command["command_id"]:
                raise ValueError("the headers describe another message")
            if key.decode() != command["payment_id"]:
                raise ValueError("key mismatch")
            now = datetime.now(UTC)
            problem = self.problem(command, now)
            if problem:
                raise ValueError(problem)
        except (ValueError, KeyError, EOFError, UnicodeDecodeError) as error:
            self.dropped += 1
            log.warning("dropped: %s", error)
            return None
        if state.get("saga") is not None:
            return None  # initiated already: the same request again changes nothing
        digest = request_hash(command)
        state.set("saga", {"status": "INITIATED", "seq": 1, "idempotency_key": command["idempotency_key"],
                           "request_hash": digest, "payer_account": command["payer_account"],
                           "payee_account": command["payee_account"], "amount": command["amount"],
                           "partner": command["partner"]})
        event_id = str(uuid.uuid5(NAMESPACE, f"event:{command['payment_id']}:1:{envelope['ce_id']}"))
        event = {"payment_id": command["payment_id"], "event_id": event_id, "seq": 1, "occurred_at": now,
                 "causation_id": envelope["ce_id"], "payer_account": command["payer_account"],
                 "payee_account": command["payee_account"], "amount": command["amount"],
                 "partner": command["partner"], "reference": command["reference"],
                 "idempotency_key": command["idempotency_key"], "request_hash": digest}
        out = io.BytesIO()
        out.write(MAGIC + self.event.fingerprint)
        schemaless_writer(out, self.event.parsed, event)
        moment = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        out_headers = [("ce_specversion", b"1.0"), ("ce_id", event_id.encode()), ("ce_type", EVENT.encode()),
                       ("ce_source", b"orchestrator"), ("ce_time", moment.encode()),
                       ("content-type", b"application/avro")]
        if envelope.get("traceparent"):
            out_headers.append(("traceparent", envelope["traceparent"].encode()))
        return out_headers, out.getvalue()

    @staticmethod
    def envelope(headers: Any) -> dict[str, str]:
        found: dict[str, str] = {}
        for name, raw in headers or ():
            if name not in found and raw is not None:
                found[name] = raw.decode() if isinstance(raw, bytes) else raw
        for name in REQUIRED_HEADERS:
            if not found.get(name):
                raise ValueError(f"missing header {name}")
        if found["ce_specversion"] != "1.0":
            raise ValueError("unsupported specversion")
        if datetime.fromisoformat(found["ce_time"]).tzinfo is None:
            raise ValueError("ce_time has no offset")
        return found

    def decode(self, value: bytes) -> dict[str, Any]:
        if len(value) < HEADER_BYTES or value[:2] != MAGIC:
            raise ValueError("not a single-object Avro record")
        writer = self.writers.get(bytes(value[2:HEADER_BYTES]))
        if writer is None:
            raise ValueError("unknown writer schema")
        body = io.BytesIO(value[HEADER_BYTES:])
        datum = schemaless_reader(body, writer, self.reader)
        if body.tell() != len(value) - HEADER_BYTES:
            raise ValueError("trailing bytes")
        if not isinstance(datum, dict):
            raise ValueError("not a record")
        return datum

    @staticmethod
    def problem(command: dict[str, Any], now: datetime) -> str | None:  # noqa: PLR0911 - one per reason
        """Why the saga would reject the command, or None."""
        requested_at = command["requested_at"]
        if requested_at <= now - RETENTION or requested_at > now + CLOCK_SKEW:
            return "requested_at out of range"
        if not UUID_PATTERN.match(command["payment_id"]) or not UUID_PATTERN.match(command["command_id"]):
            return "malformed id"
        key = command["idempotency_key"]
        if not key.strip() or len(key) > 255:
            return "bad idempotency key"
        payer, payee = command["payer_account"], command["payee_account"]
        if not ACCOUNT_PATTERN.match(payer) or not ACCOUNT_PATTERN.match(payee) or payer == payee:
            return "bad accounts"
        amount = command["amount"]
        exponent = CURRENCY_EXPONENTS.get(amount["currency"])
        if exponent is None:
            return "unknown currency"
        if not 0 < amount["amount_minor"] <= AMOUNT_MAJOR_MAX * 10**exponent:
            return "amount out of range"
        if command["partner"] not in PARTNERS:
            return "unknown partner"
        return None


def request_hash(command: dict[str, Any]) -> str:
    """As orchestrator.commands.request_hash."""
    fields = (command["payment_id"], command["payer_account"], command["payee_account"],
              str(command["amount"]["amount_minor"]), command["amount"]["currency"], command["partner"],
              command["reference"] or "")
    return hashlib.sha256("\x1f".join(fields).encode()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bootstrap")
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("group")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    app = Application(
        broker_address=args.bootstrap, consumer_group=args.group, processing_guarantee="exactly-once",
        auto_offset_reset="earliest", commit_every=args.batch, commit_interval=0.5, consumer_poll_timeout=0.1,
        state_dir=args.state_dir,
        producer_extra_config={"linger.ms": 5, "retry.backoff.ms": 20, "partitioner": "murmur2_random"},
        consumer_extra_config={"isolation.level": "read_committed"})
    source = app.topic(args.input, key_deserializer="bytes", value_deserializer="bytes")
    sink = app.topic(args.output, key_serializer="bytes", value_serializer="bytes")
    step = Initiate()
    sdf = app.dataframe(source)
    sdf = sdf.apply(step, stateful=True, metadata=True)
    sdf = sdf.filter(lambda made: made is not None)
    sdf = sdf.set_headers(lambda made, key, timestamp, headers: made[0])
    sdf = sdf.apply(lambda made: made[1])
    sdf.to_topic(sink)
    app.run()
    log.info("stopped; %d records dropped", step.dropped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
