"""The orchestrator process: `payments run orchestrator`."""

from __future__ import annotations

from orchestrator.saga import OrchestratorLogic
from payments.runtime.service import serve


def main() -> int:
    return serve(OrchestratorLogic, "orchestrator")
