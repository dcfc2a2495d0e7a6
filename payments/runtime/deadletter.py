"""Dead-letter records: the original record, untouched, plus why and where it failed."""

from __future__ import annotations

from dataclasses import dataclass

HEADER_PREFIX = "dlq_"


@dataclass(frozen=True)
class DeadLetter:
    """Why a record could not be processed. `error_class` names the failure kind, `reason` is for humans."""

    error_class: str
    reason: str
    source_topic: str
    source_partition: int
    source_offset: int

    def headers(self, original: list[tuple[str, bytes]] | None) -> list[tuple[str, bytes]]:
        """The original headers followed by the dead-letter headers (original ones are never dropped)."""
        extra = [
            ("dlq_error_class", self.error_class.encode()),
            ("dlq_reason", self.reason[:2000].encode()),
            ("dlq_source_topic", self.source_topic.encode()),
            ("dlq_source_partition", str(self.source_partition).encode()),
            ("dlq_source_offset", str(self.source_offset).encode()),
        ]
        return [*(original or []), *extra]

    @classmethod
    def from_headers(cls, headers: list[tuple[str, bytes]]) -> DeadLetter:
        found = {name: value.decode() for name, value in headers if name.startswith(HEADER_PREFIX)}
        return cls(
            error_class=found["dlq_error_class"],
            reason=found["dlq_reason"],
            source_topic=found["dlq_source_topic"],
            source_partition=int(found["dlq_source_partition"]),
            source_offset=int(found["dlq_source_offset"]),
        )


def original_headers(headers: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The headers the record had before it was dead-lettered (for redrive)."""
    return [(name, value) for name, value in headers if not name.startswith(HEADER_PREFIX)]
