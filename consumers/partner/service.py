"""The partner gateway process: `payments run partner`, against the simulated partner.

Knobs (see docs/participants.md): PAYMENTS_PARTNER_DECLINE_RATE, _ERROR_RATE, _TIMEOUT_RATE,
_LATENCY_MS ("median" or "median,p99"), _SEED, _DATA_DIR. A real partner adapter replaces
`SimulatedPartner` here; nothing else changes.
"""

from __future__ import annotations

from consumers.partner.logic import PartnerGatewayLogic
from consumers.partner.simulator import SimulatedPartner, SimulatorConfig
from payments.runtime.service import serve


def build_logic() -> PartnerGatewayLogic:
    return PartnerGatewayLogic(SimulatedPartner(SimulatorConfig.from_env()))


def main() -> int:
    return serve(build_logic, "partner")
