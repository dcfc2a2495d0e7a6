"""Least-privilege Kafka ACLs for every principal of the system, derived from the registry, and applying them.

One principal per process kind (docs/security.md): `User:payments-<service>` for each service of
`ops.registry.SERVICES`, `User:payments-projection-<name>` for each projection, `User:payments-http-intake`
(the HTTP intake: it produces commands) and `User:payments-operator` (the CLI's reading and repairing
commands: inspect, status, dlq, replay). `acl_bindings` derives what each may do from what its code
uses, so a new participant in the registry gets its ACLs without anyone writing them:

- a service: READ and DESCRIBE its input topics and those it reads outside its loop (the risk models);
  WRITE and DESCRIBE its output topics and the dead-letter topic; READ, WRITE and DESCRIBE its changelog
  (it restores from it); READ its consumer group; WRITE and DESCRIBE the transactional ids `<group>-*`
  (one per instance: `<group>-<instance id>`, ops.launch); READ the group prefix `reader-` (a changelog
  restore reads with an unsubscribed consumer, payments.runtime.reader);
- a projection: READ and DESCRIBE its input topics, READ its consumer group (its offsets are in PostgreSQL);
- the HTTP intake: WRITE and DESCRIBE the commands topic (an idempotent producer, no transactions);
- the operator: READ and DESCRIBE every topic; WRITE where a redrive or a replay writes (every consumed
  topic, the redrive audit, the orchestrator's changelog) and where a risk model change is recorded
  (`risk.models`); DESCRIBE every group; its two transactional ids (the redrive's, the orchestrator
  replay's); READ the `reader-` groups.

Nobody but the admin (a super user) may create topics, alter configurations or change ACLs: topics are
made by `payments topics ensure` run as the admin, and this module's `payments acls apply` too.

`deploy/kafka/acls.json` is `render(acl_bindings(Topics()))`, checked in and compared with the derivation
by a unit test, so it cannot drift from the code.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # not in the package's __all__
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from ops.dlq.kafka import TRANSACTIONAL_ID as REDRIVE_TRANSACTIONAL_ID
from ops.errors import OpsError
from ops.registry import PROJECTIONS, SERVICES, topology
from ops.settings import Settings
from payments.contracts import topics as base
from payments.runtime.connection import client_config
from payments.runtime.reader import READER_GROUP_PREFIX
from payments.runtime.topics import Topics

DEFAULT_FILE: Final = Path("deploy/kafka/acls.json")
PRINCIPAL_PREFIX: Final = "User:payments-"
HTTP_INTAKE: Final = "http-intake"
OPERATOR: Final = "operator"
ORCHESTRATOR_REPLAY_SUFFIX: Final = "-replay"  # orchestrator.replay: `<orchestrator group>-replay`
APPLY_TIMEOUT_S: Final = 30


class AclError(OpsError):
    pass


@dataclass(frozen=True, order=True)
class Binding:
    """One ALLOW rule, in Kafka's terms (resource type, pattern type and operation names as the admin API
    spells them). Every binding allows, from any host: nothing here denies."""

    principal: str
    resource_type: str  # TOPIC, GROUP, TRANSACTIONAL_ID
    pattern_type: str  # LITERAL, PREFIXED
    name: str
    operation: str  # READ, WRITE, DESCRIBE


def _grant(principal: str, resource_type: str, names: str | Iterable[str], operations: tuple[str, ...],
           pattern_type: str = "LITERAL") -> set[Binding]:
    listed = [names] if isinstance(names, str) else list(names)
    return {Binding(principal, resource_type, pattern_type, name, operation)
            for name in listed for operation in operations}


def principal(name: str) -> str:
    """`User:payments-<name>`, with dashes for underscores: a user name must also be a Kubernetes name (a
    Strimzi KafkaUser, the Secret of its password), and those admit no underscore."""
    return f"{PRINCIPAL_PREFIX}{name.replace('_', '-')}"


def acl_bindings(topics: Topics) -> list[Binding]:
    """Every ALLOW binding of the system's principals for topics and groups named under `topics.prefix`,
    sorted (a stable file). Pure: derived from ops.registry and the topic names only."""
    bindings: set[Binding] = set()
    read, write, rw = ("READ", "DESCRIBE"), ("WRITE", "DESCRIBE"), ("READ", "WRITE", "DESCRIBE")
    for name, spec in SERVICES.items():
        user = principal(name)
        bindings |= _grant(user, "TOPIC", [topics.name(t) for t in (*spec.logic.input_topics, *spec.reads)], read)
        bindings |= _grant(user, "TOPIC", [topics.name(t) for t in spec.logic.output_topics] + [topics.dlq], write)
        bindings |= _grant(user, "TOPIC", topics.changelog(name), rw)
        bindings |= _grant(user, "GROUP", topics.group(name), ("READ",))
        bindings |= _grant(user, "GROUP", READER_GROUP_PREFIX, ("READ",), "PREFIXED")
        bindings |= _grant(user, "TRANSACTIONAL_ID", f"{topics.group(name)}-", write, "PREFIXED")
    for name, projection_spec in PROJECTIONS.items():
        user = principal(f"projection-{name}")
        bindings |= _grant(user, "TOPIC", [topics.name(t) for t in projection_spec.projection().topics], read)
        bindings |= _grant(user, "GROUP", topics.group(f"projection-{name}"), ("READ",))
    bindings |= _grant(principal(HTTP_INTAKE), "TOPIC", topics.commands, write)

    operator = principal(OPERATOR)
    consumed = {topics.name(t) for spec in SERVICES.values() for t in spec.logic.input_topics}
    consumed |= {topics.name(t) for spec in PROJECTIONS.values() for t in spec.projection().topics}
    bindings |= _grant(operator, "TOPIC", [spec.name for spec in topology(topics, 1)], read)
    written = [*sorted(consumed), topics.name(base.DLQ_REDRIVES), topics.changelog("orchestrator"),
               *(topics.name(t) for spec in SERVICES.values() for t in spec.reads)]
    bindings |= _grant(operator, "TOPIC", written, ("WRITE",))
    groups = [*(topics.group(name) for name in SERVICES), *(topics.group(f"projection-{name}") for name in PROJECTIONS)]
    bindings |= _grant(operator, "GROUP", groups, ("DESCRIBE",))
    bindings |= _grant(operator, "GROUP", READER_GROUP_PREFIX, ("READ",), "PREFIXED")
    bindings |= _grant(operator, "TRANSACTIONAL_ID", [topics.name(REDRIVE_TRANSACTIONAL_ID),
                                                      topics.group("orchestrator") + ORCHESTRATOR_REPLAY_SUFFIX], write)
    return sorted(bindings)


def render(topics: Topics, bindings: list[Binding]) -> str:
    """The JSON file: the topic prefix the names were made under, then the bindings."""
    principals = json.dumps(sorted({b.principal for b in bindings}))
    rows = ",\n".join(f"  {json.dumps(asdict(b))}" for b in bindings)  # one binding a line: a readable diff
    return (f'{{\n "topic_prefix": {json.dumps(topics.prefix)},\n "principals": {principals},\n'
            f' "bindings": [\n{rows}\n ]\n}}\n')


def load(path: Path, topics: Topics) -> list[Binding]:
    """The bindings of an ACL file rendered for `topics.prefix` (AclError for another prefix or a bad file)."""
    try:
        document = json.loads(path.read_text())
        bindings = [Binding(**item) for item in document["bindings"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise AclError(f"{path}: not an ACL file ({error})") from None
    if document.get("topic_prefix", "") != topics.prefix:
        raise AclError(f"{path} names topics under prefix {document.get('topic_prefix')!r}, this deployment uses "
                       f"{topics.prefix!r} (PAYMENTS_TOPIC_PREFIX): apply without --file to derive them")
    return bindings


def apply(settings: Settings, bindings: list[Binding]) -> None:
    """Create the bindings (as the admin of settings.kafka); creating one that exists is a no-op in Kafka."""
    admin = AdminClient(client_config(settings.kafka))
    acls = {AclBinding(ResourceType[b.resource_type], b.name, ResourcePatternType[b.pattern_type], b.principal, "*",
                       AclOperation[b.operation], AclPermissionType.ALLOW): b for b in bindings}
    failed = []
    for acl, future in admin.create_acls(list(acls), request_timeout=APPLY_TIMEOUT_S).items():
        try:
            future.result(timeout=APPLY_TIMEOUT_S)
        except (KafkaException, TimeoutError) as error:
            b = acls[acl]
            failed.append(f"{b.principal} {b.operation} {b.resource_type}:{b.pattern_type}:{b.name}: {error}")
    if failed:
        raise AclError(f"{len(failed)} of {len(acls)} ACLs were not created on {settings.kafka} "
                       f"(is KAFKA_SASL_USERNAME a super user?); first: {failed[0]}")


def handler(args: argparse.Namespace, settings: Settings) -> int:
    topics = settings.topics
    if args.action == "render":
        sys.stdout.write(render(topics, acl_bindings(topics)))
        return 0
    bindings = load(Path(args.file), topics) if args.file else acl_bindings(topics)
    if args.dry_run:
        for b in bindings:
            print(f"ALLOW {b.principal:36} {b.operation:8} {b.resource_type}:{b.pattern_type}:{b.name}")
        print(f"{len(bindings)} ACLs for {len({b.principal for b in bindings})} principals (dry run: nothing applied)")
        return 0
    apply(settings, bindings)
    print(f"applied {len(bindings)} ACLs for {len({b.principal for b in bindings})} principals on {settings.kafka}")
    return 0


def add_parser(commands: Any) -> None:  # argparse's subparsers action: its class is private
    """Add `payments acls` to the CLI's subcommands (ops.cli.OPERATOR_COMMANDS)."""
    parser = commands.add_parser(
        "acls", help="least-privilege Kafka ACLs per service principal: apply them (as the admin) or render them")
    parser.add_argument("action", choices=["apply", "render"],
                        help="apply: create the ACLs on the cluster; render: print them as JSON "
                             f"(how {DEFAULT_FILE} is made)")
    parser.add_argument("--file", metavar="PATH", help=f"apply this rendered file (e.g. {DEFAULT_FILE}) instead "
                                                       "of deriving the ACLs from the registry")
    parser.add_argument("--dry-run", action="store_true", help="print the ACLs, apply nothing")
    parser.set_defaults(handler=handler)
