"""Runtime settings from the environment, with the local stack as the default."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from payments.stack import LocalStack, stack_home


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str
    database_url: str
    schema_registry_url: str | None
    topic_prefix: str
    instance_id: str

    @classmethod
    def from_env(cls) -> Settings:
        stack = LocalStack(stack_home())
        return cls(
            bootstrap_servers=stack.bootstrap_servers,
            database_url=stack.database_url,
            schema_registry_url=os.environ.get("SCHEMA_REGISTRY_URL") or None,
            topic_prefix=os.environ.get("PAYMENTS_TOPIC_PREFIX", ""),
            # Must be unique per live instance of a service (it names the transactional id); a
            # pod's hostname is. Two instances on one machine need PAYMENTS_INSTANCE_ID set apart.
            instance_id=os.environ.get("PAYMENTS_INSTANCE_ID") or socket.gethostname(),
        )
