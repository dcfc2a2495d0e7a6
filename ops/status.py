"""`payments status`: is the system ready to take payments, and how far behind is each consumer?

Ready means: every topic of the topology exists with its declared partition count, and every service
and projection in the registry has a live consumer group member with all of its input partitions
assigned. Lag is the read_committed end offset minus the committed position, per group: Kafka's
committed offsets for the Kafka->Kafka services, PostgreSQL's `projection_offsets` for projections.

Every Kafka call is asked again through transient errors, with a bound (payments.runtime.retry): a
group that still cannot be described or read is reported as a problem of that group (not ready);
topic metadata or end offsets that cannot be had end the command with a KafkaCallError (one line).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TextIO

import psycopg
from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient

from ops.registry import PROJECTIONS, SERVICES, topology
from ops.settings import Settings
from payments.runtime.connection import client_config
from payments.runtime.errors import KafkaCallError
from payments.runtime.reader import end_offsets
from payments.runtime.retry import retry_kafka
from payments.runtime.topics import Topics

ADMIN_TIMEOUT_S = 10.0


@dataclass
class GroupStatus:
    name: str  # `payments run` name: a service, or "projection <name>"
    group: str
    inputs: list[tuple[str, int]]  # every input partition
    members: int = 0
    assigned: int = 0
    lag: int | None = None  # None: unknown
    problems: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.members > 0 and self.assigned == len(self.inputs) and not self.problems


@dataclass
class SystemStatus:
    topics_expected: int
    topic_problems: list[str]
    groups: list[GroupStatus]

    @property
    def ready(self) -> bool:
        return not self.topic_problems and all(group.ready for group in self.groups)


def system_status(settings: Settings) -> SystemStatus:
    bootstrap, topics = settings.kafka, settings.topics
    admin = AdminClient(client_config(bootstrap))
    expected = topology(topics, settings.partitions)
    metadata = retry_kafka(lambda: admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics, "list_topics")
    existing = {name: len(meta.partitions) for name, meta in metadata.items()}
    problems = [f"{spec.name} is missing" if spec.name not in existing else
                f"{spec.name} has {existing[spec.name]} partitions, expected {spec.partitions}"
                for spec in expected if existing.get(spec.name) != spec.partitions]
    groups = [GroupStatus(name, topics.group(name), _partitions(topics, spec.logic.input_topics, existing))
              for name, spec in SERVICES.items()]
    groups += [GroupStatus(f"projection {name}", topics.group(f"projection-{name}"),
                           _partitions(topics, spec.projection().topics, existing))
               for name, spec in PROJECTIONS.items()]
    _describe(admin, groups)
    ends = end_offsets(bootstrap, sorted({tp for group in groups for tp in group.inputs})) if not problems else {}
    for group in groups:
        if ends:
            committed = (_projection_offsets(settings.database, group) if group.name.startswith("projection ")
                         else _committed(admin, group))
            if committed is not None:
                group.lag = sum(max(0, ends[tp] - committed.get(tp, 0)) for tp in group.inputs)
    return SystemStatus(len(expected), problems, groups)


def _partitions(topics: Topics, bases: tuple[str, ...], existing: dict[str, int]) -> list[tuple[str, int]]:
    return [(topics.name(base), p) for base in bases for p in range(existing.get(topics.name(base), 0))]


def _describe(admin: AdminClient, groups: list[GroupStatus]) -> None:
    for group in groups:
        try:  # one group per request: a transient error (a coordinator loading or moving) asks again for it alone
            description = retry_kafka(partial(_description, admin, group.group),
                                      f"describe_consumer_groups {group.group}")
        except KafkaCallError as error:
            group.problems.append(f"cannot describe group {group.group}: {error}")
            continue
        group.members = len(description.members)
        wanted = set(group.inputs)
        group.assigned = len({(tp.topic, tp.partition) for member in description.members
                              for tp in member.assignment.topic_partitions} & wanted)


def _description(admin: AdminClient, group: str) -> Any:
    """One consumer group's description (a ConsumerGroupDescription), asked alone."""
    return admin.describe_consumer_groups([group], request_timeout=ADMIN_TIMEOUT_S)[group].result()


def _group_offsets(admin: AdminClient, group: str) -> Any:
    """One consumer group's committed offsets (a ConsumerGroupTopicPartitions), asked alone."""
    return admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                             request_timeout=ADMIN_TIMEOUT_S)[group].result()


def _committed(admin: AdminClient, group: GroupStatus) -> dict[tuple[str, int], int] | None:
    try:
        result = retry_kafka(partial(_group_offsets, admin, group.group), f"list_consumer_group_offsets {group.group}")
    except KafkaCallError as error:
        group.problems.append(f"cannot read committed offsets: {error}")
        return None
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions if tp.offset >= 0}


def _projection_offsets(database_url: str, group: GroupStatus) -> dict[tuple[str, int], int] | None:
    name = group.name.removeprefix("projection ")
    try:
        with psycopg.connect(database_url, connect_timeout=5) as conn:
            rows = conn.execute("SELECT topic, partition, next_offset FROM projection_offsets WHERE projection = %s",
                                (name,)).fetchall()
    except psycopg.Error as error:
        group.problems.append(f"cannot read projection_offsets: {type(error).__name__}")
        return None
    return {(str(topic), int(partition)): int(offset) for topic, partition, offset in rows}


def print_status(status: SystemStatus, out: TextIO = sys.stdout) -> None:
    ok = status.topics_expected - len(status.topic_problems)
    out.write(f"topics   {ok}/{status.topics_expected} as declared\n")
    for problem in status.topic_problems:
        out.write(f"  {problem}\n")
    out.write(f"{'process':24} {'consumer group':32} {'members':>7} {'partitions':>10} {'lag':>8}\n")
    for group in status.groups:
        lag = "?" if group.lag is None else str(group.lag)
        out.write(f"{group.name:24} {group.group:32} {group.members:>7} "
                  f"{f'{group.assigned}/{len(group.inputs)}':>10} {lag:>8}\n")
        for problem in group.problems:
            out.write(f"  {problem}\n")
    not_ready = [g.name for g in status.groups if not g.ready]
    out.write("ready: yes\n" if status.ready else
              "ready: no" + (f" (waiting for: {', '.join(not_ready)})" if not_ready else "") + "\n")
