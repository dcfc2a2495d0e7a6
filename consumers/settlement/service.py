"""The settlement publisher process: `payments run settlement`."""

from __future__ import annotations

from consumers.settlement.logic import SettlementPublisherLogic
from payments.runtime.service import serve


def main() -> int:
    return serve(SettlementPublisherLogic, "settlement")
