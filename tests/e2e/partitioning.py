"""How clients choose partitions: Kafka's Java default (murmur2) and librdkafka's default (consistent_random,
CRC32 for keyed records), so a test can show which commands landed where murmur2 would not put them."""

from __future__ import annotations

import zlib


def murmur2(data: bytes) -> int:
    """Kafka's `Utils.murmur2` (the Java client's default partitioner hash), as an unsigned 32-bit int."""
    m, r = 0x5BD1E995, 24
    h = (0x9747B28C ^ len(data)) & 0xFFFFFFFF
    whole = len(data) // 4 * 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = data[whole:]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def murmur2_partition(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def crc32_partition(key: bytes, partitions: int) -> int:
    """librdkafka's `consistent_random` / `consistent` partitioner for a keyed record."""
    return zlib.crc32(key) % partitions
