"""How clients choose partitions: Kafka's Java default (murmur2) and librdkafka's default (consistent_random,
CRC32 for keyed records), so a test can show which commands landed where murmur2 would not put them."""

from __future__ import annotations

import zlib

from ops.inspect import murmur2  # one implementation: `payments inspect` finds partitions with it


def murmur2_partition(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def crc32_partition(key: bytes, partitions: int) -> int:
    """librdkafka's `consistent_random` / `consistent` partitioner for a keyed record."""
    return zlib.crc32(key) % partitions
