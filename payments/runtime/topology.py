"""Every topic the system uses, declared once; services ensure them at start."""

from __future__ import annotations

from payments.runtime.topics import Topics, TopicSpec

PARTICIPANTS = ("risk", "funds", "partner")
STATEFUL_SERVICES = ("orchestrator", *PARTICIPANTS, "settlement")


def all_topics(topics: Topics) -> list[TopicSpec]:
    specs = [TopicSpec(topics.commands), TopicSpec(topics.events), TopicSpec(topics.settlements),
             TopicSpec(topics.dlq)]
    for participant in PARTICIPANTS:
        specs += [TopicSpec(topics.participant_commands(participant)),
                  TopicSpec(topics.participant_replies(participant))]
    specs += [TopicSpec(topics.changelog(service), compacted=True) for service in STATEFUL_SERVICES]
    return specs
