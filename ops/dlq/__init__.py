"""`payments dlq list|show|redrive`: inspect the dead-letter topic; republish dead letters once their cause is fixed.

The dead-letter topic is read read_committed, from its beginning to the end offsets captured when the
command starts (payments.runtime.reader). Its records are those of payments.runtime.deadletter: the
original key, value and headers as far as they fit, plus the `dlq_*` headers.

A redrive republishes a dead letter's original key, value and headers (`original_headers`) to its source
topic, at most once per dead letter, whatever runs at the same time or crashes. The bookkeeping is the
compacted audit topic `payments.dlq-redrives` (key `<dlq topic>/<partition>/<offset>`, value JSON: who,
when, why, where to), written in the same Kafka transaction as the redriven records, by one transactional
id for the whole deployment (`<prefix>payments-dlq-redrive`):

1. `init_transactions()` fences any other redrive run (its commit fails from then on) and completes or
   aborts what a crashed run left open;
2. the audit topic is read read_committed to its end: what was redriven before, by whom;
3. in ONE transaction, each selected dead letter not yet redriven goes to its source topic, then its
   audit record, which names the position the record was given; commit.

A crash before the commit redrives nothing; after it, the audit says what was redriven. Two runs at once:
the one that initialised last fences the other and sees whatever the other committed before. A dead letter
whose DLQ copy is not the whole record (value truncated, key cut, headers dropped, a minimal dead letter)
is refused: its original must be fetched from the source position.

Projection dead letters live in PostgreSQL (`projection_dead_letters`); `list` shows them read-only.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, Final, TextIO

from ops.dlq.kafka import (
    ProjectionLetters,
    audit_topic,
    execute_redrive,
    projection_letters,
    read_letter,
    read_letters,
    read_redrives,
    topics_known,
)
from ops.dlq.model import (
    Audit,
    DlqError,
    Letter,
    Plan,
    Redrive,
    Selection,
    format_age,
    group_letters,
    operator,
    parse_offsets,
    parse_position,
    parse_since,
    plan_redrive,
)
from ops.settings import Settings
from payments.contracts.codec import Serde
from payments.contracts.errors import ContractError
from payments.runtime.deadletter import original_headers

LIST_RECORDS_MAX: Final = 200  # record lines `list` prints by default (--limit)
PROJECTION_ROWS_MAX: Final = 200
PREVIEW_BYTES: Final = 64


# -- output -----------------------------------------------------------------------------------------------------


def _age(timestamp_ms: int, now_ms: int) -> str:
    return format_age((now_ms - timestamp_ms) / 1000)


def _source_text(letter: Letter) -> str:
    return f"{letter.source[0]} {letter.source[1]}:{letter.source[2]}" if letter.source else "?"


def letter_json(letter: Letter, audit: Audit, now_ms: int) -> dict[str, Any]:
    redrive = audit.of_letter(letter)
    return {"dlq_partition": letter.partition, "dlq_offset": letter.offset, "error_class": letter.error_class,
            "reason_code": letter.reason_code, "source": None if letter.source is None else dict(
                zip(("topic", "partition", "offset"), letter.source, strict=True)),
            "timestamp": datetime.fromtimestamp(letter.timestamp_ms / 1000, UTC).isoformat(timespec="milliseconds"),
            "age_s": max(0, (now_ms - letter.timestamp_ms) // 1000), "payment_id": letter.payment_id,
            "redriven": redrive is not None, "redrive": None if redrive is None else asdict(redrive),
            "incomplete": letter.incomplete()}


def _header_text(value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return "0x" + value.hex()


def _decoded(letter: Letter, serde: Serde) -> tuple[dict[str, Any] | None, str | None]:
    """The value decoded as one of our messages, or why it cannot be."""
    if not letter.value:
        return None, "no value"
    if letter.incomplete():
        return None, "not decoded: the DLQ copy is not the whole record"
    try:
        message = serde.decode(letter.value)
    except (ContractError, ValueError) as error:
        return None, f"not a record of ours: {type(error).__name__}: {error}"
    return {"type": type(message).AVRO_NAME, **message.model_dump(mode="json")}, None


def show_json(letter: Letter, serde: Serde, audit: Audit, now_ms: int) -> dict[str, Any]:
    decoded, why = _decoded(letter, serde)
    value = letter.value or b""
    return {**letter_json(letter, audit, now_ms),
            "detail": letter.dead.detail if letter.dead else None,
            "key": None if letter.key is None else _header_text(letter.key),
            "value_bytes": letter.value_bytes,
            "value_preview_hex": value[:PREVIEW_BYTES].hex(),
            "decoded": decoded, "not_decoded": why,
            "original_headers": [[name, _header_text(raw)] for name, raw in original_headers(letter.headers)],
            "truncation": {name: letter.header(name) for name in (
                "dlq_value_truncated", "dlq_original_value_bytes", "dlq_original_value_sha256",
                "dlq_original_key_bytes", "dlq_original_headers_dropped") if letter.header(name) is not None}}


def print_list(letters: list[Letter], audit: Audit, redrives: list[Redrive], projections: ProjectionLetters | None,
               *, dlq: str, audit_name: str, limit: int, now_ms: int, out: TextIO | None = None) -> None:
    out = out or sys.stdout  # looked up now: a test or a caller may have replaced it
    redriven = sum(audit.of_letter(letter) is not None for letter in letters)
    print(f"{dlq}: {len(letters)} dead letter(s) matching, {redriven} redriven", file=out)
    if letters:
        print("\nby class and reason:", file=out)
        print(f"  {'count':>6} {'redriven':>8}  {'oldest':>7} {'newest':>7}  class / reason", file=out)
        for group in group_letters(letters, audit):
            print(f"  {group.count:>6} {group.redriven:>8}  {_age(group.oldest_ms, now_ms):>7} "
                  f"{_age(group.newest_ms, now_ms):>7}  {group.error_class} / {group.reason_code}", file=out)
        print("\ndead letters, newest first (dlq partition:offset):", file=out)
        print(f"  {'dlq':<9} {'source':<40} {'class / reason':<48} {'age':>7}  {'payment':<36}  redriven", file=out)
        for letter in letters[:limit]:
            what = f"{letter.error_class} / {letter.reason_code}"
            flag = "yes" if audit.of_letter(letter) else ("no (incomplete copy)" if letter.incomplete() else "no")
            print(f"  {letter.position:<9} {_source_text(letter):<40} {what:<48} "
                  f"{_age(letter.timestamp_ms, now_ms):>7}  {letter.payment_id or '-':<36}  {flag}", file=out)
        if len(letters) > limit:
            print(f"  ... {len(letters) - limit} more (--limit, or narrow with --class/--reason/--since)", file=out)
    print(f"\nredrives (audit topic {audit_name}): {len(redrives)}", file=out)
    for redrive in sorted(redrives, key=lambda item: item.when)[-limit:]:
        print(f"  dlq {redrive.dlq_partition}:{redrive.dlq_offset} -> {redrive.target_topic} "
              f"{redrive.target_partition}:{redrive.target_offset}  by {redrive.who} at {redrive.when}: "
              f"{redrive.reason!r}", file=out)
    if projections is None:
        return
    print("\nprojection dead letters (PostgreSQL projection_dead_letters, read-only; fixed by a replay, "
          "not redriven):", file=out)
    if projections.problem:
        print(f"  not shown: {projections.problem}", file=out)
        return
    print(f"  {projections.total} matching" + (f", newest {len(projections.rows)} shown"
                                               if projections.total > len(projections.rows) else ""), file=out)
    for row in projections.rows:
        print(f"  #{row['id']:<6} {row['projection']:<18} {row['topic']} {row['partition']}:{row['offset']}  "
              f"{row['error_class']} / {row['reason_code'] or '-'}  at {row['created_at']}  payment "
              f"{row['key'] or '-'}", file=out)


def print_show(data: dict[str, Any], out: TextIO | None = None) -> None:
    out = out or sys.stdout  # looked up now: a test or a caller may have replaced it
    source = data["source"]
    print(f"dead letter {data['dlq_partition']}:{data['dlq_offset']}  ({data['timestamp']}, "
          f"{format_age(data['age_s'])} ago)", file=out)
    print(f"  class / reason   {data['error_class']} / {data['reason_code']}", file=out)
    print(f"  detail           {data['detail']}", file=out)
    if source:
        print(f"  source           {source['topic']} {source['partition']}:{source['offset']}", file=out)
    print(f"  payment          {data['payment_id'] or '-'}", file=out)
    print(f"  key              {data['key']!r}", file=out)
    print(f"  value            {data['value_bytes']} bytes; first {PREVIEW_BYTES}: {data['value_preview_hex']}",
          file=out)
    if data["decoded"] is not None:
        print(f"  decoded          {json.dumps(data['decoded'], sort_keys=True)}", file=out)
    else:
        print(f"  decoded          {data['not_decoded']}", file=out)
    print("  original headers" + ("" if data["original_headers"] else "  (none)"), file=out)
    for name, value in data["original_headers"]:
        print(f"    {name}: {value}", file=out)
    if data["truncation"]:
        print("  incomplete copy  " + ", ".join(f"{k}={v}" for k, v in data["truncation"].items()), file=out)
        print("                   cannot be redriven from the DLQ: fetch the original from the source position",
              file=out)
    redrive = data["redrive"]
    print("  redriven         " + ("no" if redrive is None else
                                   f"by {redrive['who']} at {redrive['when']} to {redrive['target_topic']} "
                                   f"{redrive['target_partition']}:{redrive['target_offset']}: "
                                   f"{redrive['reason']!r}"), file=out)


def print_plan(plan: Plan, written: list[Redrive] | None, *, dry_run: bool, out: TextIO | None = None) -> None:
    out = out or sys.stdout  # looked up now: a test or a caller may have replaced it
    verb = "would redrive" if dry_run else "redriven"
    count = len(plan.redrive) if written is None else len(written)
    print(f"{verb}: {count}; skipped: {len(plan.skipped)}", file=out)
    if not plan.redrive and not plan.skipped and not written:
        print("  no dead letter matches the selection", file=out)
    if written:
        for redrive in written:
            print(f"  redriven dlq {redrive.dlq_partition}:{redrive.dlq_offset} -> {redrive.target_topic} "
                  f"{redrive.target_partition}:{redrive.target_offset}", file=out)
    elif written is None:
        for letter in plan.redrive:
            assert letter.source is not None, "a planned redrive has its source"
            print(f"  redrive  dlq {letter.position} -> {letter.source[0]}  (from {_source_text(letter)}; "
                  f"{letter.error_class} / {letter.reason_code}; payment {letter.payment_id or '-'})", file=out)
    for skip in plan.skipped:
        print(f"  skipped  dlq {skip.letter.position}: {skip.why}", file=out)
    if written:
        first = written[0]
        print(f"audit: by {first.who} at {first.when}: {first.reason!r}", file=out)


def plan_json(plan: Plan, written: list[Redrive] | None, *, dry_run: bool) -> dict[str, Any]:
    return {"dry_run": dry_run,
            "redrive": [letter.position for letter in plan.redrive] if written is None else [],
            "redriven": [asdict(redrive) for redrive in written or []],
            "skipped": [{"dlq_position": skip.letter.position, "why": skip.why} for skip in plan.skipped]}


# -- the commands ---------------------------------------------------------------------------------------------


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def _list(args: argparse.Namespace, settings: Settings) -> int:
    selection = Selection(error_class=args.error_class, reason_code=args.reason_code, source_topic=args.source_topic,
                          since_ms=parse_since(args.since) if args.since else None)
    letters = sorted((letter for letter in read_letters(settings) if selection.matches(letter)),
                     key=lambda letter: (-letter.timestamp_ms, letter.partition, letter.offset))  # newest first
    redrives = read_redrives(settings)
    audit = Audit.of(redrives, settings.topics.dlq)
    projections = projection_letters(settings.database, selection, min(args.limit, PROJECTION_ROWS_MAX))
    now_ms = _now_ms()
    if args.json:
        print(json.dumps({
            "dlq": settings.topics.dlq, "count": len(letters),
            "groups": [asdict(group) for group in group_letters(letters, audit)],
            "dead_letters": [letter_json(letter, audit, now_ms) for letter in letters[:args.limit]],
            "omitted": max(0, len(letters) - args.limit),
            "redrives": [asdict(redrive) for redrive in redrives],
            "projection_dead_letters": asdict(projections)}, indent=2))
        return 0
    print_list(letters, audit, redrives, projections, dlq=settings.topics.dlq, audit_name=audit_topic(settings),
               limit=args.limit, now_ms=now_ms)
    return 0


def _show(args: argparse.Namespace, settings: Settings) -> int:
    partition, offset = parse_position(args.position)
    letter = read_letter(settings, partition, offset)
    data = show_json(letter, settings.serde(), Audit.of(read_redrives(settings), settings.topics.dlq), _now_ms())
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print_show(data)
    return 0


def _confirm(count: int, assume_yes: bool) -> None:
    if assume_yes:
        return
    if not sys.stdin.isatty():
        raise DlqError("redrive needs --yes when stdin is not a terminal (or --dry-run to only see the plan)")
    if input(f"redrive {count} dead letter(s) to their source topics? [y/N] ").strip().lower() not in ("y", "yes"):
        raise DlqError("not confirmed; nothing was redriven")


def _redrive(args: argparse.Namespace, settings: Settings) -> int:
    reason = args.reason_text.strip()
    if not reason:
        raise DlqError("--reason-text must say why (what was fixed): the audit keeps it")
    selection = Selection(offsets=parse_offsets(args.offsets) if args.offsets else None,
                          error_class=args.error_class, reason_code=args.reason_code, payment_id=args.payment)
    letters = read_letters(settings, keep_value=selection.matches)
    selected = [letter for letter in letters if selection.matches(letter)]
    plan = plan_redrive(selected, selection, Audit.of(read_redrives(settings), settings.topics.dlq),
                        topics_known(settings))
    written: list[Redrive] | None = None
    if not args.dry_run and plan.redrive:
        if not args.yes and not args.json:  # what the operator is asked to confirm
            print_plan(plan, None, dry_run=True)
        _confirm(len(plan.redrive), args.yes)
        plan, written = execute_redrive(settings, selected, selection, reason=reason, who=operator())
    elif not args.dry_run:
        written = []
    if args.json:
        print(json.dumps(plan_json(plan, written, dry_run=args.dry_run), indent=2))
    else:
        print_plan(plan, written, dry_run=args.dry_run)
    return 0


def add_parser(commands: Any) -> None:
    """Add `dlq` and its actions to the `payments` subcommands (ops.cli)."""
    dlq = commands.add_parser("dlq", help="dead letters: list them, show one, redrive them after a fix")
    actions = dlq.add_subparsers(dest="action", required=True)

    listing = actions.add_parser("list", help="dead letters by class and reason, each one, redrives, and the "
                                 "projections' dead letters", allow_abbrev=False)
    _filters(listing)
    listing.add_argument("--source-topic", metavar="TOPIC", help="only dead letters from this topic (full name)")
    listing.add_argument("--since", metavar="ISO", help="only dead letters written at or after this time (UTC "
                         "unless it has an offset)")
    listing.add_argument("--limit", type=_positive, default=LIST_RECORDS_MAX, help="record lines to print")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)

    show = actions.add_parser("show", help="one dead letter in full", allow_abbrev=False)
    show.add_argument("position", metavar="PARTITION:OFFSET", help="its position on the dead-letter topic")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_show)

    redrive = actions.add_parser("redrive", help="republish dead letters' original records to their source "
                                 "topics, each at most once, audited", allow_abbrev=False)
    which = redrive.add_mutually_exclusive_group(required=True)
    which.add_argument("--offsets", metavar="P:FROM-TO", help="a range of one DLQ partition, both ends included")
    which.add_argument("--class", dest="error_class", metavar="CLASS", help="every dead letter of this error class")
    which.add_argument("--reason", dest="reason_code", metavar="CODE", help="every dead letter of this reason code")
    which.add_argument("--payment", metavar="PAYMENT_ID", help="every dead letter of this payment")
    redrive.add_argument("--reason-text", required=True, metavar="WHY", help="what was fixed: kept in the audit")
    redrive.add_argument("--dry-run", action="store_true", help="print what would be redriven; write nothing")
    redrive.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    redrive.add_argument("--json", action="store_true")
    redrive.set_defaults(handler=_redrive)


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--class", dest="error_class", metavar="CLASS", help="only this dlq_error_class")
    parser.add_argument("--reason", dest="reason_code", metavar="CODE", help="only this dlq_reason_code")


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


__all__ = ("DlqError", "add_parser")
