"""The risk service process: `payments run risk`. PAYMENTS_RISK_MODEL_FILE overrides the packaged model."""

from __future__ import annotations

import os
from pathlib import Path

from consumers.risk.logic import RiskLogic
from payments.runtime.service import serve


def build_logic() -> RiskLogic:
    path = os.environ.get("PAYMENTS_RISK_MODEL_FILE")
    return RiskLogic(model_path=Path(path) if path else None)


def main() -> int:
    return serve(build_logic, "risk")
