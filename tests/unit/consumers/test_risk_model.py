"""Training, the artifact's checks and serving (LightGBM and onnxruntime in process, no Kafka)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consumers.risk.artifact import load_artifact
from consumers.risk.features import FEATURES
from consumers.risk.scoring import RiskModelError
from consumers.risk.training import Example, train
from ops.cli import main


def test_a_model_trained_on_the_first_weeks_finds_the_fraud_of_the_last(trained: Path) -> None:
    manifest = load_artifact(trained).manifest
    assert manifest.features == FEATURES and len(manifest.baseline) == len(FEATURES)
    assert manifest.trained_until < manifest.holdout_from
    assert manifest.metrics.holdout_fraud > 20
    assert manifest.metrics.auc > 0.95 and manifest.metrics.recall > 0.7 and manifest.metrics.precision > 0.7


def test_the_same_data_and_seed_train_the_same_model(
        risk_training_sample: tuple[list[Example], dict[str, str]], trained: Path, tmp_path: Path) -> None:
    again = train(risk_training_sample[0], tmp_path, seed=5)
    assert again.onnx_sha256 == json.loads(trained.read_text())["onnx_sha256"]


def test_served_scores_decline_fraud_and_explain_it_by_the_features_that_moved(
        risk_training_sample: tuple[list[Example], dict[str, str]], trained: Path) -> None:
    artifact = load_artifact(trained)
    threshold = artifact.manifest.decline_threshold_bp
    holdout = [e for e in risk_training_sample[0] if e.at >= artifact.manifest.holdout_from]
    fraud = [e for e in holdout if e.fraud]
    flagged = [artifact.score(e.features, explain=True) for e in fraud]
    assert sum(s.score_bp >= threshold for s in flagged) >= 0.7 * len(fraud)
    top = max(flagged, key=lambda s: s.score_bp)
    assert [name for name, _ in top.contributions] != [] and top.contributions[0][1] > 0
    assert {name for name, _ in top.contributions} == set(FEATURES)
    honest = [artifact.score(e.features).score_bp for e in holdout if not e.fraud]
    assert sum(s >= threshold for s in honest) < 0.02 * len(honest)


def _copy(trained: Path, into: Path) -> Path:
    into.mkdir()
    (into / trained.name).write_bytes(trained.read_bytes())
    (into / trained.with_suffix(".onnx").name).write_bytes(trained.with_suffix(".onnx").read_bytes())
    return into / trained.name


def test_a_model_whose_file_was_changed_is_refused(trained: Path, tmp_path: Path) -> None:
    manifest = _copy(trained, tmp_path / "m")
    onnx = manifest.with_suffix(".onnx")
    onnx.write_bytes(onnx.read_bytes()[:-1] + b"\0")
    with pytest.raises(RiskModelError, match="SHA-256"):
        load_artifact(manifest)


def test_a_model_trained_on_other_features_is_refused(trained: Path, tmp_path: Path) -> None:
    manifest = _copy(trained, tmp_path / "m")
    content = json.loads(manifest.read_text())
    content["features"] = [*content["features"][:-1], "payee_shoe_size"]
    manifest.write_text(json.dumps(content))
    with pytest.raises(RiskModelError, match=r"other features.*payee_shoe_size"):
        load_artifact(manifest)


def test_a_graph_of_another_width_is_refused(trained: Path, tmp_path: Path) -> None:
    from consumers.risk.artifact import Manifest, RiskArtifact

    manifest = Manifest.model_validate_json(trained.read_text())
    narrower = manifest.model_copy(update={"features": manifest.features[:-1]})
    with pytest.raises(RiskModelError, match="its graph takes"):
        RiskArtifact(narrower, trained.with_suffix(".onnx").read_bytes())


@pytest.mark.parametrize("text", ["", "{", '{"format": "onnx-gbm/1"}'])
def test_a_manifest_that_does_not_validate_is_refused(trained: Path, tmp_path: Path, text: str) -> None:
    manifest = _copy(trained, tmp_path / "m")
    manifest.write_text(text)
    with pytest.raises(RiskModelError, match=r"manifest .* is invalid"):
        load_artifact(manifest)


def test_a_missing_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RiskModelError, match="cannot read"):
        load_artifact(tmp_path / "nothing.json")


def test_the_train_command_prints_the_manifest_of_the_model_it_wrote(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["risk", "train", "--from", "synthetic", "--customers", "400", "--days", "20", "--fraud-share",
                 "0.08", "--seed", "2", "--out", str(tmp_path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert load_artifact(Path(printed["path"])).version == printed["version"]
    assert printed["metrics"]["auc"] > 0.95


def test_the_train_command_refuses_too_little_data_in_one_line(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["risk", "train", "--from", "synthetic", "--customers", "20", "--days", "2", "--fraud-share", "0.0",
                 "--out", str(tmp_path)]) == 1
    error = capsys.readouterr().err.strip()
    assert "only one class" in error and "\n" not in error
