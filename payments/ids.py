"""Name-based UUIDs (RFC 9562 version 5) without building a UUID object: deterministic ids are derived on
every decision (events, commands, replies), so their cost is paid per record."""

from __future__ import annotations

import hashlib
import uuid


def uuid5(namespace: uuid.UUID, name: str) -> str:
    """str(uuid.uuid5(namespace, name)), in a third of its time: SHA-1 of the namespace and the name, its
    first 16 bytes with the version (5) and the RFC 9562 variant bits set. A unit test holds it equal to
    uuid.uuid5 over random names."""
    raw = bytearray(hashlib.sha1(namespace.bytes + name.encode()).digest()[:16])  # noqa: S324 - RFC 9562 v5
    raw[6] = (raw[6] & 0x0F) | 0x50
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
