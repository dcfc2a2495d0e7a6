from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from payments.services import SERVICES


@pytest.mark.parametrize("name", ["risk", "funds", "partner", "settlement"])
def test_registry_entry_points_exist(name: str) -> None:
    module, _, attribute = SERVICES[name].partition(":")
    assert callable(getattr(importlib.import_module(module), attribute))


def test_factories_build_logic_with_declared_service_and_inputs(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from consumers.funds.service import build_logic as funds
    from consumers.partner.service import build_logic as partner
    from consumers.risk.service import build_logic as risk
    from consumers.settlement.logic import SettlementPublisherLogic

    monkeypatch.setenv("PAYMENTS_PARTNER_DATA_DIR", str(tmp_path))
    built = [risk(), funds(), partner(), SettlementPublisherLogic()]
    assert [(logic.service, logic.input_topics) for logic in built] == [
        ("risk", ("risk.commands",)), ("funds", ("funds.commands",)), ("partner", ("partner.commands",)),
        ("settlement", ("payments.events",))]
