"""The funds service process: `payments run funds`. PAYMENTS_FUNDS_SEED_FILE overrides the packaged seed."""

from __future__ import annotations

import os
from pathlib import Path

from consumers.funds.logic import FundsLogic
from payments.runtime.service import serve


def build_logic() -> FundsLogic:
    path = os.environ.get("PAYMENTS_FUNDS_SEED_FILE")
    return FundsLogic(seed_path=Path(path) if path else None)


def main() -> int:
    return serve(build_logic, "funds")
