"""The HTTP intake's OpenAPI document, as checked in at docs/openapi.json.

    python -m intake.http.openapi > docs/openapi.json

`tests/unit/intake/http/test_openapi.py` fails when the routes and the checked-in document disagree.
"""

from __future__ import annotations

import json
from typing import Any

from intake.http.app import create_app
from intake.http.config import HttpIntakeConfig, OAuthConfig
from payments.contracts.codec import SingleObjectSerde
from payments.runtime.connection import KafkaConnection
from payments.runtime.topics import Topics

# The document does not depend on where the service runs: any valid configuration describes it.
_DESCRIBED = HttpIntakeConfig(kafka=KafkaConnection("kafka.invalid:9092"), database_url="postgresql://db.invalid/x",
                              topics=Topics(), oauth=OAuthConfig(issuer="https://issuer.invalid",
                                                                 jwks_url="https://issuer.invalid/jwks"))


def document() -> dict[str, Any]:
    return create_app(_DESCRIBED, SingleObjectSerde()).openapi()


def render() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(render(), end="")
