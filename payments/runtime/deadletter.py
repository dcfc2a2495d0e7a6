"""Dead-letter records: the original record, as whole as the size limits allow, plus why and where it failed.

A dead letter must never itself be a record Kafka refuses, so its size is bounded whatever the
offending record's size or shape (docs/contracts.md §8):
- the value is copied whole when key, value and headers fit in `copy_bytes_max`; otherwise the
  first `truncated_value_bytes` are kept and `dlq_value_truncated`, `dlq_original_value_bytes` and
  `dlq_original_value_sha256` say what the whole was (fetch it from the source position while the
  source topic's retention allows);
- a key longer than `key_bytes_max` is cut the same way (`dlq_original_key_bytes`);
- the original headers are kept when they fit in `headers_bytes_max`, else dropped
  (`dlq_original_headers_dropped` = how many).
`minimal` drops the value and the original headers altogether: the last resort when even a bounded
copy was refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Final

HEADER_PREFIX: Final = "dlq_"
Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class DeadLetterLimits:
    copy_bytes_max: int = 900_000  # under the producer's message.max.bytes (1,000,000) with room to spare
    truncated_value_bytes: int = 65_536
    key_bytes_max: int = 1_024
    headers_bytes_max: int = 65_536


@dataclass(frozen=True)
class DeadLetter:
    """Why a record could not be processed.

    `error_class` names the failure kind (a ContractError subclass, `OversizeRecord`, `ProcessingError`,
    ...), `reason_code` is a bare machine-readable code (`oversize_record`, `avro_body_unreadable`, ...),
    `detail` is for humans.
    """

    error_class: str
    reason_code: str
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    minimal: bool = False

    def as_minimal(self) -> DeadLetter:
        return replace(self, minimal=True)

    def record(self, key: bytes | None, value: bytes | None, original: Headers | None,
               limits: DeadLetterLimits = DeadLetterLimits()) -> tuple[bytes | None, bytes | None, Headers]:
        """The dead-letter record's key, value and headers, bounded by `limits`."""
        original = original or []
        extra: Headers = [
            ("dlq_error_class", self.error_class.encode()),
            ("dlq_reason_code", self.reason_code.encode()),
            ("dlq_detail", self.detail[:2000].encode(errors="replace")),
            ("dlq_source_topic", self.source_topic.encode()),
            ("dlq_source_partition", str(self.source_partition).encode()),
            ("dlq_source_offset", str(self.source_offset).encode()),
        ]
        if key is not None and len(key) > limits.key_bytes_max:
            extra.append(("dlq_original_key_bytes", str(len(key)).encode()))
            key = key[:limits.key_bytes_max]
        headers_size = sum(len(name) + len(header) for name, header in original)
        if self.minimal or headers_size > limits.headers_bytes_max:
            extra.append(("dlq_original_headers_dropped", str(len(original)).encode()))
            original = []
        size = len(key or b"") + len(value or b"") + headers_size
        if value is not None and (self.minimal or size > limits.copy_bytes_max):
            extra += [("dlq_value_truncated", b"true"),
                      ("dlq_original_value_bytes", str(len(value)).encode()),
                      ("dlq_original_value_sha256", hashlib.sha256(value).hexdigest().encode())]
            value = b"" if self.minimal else value[:limits.truncated_value_bytes]
        return key, value, [*original, *extra]

    @classmethod
    def from_headers(cls, headers: Headers) -> DeadLetter:
        found = {name: value.decode() for name, value in headers if name.startswith(HEADER_PREFIX)}
        return cls(
            error_class=found["dlq_error_class"],
            reason_code=found["dlq_reason_code"],
            detail=found["dlq_detail"],
            source_topic=found["dlq_source_topic"],
            source_partition=int(found["dlq_source_partition"]),
            source_offset=int(found["dlq_source_offset"]),
        )


def original_headers(headers: Headers) -> Headers:
    """The headers the record had before it was dead-lettered (for redrive)."""
    return [(name, value) for name, value in headers if not name.startswith(HEADER_PREFIX)]


def reason_code_of(reason: str) -> str:
    """The bare code of a contract error's reason (`missing_header:ce_type` -> `missing_header`)."""
    return reason.split(":", 1)[0]
