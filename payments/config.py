"""Runtime settings from the environment, with the local stack as the default."""

from __future__ import annotations

import os
from dataclasses import dataclass

from payments.stack import LocalStack, stack_home


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str
    database_url: str
    schema_registry_url: str | None

    @classmethod
    def from_env(cls) -> Settings:
        stack = LocalStack(stack_home())
        return cls(
            bootstrap_servers=stack.bootstrap_servers,
            database_url=stack.database_url,
            schema_registry_url=os.environ.get("SCHEMA_REGISTRY_URL") or None,
        )
