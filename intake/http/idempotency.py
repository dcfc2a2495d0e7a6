"""Idempotency-Key over HTTP: a request's fingerprint, the ids derived from (client, key), and the store.

The store keeps one row per (client, key) in PostgreSQL (`http_idempotency`, migration
0006_http_idempotency.sql): the fingerprint of the request first made under the key, its state and,
once answered, its response. `begin` decides what a request under a key gets:
  1. no row, or a row older than the window: CLAIMED, the caller makes the request;
  2. a row with another fingerprint: MISMATCH (422: one key, one request);
  3. a row answered: REPLAY, the stored status and body are the answer;
  4. a row in progress: IN_PROGRESS (409, retry later), unless its claim is older than the lease, i.e.
     the process that claimed it died: then this request takes it over (CLAIMED). Every id of the
     command is derived from (client, key), so taking over re-sends the very same command, which the
     Kafka intake recognises (docs/contracts.md §2a), never a second one.
The caller ends its claim with `complete` (the answer to keep) or `abandon` (the command was not sent:
the key is free again, as if the request never came).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

from intake.http.database import connection

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:payments:http-intake")


def derived_id(client: str, key: str, what: str) -> str:
    """A UUID that is a function of (client, key, what): the same request retried gets the same ids."""
    return str(uuid.uuid5(NAMESPACE, json.dumps([client, key, what])))


def fingerprint(operation: str, payment_id: str, body: BaseModel) -> str:
    """SHA-256 of the request's canonical JSON (its meaning, not its bytes: key order, spacing and
    omitted defaults do not change it), with the operation and the payment it names."""
    canonical = json.dumps({"operation": operation, "payment_id": payment_id, "body": body.model_dump(mode="json")},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Verdict(Enum):
    CLAIMED = "claimed"
    MISMATCH = "mismatch"
    REPLAY = "replay"
    IN_PROGRESS = "in_progress"


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    status: int | None = None
    body: dict[str, Any] | None = None


_CLAIM = """
INSERT INTO http_idempotency AS row
    (client, idempotency_key, request_hash, operation, payment_id, state, created_at, updated_at)
VALUES (%(client)s, %(key)s, %(hash)s, %(operation)s, %(payment_id)s, 'in_progress', now(), now())
ON CONFLICT (client, idempotency_key) DO UPDATE SET
    request_hash = EXCLUDED.request_hash, operation = EXCLUDED.operation, payment_id = EXCLUDED.payment_id,
    state = 'in_progress', response_status = NULL, response_body = NULL, updated_at = now(),
    created_at = CASE WHEN row.created_at < now() - %(window)s THEN now() ELSE row.created_at END
WHERE row.created_at < now() - %(window)s
   OR (row.state = 'in_progress' AND row.updated_at < now() - %(lease)s AND row.request_hash = EXCLUDED.request_hash)
RETURNING 1
"""
_READ = """SELECT request_hash, state, response_status, response_body FROM http_idempotency
           WHERE client = %s AND idempotency_key = %s"""
_COMPLETE = """UPDATE http_idempotency SET state = 'done', response_status = %s, response_body = %s, updated_at = now()
               WHERE client = %s AND idempotency_key = %s AND request_hash = %s AND state = 'in_progress'"""
_ABANDON = """DELETE FROM http_idempotency
              WHERE client = %s AND idempotency_key = %s AND request_hash = %s AND state = 'in_progress'"""
_EXPIRE = """DELETE FROM http_idempotency WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM http_idempotency WHERE created_at < now() - %s LIMIT %s))"""
_ACCEPTED = """SELECT 1 FROM http_idempotency WHERE payment_id = %s AND operation = 'initiate' AND state = 'done'
               LIMIT 1"""


class IdempotencyStore:
    def __init__(self, pool: AsyncConnectionPool, window: timedelta, lease: timedelta) -> None:
        self.pool = pool
        self.window = window
        self.lease = lease

    async def begin(self, client: str, key: str, request_hash: str, operation: str, payment_id: str) -> Outcome:
        params = {"client": client, "key": key, "hash": request_hash, "operation": operation,
                  "payment_id": payment_id, "window": self.window, "lease": self.lease}
        async with connection(self.pool) as conn:
            claimed = await (await conn.execute(_CLAIM, params)).fetchone()
            if claimed is not None:
                return Outcome(Verdict.CLAIMED)
            row = await (await conn.execute(_READ, (client, key))).fetchone()
        if row is None:  # expired and removed between the two statements: as good as a concurrent claim
            return Outcome(Verdict.IN_PROGRESS)
        stored_hash, state, status, body = row
        if stored_hash != request_hash:
            return Outcome(Verdict.MISMATCH)
        if state == "done":
            return Outcome(Verdict.REPLAY, int(status), dict(body))
        return Outcome(Verdict.IN_PROGRESS)

    async def complete(self, client: str, key: str, request_hash: str, status: int, body: dict[str, Any]) -> None:
        async with connection(self.pool) as conn:
            await conn.execute(_COMPLETE, (status, Jsonb(body), client, key, request_hash))

    async def abandon(self, client: str, key: str, request_hash: str) -> None:
        async with connection(self.pool) as conn:
            await conn.execute(_ABANDON, (client, key, request_hash))

    async def expire(self, rows_max: int = 10_000) -> int:
        """Forget up to `rows_max` keys whose window has passed; returns how many."""
        async with connection(self.pool) as conn:
            return (await conn.execute(_EXPIRE, (self.window, rows_max))).rowcount

    async def accepted(self, payment_id: str) -> bool:
        """Did this service accept an initiate of `payment_id` (that the read model may not show yet)?"""
        async with connection(self.pool) as conn:
            return await (await conn.execute(_ACCEPTED, (payment_id,))).fetchone() is not None
