"""`payments replay <projection>`: rebuild a read model from offset zero beside the live one, verify, swap.

A rebuild, in order:
  1. capture the end offsets (read_committed: the last stable offset) and start offsets of the
     projection's topics; the rebuild stops at these, however much the live topic grows meanwhile;
  2. create a fresh schema `replay_<projection>_<ts>` (`asof_...` with --until) and run the
     projection's own migration files (its registry entry lists them) in it with search_path set to
     it, plus empty copies of projection_offsets and projection_dead_letters; the tables and trigger
     functions those migrations created are the projection's, and are what steps 4 and 5 use;
  3. run the ordinary ProjectionRunner (read_committed, offsets in the same transaction) with
     search_path set to that schema and its partitions assigned directly (no consumer group, so the
     live projection is not disturbed), until every partition's position reaches its end offset;
     a progress bar on stderr shows records/s and the ETA;
  4. verify: row counts and a checksum of every table against a fresh in-memory fold of the same
     records (read again, read_committed, up to the same end offsets); any difference aborts;
  5. swap (not with --until): in ONE transaction, lock the live projection's offset rows (the live
     runner locks them first in every batch too, so the two serialise without deadlock), move the
     live tables and functions to `retired_<projection>_<ts>` together with a copy of their offset
     rows, move the rebuilt ones to the live schema, and replace the live offset rows with the
     rebuilt copy's. The live runner's next batch finds offsets it did not write, rolls back, seeks
     to them and continues from the rebuild's end offsets.
Rolling back is the same swap in the other direction: `payments replay <projection> --swap-in <retired schema>`.

Database errors are translated where each step meets PostgreSQL (projections.errors): a replay ends in
a ProjectionError (or the runner's FatalProcessorError), printed as one line with exit code 1.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import TextIO

import psycopg
from confluent_kafka import TopicPartition
from psycopg import sql
from psycopg.conninfo import make_conninfo

from payments.contracts.codec import Serde
from payments.contracts.envelope import parse_headers
from payments.contracts.errors import ContractError
from payments.contracts.messages import Message
from payments.runtime.connection import Kafka
from payments.runtime.errors import KafkaCallError
from payments.runtime.reader import committed_records, end_offsets, partitions_of
from payments.runtime.records import headers_of
from payments.runtime.topics import Topics
from projections.errors import ProjectionError, translated
from projections.runner import BatchProjection, ProjectionRunner, RecordMeta, RunnerConfig
from projections.spec import ProjectionSpec, Rows

Cursor = psycopg.Cursor[tuple[object, ...]]
LIVE_SCHEMA = "public"
BOOKKEEPING_TABLES = ("projection_offsets", "projection_dead_letters")  # shared, never moved by a swap


class ReplayError(ProjectionError):
    """Root of replay errors."""


class VerificationError(ReplayError):
    """The rebuilt tables differ from the fresh fold: nothing is swapped."""


class StalledError(ReplayError):
    """The rebuild made no progress for too long before reaching the end offsets."""


@dataclass(frozen=True)
class OwnedObjects:
    """A projection's tables and trigger functions (with their argument signatures), as a schema holds them."""

    tables: tuple[str, ...]
    functions: tuple[str, ...]


@dataclass(frozen=True)
class ReplayConfig:
    batch_records_max: int = 5000
    poll_timeout_ms: int = 200
    stall_timeout_s: float = 60.0
    progress_interval_s: float = 0.5


@dataclass
class ReplayResult:
    schema: str  # where the rebuilt tables were built (gone after a swap: they are live)
    records: int
    elapsed_s: float
    checksums: dict[str, tuple[int, str]]
    retired_schema: str | None = None  # where the previous live tables went, after a swap
    end_offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def records_per_s(self) -> float:
        return self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0


# -- step 1: offsets ------------------------------------------------------------------------------


def topic_bounds(bootstrap: Kafka, topic_names: Iterable[str]) -> dict[tuple[str, int], tuple[int, int]]:
    """(start, end) offsets per partition; end is the read_committed end (last stable offset)."""
    partitions = partitions_of(bootstrap, topic_names)
    starts = end_offsets(bootstrap, partitions, earliest=True)
    ends = end_offsets(bootstrap, partitions)
    return {tp: (starts[tp], ends[tp]) for tp in partitions}


# -- step 2: schema -------------------------------------------------------------------------------


def new_schema_name(prefix: str, projection: str, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S_%f")
    return f"{prefix}_{projection}_{stamp}"


def create_schema(database_url: str, schema: str, spec: ProjectionSpec) -> OwnedObjects:
    """Create `schema` with the projection's tables (from its migrations); return what they created."""
    migrations = resources.files("projections.migrations")
    with translated(f"creating schema {schema}"), psycopg.connect(database_url) as conn, conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        for name in spec.migrations:
            conn.execute(migrations.joinpath(name).read_text().encode())
        owned = owned_objects(conn, schema)
        for table in BOOKKEEPING_TABLES:
            conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                sql.Identifier(schema, table), sql.Identifier(LIVE_SCHEMA, table)))
    return owned


def owned_objects(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> OwnedObjects:
    """The tables and functions in `schema` other than the shared bookkeeping tables."""
    tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename",
                          (schema,)).fetchall()
    functions = conn.execute(
        """SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %s ORDER BY 1""",
        (schema,)).fetchall()
    return OwnedObjects(tuple(str(t) for (t,) in tables if t not in BOOKKEEPING_TABLES),
                        tuple(str(f) for (f,) in functions))


def schema_url(database_url: str, schema: str) -> str:
    """A connection string whose sessions resolve unqualified names in `schema` (and pg_catalog) only."""
    with translated("the database URL"):
        return make_conninfo(database_url, options=f"-c search_path={schema}")


# -- step 3: rebuild ------------------------------------------------------------------------------


class _Until:
    """A projection that applies only records whose timestamp is <= until (for --until)."""

    def __init__(self, inner: BatchProjection, until_ms: int) -> None:
        self.inner, self.until_ms = inner, until_ms
        self.name, self.topics = inner.name, inner.topics

    def apply(self, cur: Cursor, message: Message, meta: RecordMeta) -> None:
        if meta.timestamp_ms <= self.until_ms:
            self.inner.apply(cur, message, meta)

    def apply_batch(self, cur: Cursor, items: Sequence[tuple[Message, RecordMeta]]) -> None:
        kept = [(m, meta) for m, meta in items if meta.timestamp_ms <= self.until_ms]
        if kept:
            self.inner.apply_batch(cur, kept)


class Progress:
    """A one-line progress bar: records done of total, records/s, ETA."""

    def __init__(self, total: int, out: TextIO, interval_s: float) -> None:
        self.total, self.out, self.interval_s = total, out, interval_s
        self.started = time.monotonic()
        self._last_shown = 0.0

    def show(self, done: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last_shown < self.interval_s:
            return
        self._last_shown = now
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        width = 30
        filled = width if self.total == 0 else min(width, width * done // self.total)
        eta_text = "--" if eta == float("inf") else f"{eta:5.1f}s"
        self.out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} records "
                       f"{rate:,.0f} records/s ETA {eta_text}")
        if final:
            self.out.write("\n")
        self.out.flush()


def rebuild(runner: ProjectionRunner, bounds: dict[tuple[str, int], tuple[int, int]], config: ReplayConfig,
            out: TextIO) -> int:
    """Run `runner` until every partition's position reaches its end offset; return the records applied.

    Progress counts offsets (transaction markers included, as the end offsets do); the result counts records.
    """
    runner.assign([TopicPartition(t, p) for (t, p) in bounds])
    total = sum(end - start for start, end in bounds.values())
    progress = Progress(total, out, config.progress_interval_s)
    records, last_progress = 0, time.monotonic()
    while True:
        # Every record a step consumed is committed to PostgreSQL when it returns.
        consumed = runner.step()
        records += consumed
        positions = {(tp.topic, tp.partition): tp.offset
                     for tp in runner.consumer.position([TopicPartition(t, p) for (t, p) in bounds])}
        done = sum(max(positions[key], start) - start if positions[key] >= 0 else 0
                   for key, (start, _end) in bounds.items())
        progress.show(min(done, total))
        remaining = [key for key, (start, end) in bounds.items() if end > start and positions[key] < end]
        if not remaining:
            progress.show(total, final=True)
            return records
        if consumed:
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > config.stall_timeout_s:
            raise StalledError(f"no records for {config.stall_timeout_s}s; not at the end: {remaining}")


# -- step 4: verify -------------------------------------------------------------------------------


def fold_records(spec: ProjectionSpec, bootstrap: Kafka, bounds: dict[tuple[str, int], tuple[int, int]], serde: Serde,
                 *, until_ms: int | None, timeout_s: float = 300.0) -> Rows:
    """A fresh in-memory fold of the same committed records the rebuild read."""
    fold = spec.fold()
    records = committed_records(bootstrap, bounds, starts={tp: start for tp, (start, _) in bounds.items()},
                                ends={tp: end for tp, (_, end) in bounds.items()}, timeout_s=timeout_s)
    try:
        for record in records:
            topic, partition, offset = record.topic(), record.partition(), record.offset()
            assert topic is not None and partition is not None and offset is not None
            meta = RecordMeta(topic, partition, offset, record.timestamp()[1])
            message = _decode(serde, record)
            if message is not None and (until_ms is None or meta.timestamp_ms <= until_ms):
                fold.apply(message, meta)
    except KafkaCallError as error:
        raise StalledError(f"verification read: {error}") from error
    return fold.rows()


def _decode(serde: Serde, record: object) -> Message | None:
    value = record.value()  # type: ignore[attr-defined]
    if value is None:
        return None
    try:
        parse_headers(headers_of(record))  # type: ignore[arg-type]
        return serde.decode(value)
    except ContractError:
        return None  # the runner dead-letters it: not part of the read model


def _text(value: object) -> str:
    """A column value as canonical text: timestamps in UTC, JSON (jsonb comes back as dict/list) with
    sorted keys, so a row read from PostgreSQL and the same row from a fold give the same text."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def checksum(rows: Iterable[tuple[object, ...]]) -> tuple[int, str]:
    """(row count, md5 of the rows' canonical text, sorted): equal for equal tables wherever they live."""
    lines = sorted("\x1f".join(_text(v) for v in row) for row in rows)
    return len(lines), hashlib.md5("\n".join(lines).encode(), usedforsecurity=False).hexdigest()


def table_checksums(database_url: str, schema: str, tables: Iterable[str]) -> dict[str, tuple[int, str]]:
    with translated(f"reading the tables of {schema}"), psycopg.connect(database_url) as conn:
        return {table: checksum(conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, table)))
                                .fetchall())
                for table in tables}


def verify(database_url: str, schema: str, tables: Sequence[str], expected_rows: Rows) -> dict[str, tuple[int, str]]:
    unknown = sorted(set(expected_rows) - set(tables))
    if unknown:
        raise VerificationError(f"the fold has rows for {unknown}, which the projection's migrations do not create")
    actual = table_checksums(database_url, schema, tables)
    expected = {table: checksum(expected_rows.get(table, [])) for table in tables}
    differing = {t: {"rebuilt": actual[t], "fold": expected[t]} for t in tables if actual[t] != expected[t]}
    if differing:
        raise VerificationError(f"schema {schema} differs from a fresh fold: {differing}")
    return actual


# -- step 5: swap ---------------------------------------------------------------------------------


def swap_in(database_url: str, name: str, source_schema: str, *, live_schema: str = LIVE_SCHEMA,
            now: datetime | None = None) -> str:
    """Make `source_schema`'s tables the live ones in one transaction; return where the old ones went.

    What moves is what `source_schema` holds (a rebuild, or a retired schema when rolling back): the
    live tables and functions of the same names go to a new `retired_...` schema.
    """
    retired = new_schema_name("retired", name, now)
    ident = sql.Identifier
    with translated(f"swapping {source_schema} in"), psycopg.connect(database_url) as conn, conn.transaction():
        conn.execute("SET LOCAL lock_timeout = '30s'")
        owned = owned_objects(conn, source_schema)
        if not owned.tables:
            raise ReplayError(f"schema {source_schema} holds no tables of projection {name}")
        # Same lock order as the live runner (offset rows first, then tables): no deadlock.
        conn.execute("SELECT 1 FROM projection_offsets WHERE projection = %s FOR UPDATE", (name,))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident(retired)))
        for to_move, target in ((live_schema, retired), (source_schema, live_schema)):
            for table in owned.tables:
                conn.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(ident(to_move, table), ident(target)))
            for function in owned.functions:
                conn.execute(sql.SQL("ALTER FUNCTION {}.{} SET SCHEMA {}").format(
                    ident(to_move), sql.SQL(function), ident(target)))
        conn.execute(sql.SQL("CREATE TABLE {} AS SELECT * FROM {} WHERE projection = %s").format(
            ident(retired, "projection_offsets"), ident(live_schema, "projection_offsets")), (name,))
        conn.execute(sql.SQL("DELETE FROM {} WHERE projection = %s").format(
            ident(live_schema, "projection_offsets")), (name,))
        conn.execute(sql.SQL("""INSERT INTO {} (projection, topic, partition, next_offset, updated_at)
                                SELECT projection, topic, partition, next_offset, now() FROM {}
                                WHERE projection = %s""").format(
            ident(live_schema, "projection_offsets"), ident(source_schema, "projection_offsets")), (name,))
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(ident(source_schema)))
    return retired


# -- the command ----------------------------------------------------------------------------------


def replay(spec: ProjectionSpec, *, bootstrap: Kafka, database_url: str, topics: Topics, serde: Serde,
           until: datetime | None = None, swap: bool = True, config: ReplayConfig | None = None,
           out: TextIO = sys.stderr) -> ReplayResult:
    """Steps 1-5 of the module docstring; --until (`until`) builds `asof_...` and never swaps."""
    config = config or ReplayConfig()
    name = spec.name
    projection = spec.projection()
    until_ms = None if until is None else int(until.timestamp() * 1000)
    bounds = topic_bounds(bootstrap, [topics.name(t) for t in projection.topics])
    schema = new_schema_name("asof" if until is not None else "replay", name)
    owned = create_schema(database_url, schema, spec)
    applied: BatchProjection = projection if until_ms is None else _Until(projection, until_ms)
    runner = ProjectionRunner(applied, bootstrap_servers=bootstrap, database_url=schema_url(database_url, schema),
                              topics=topics, serde=serde,
                              config=RunnerConfig(batch_records_max=config.batch_records_max,
                                                  poll_timeout_ms=config.poll_timeout_ms))
    started = time.monotonic()
    try:
        records = rebuild(runner, bounds, config, out)
    finally:
        runner.close()
    elapsed = time.monotonic() - started
    checksums = verify(database_url, schema, owned.tables,
                       fold_records(spec, bootstrap, bounds, serde, until_ms=until_ms))
    result = ReplayResult(schema, records, elapsed, checksums,
                          end_offsets={key: end for key, (_start, end) in bounds.items()})
    if swap and until is None:
        result.retired_schema = swap_in(database_url, name, schema)
    return result


def run_command(spec: ProjectionSpec, *, bootstrap: Kafka, database_url: str, topics: Topics, serde: Serde,
                until_text: str | None, no_swap: bool, swap_in_schema: str | None) -> int:
    """`payments replay <projection> [--until T] [--no-swap] [--swap-in SCHEMA]`; prints the outcome."""
    try:
        if swap_in_schema:
            retired = swap_in(database_url, spec.name, swap_in_schema)
            print(f"swapped in {swap_in_schema}; previous live tables are in {retired}")
            return 0
        until = None if until_text is None else parse_until(until_text)
        result = replay(spec, bootstrap=bootstrap, database_url=database_url, topics=topics, serde=serde,
                        until=until, swap=not no_swap)
    except (ProjectionError, psycopg.Error) as error:  # psycopg.Error: a backstop, they are translated above
        print(f"payments replay: {error}", file=sys.stderr)
        return 1
    print(f"rebuilt {result.records} records in {result.elapsed_s:.1f}s ({result.records_per_s:,.0f} records/s)")
    for table, (count, digest) in result.checksums.items():
        print(f"  verified {table}: {count} rows, md5 {digest}")
    if result.retired_schema:
        print(f"swapped in; previous live tables are in schema {result.retired_schema}")
    else:
        print(f"schema: {result.schema}")
    return 0


def parse_until(text: str) -> datetime:
    """An ISO 8601 timestamp; one without an offset is taken as UTC. Raises ReplayError if malformed."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReplayError(f"--until {text!r} is not an ISO 8601 timestamp (e.g. 2026-11-24T12:00:00Z)") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
