"""Every service process `payments run <service>` can start, by name.

Entries are import paths so a service's dependencies load only in its own process.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

SERVICES: dict[str, str] = {
    "orchestrator": "orchestrator.service:main",
    "risk": "consumers.risk.service:main",
    "funds": "consumers.funds.service:main",
    "partner": "consumers.partner.service:main",
    "settlement": "consumers.settlement.service:main",
}


def entry_point(name: str) -> Callable[[], int]:
    module, _, attribute = SERVICES[name].partition(":")
    main: Callable[[], int] = getattr(importlib.import_module(module), attribute)
    return main
