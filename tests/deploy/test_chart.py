"""The Helm chart deploy/helm/crm (issue 6 items 2-3), rendered and linted by Helm itself
without a helm binary: helm-python-sdk bundles Helm v4's Go library (ctypes, offline), whose
`render` is what `helm template` does and whose `lint` is `helm lint`. Every rendered
manifest is validated against the Kubernetes JSON schemas (kubernetes-validate, strict);
the CRDs (ServiceMonitor, PrometheusRule, HTTPRoute) are checked structurally."""

from __future__ import annotations

import base64
import copy
import importlib
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

from crm_platform.testing.openapi import service_routers

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "crm"
SERVICES = ["directory", "leads", "customers", "sales", "service-desk", "marketing", "analytics"]
KUBE_VERSIONS = ["1.29.0", "1.31.0"]  # the oldest the chart supports (Chart.yaml) and a newer
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "HTTPRoute"}
RELEASE = "crm"

Doc = dict[str, Any]


def load_yaml(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


PRODUCTION = load_yaml(CHART / "values-production.example.yaml")
TRIAL_AND_GATEWAY: dict[str, Any] = {
    "trialDependencies": {"enabled": True},
    "auth": {"bootstrapToken": "a-bootstrap-token-for-tests"},
    "otel": {"endpoint": "http://otel-collector:4317"},
    "ingress": {"enabled": True, "className": "nginx"},
    "httpRoute": {"enabled": True, "parentRefs": [{"name": "public", "namespace": "gw"}]},
    "monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
}
SCENARIOS = {"default": {}, "production": PRODUCTION, "trial": TRIAL_AND_GATEWAY}


@cache
def chart() -> helm_python.Chart:
    return helm_python.Chart.load(str(CHART))


def render(values: dict[str, Any]) -> list[Doc]:
    rendered = chart().render(copy.deepcopy(values), name=RELEASE, namespace="crm", is_install=True)
    docs: list[Doc] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


@cache
def _rendered(scenario: str) -> str:
    return json.dumps(render(SCENARIOS[scenario]))


def rendered(scenario: str) -> list[Doc]:
    docs: list[Doc] = json.loads(_rendered(scenario))
    return docs


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def by_service(docs: list[Doc], kind: str) -> dict[str, Doc]:
    out: dict[str, Doc] = {}
    for d in of_kind(docs, kind):
        labels = d["metadata"].get("labels", {})
        if labels.get("app.kubernetes.io/component") != "service":
            continue  # trial dependencies, dashboards, migrations
        name = labels["app.kubernetes.io/name"]
        assert name not in out, f"two {kind}s for {name}"
        out[name] = d
    return out


# ------------------------------------------------------------------------ helm itself


@pytest.mark.parametrize("scenario", ["default", "production", "trial"])
def test_helm_lint_strict(scenario: str) -> None:
    report = helm_python.lint(
        str(CHART),
        copy.deepcopy(SCENARIOS[scenario]),
        strict=True,
        namespace="crm",
        kube_version="v1.31.0",
    )
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [], problems


def test_values_files_match_the_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    validator.check_schema(schema)
    assert (CHART / "values.yaml").read_text().startswith("# yaml-language-server: $schema=")
    for values in (
        load_yaml(CHART / "values.yaml"),
        chart().merge_values(copy.deepcopy(PRODUCTION)),
        chart().merge_values(copy.deepcopy(TRIAL_AND_GATEWAY)),
    ):
        errors = [e.message for e in validator.iter_errors(values)]
        assert errors == []


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"services": {"leads": {"replicas": "two"}}}, "want integer"),
        ({"services": {"leads": {"replicaz": 2}}}, "additional properties 'replicaz'"),
        ({"services": {"billing": {"enabled": True}}}, "additional properties 'billing'"),
        ({"services": {"sales": {"grpcCallers": ["billing"]}}}, "/services/sales/grpcCallers/0"),
        ({"default": {"resources": {"requests": {"cpu": "1"}, "limits": None}}}, "limits"),
        ({"services": {"leads": {"routes": [{"path": "/x", "pathType": "Regex"}]}}}, "pathType"),
        ({"config": {"natsNamespace": "Has-Caps"}}, "natsNamespace"),
        ({"imageTag": "1.0"}, "additional properties 'imageTag'"),
    ],
)
def test_schema_rejects_bad_values(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmValuesError) as caught:
        render(bad)
    assert message in str(caught.value)


# ----------------------------------------------------------------- Kubernetes schemas


def check_crd(doc: Doc, docs: list[Doc]) -> None:
    """Structural checks of the custom resources kubernetes-validate has no schema for."""
    spec = doc["spec"]
    services = {d["metadata"]["name"]: d for d in of_kind(docs, "Service")}
    if doc["kind"] == "ServiceMonitor":
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        labels = spec["selector"]["matchLabels"]
        matched = [
            s for s in services.values() if labels.items() <= s["metadata"]["labels"].items()
        ]
        assert len(matched) == 1
        port_names = {p["name"] for p in matched[0]["spec"]["ports"]}
        for endpoint in spec["endpoints"]:
            assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"
    elif doc["kind"] == "PrometheusRule":
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        assert spec["groups"]
        for group in spec["groups"]:
            assert group["name"] and group["rules"]
            for rule in group["rules"]:
                assert ("alert" in rule) != ("record" in rule) and rule["expr"]
    elif doc["kind"] == "HTTPRoute":
        assert doc["apiVersion"] == "gateway.networking.k8s.io/v1"
        assert spec["parentRefs"] and len(spec["rules"]) <= 16
        for rule in spec["rules"]:
            assert 1 <= len(rule["matches"]) <= 64
            for match in rule["matches"]:
                assert match["path"]["type"] in {"Exact", "PathPrefix"}
            for ref in rule["backendRefs"]:
                ports = {p["port"] for p in services[ref["name"]]["spec"]["ports"]}
                assert ref["port"] in ports


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", ["default", "production", "trial"])
def test_manifests_validate_against_kubernetes_schemas(scenario: str, kube_version: str) -> None:
    docs = rendered(scenario)
    assert docs
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            check_crd(doc, docs)
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {exc.path}")


def test_object_names_are_unique() -> None:
    for scenario in SCENARIOS:
        keys = [(d["kind"], d["metadata"]["name"]) for d in rendered(scenario)]
        assert len(keys) == len(set(keys)), scenario


# ----------------------------------------------------------------- key properties


def assert_secure(pod: Doc, where: str) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True, where
    assert pod["securityContext"]["runAsUser"] > 0, where
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
    assert pod["automountServiceAccountToken"] is False, where
    tmp = [v for v in pod["volumes"] if v["name"] == "tmp"]
    assert tmp and "emptyDir" in tmp[0], where
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True, where
        assert sc["allowPrivilegeEscalation"] is False, where
        assert sc["capabilities"]["drop"] == ["ALL"], where
        assert {"mountPath": "/tmp", "name": "tmp"} in container["volumeMounts"], where
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= container["resources"][bound].keys(), where


@pytest.mark.parametrize("scenario", ["default", "production", "trial"])
def test_every_deployment_is_hardened_with_probes_and_limits(scenario: str) -> None:
    deployments = by_service(rendered(scenario), "Deployment")
    assert sorted(deployments) == sorted(SERVICES)
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert_secure(pod, name)
        assert pod["topologySpreadConstraints"]
        (container,) = pod["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["startupProbe"]["grpc"]["port"] == ports["grpc"]
        assert container["args"] == ["serve"]
        env = {e["name"]: e for e in container["env"]}
        assert "secretKeyRef" in env["DB_URL"]["valueFrom"]
        assert "secretKeyRef" in env["NATS_URL"]["valueFrom"]
        assert pod["serviceAccountName"] == deployment["metadata"]["name"]


def test_ports_match_the_services_settings() -> None:
    services = by_service(rendered("default"), "Service")
    configs = {d["metadata"]["name"]: d["data"] for d in of_kind(rendered("default"), "ConfigMap")}
    for name in SERVICES:
        package = "crm_" + name.replace("-", "_")
        settings = importlib.import_module(f"{package}.settings").Settings
        fields = settings.model_fields
        http, grpc = fields["http_port"].default, fields["grpc_port"].default
        ports = {p["name"]: p["port"] for p in services[name]["spec"]["ports"]}
        assert ports == {"http": http, "grpc": grpc}, name
        config = configs[f"{RELEASE}-{name}"]
        assert (config["HTTP_PORT"], config["GRPC_PORT"]) == (str(http), str(grpc))
        assert config["HTTP_HOST"] == config["GRPC_HOST"] == "0.0.0.0"
        # Every ConfigMap key is a setting of that service (no typo goes unnoticed).
        known = {f.upper() for f in fields} | {"OTEL_SERVICE_NAME"}
        assert set(config) <= known, set(config) - known


@pytest.mark.parametrize("scenario", ["default", "production", "trial"])
def test_one_of_each_object_per_enabled_service(scenario: str) -> None:
    docs = rendered(scenario)
    expected = [
        "Deployment",
        "Service",
        "ServiceAccount",
        "NetworkPolicy",
        "ConfigMap",
        "PodDisruptionBudget",
    ]
    if scenario != "default":
        expected.append("ServiceMonitor")
    for kind in expected:
        assert sorted(by_service(docs, kind)) == sorted(SERVICES), kind
    hpas = by_service(docs, "HorizontalPodAutoscaler")
    values = chart().merge_values(copy.deepcopy(SCENARIOS[scenario]))
    for name in SERVICES:
        svc = {**values["default"], **values["services"][name]}
        deployment = by_service(docs, "Deployment")[name]
        if svc["autoscaling"]["enabled"]:
            assert hpas[name]["apiVersion"] == "autoscaling/v2"
            assert hpas[name]["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
            assert "replicas" not in deployment["spec"]
        else:
            assert name not in hpas and deployment["spec"]["replicas"] == svc["replicas"]
    jobs = {d["metadata"]["name"]: d for d in of_kind(docs, "Job")}
    assert sorted(jobs) == sorted(f"{RELEASE}-{n}-migrations" for n in SERVICES)


def test_services_scale_independently() -> None:
    docs = render(
        {
            "services": {
                "leads": {"autoscaling": {"minReplicas": 5, "maxReplicas": 40}},
                "sales": {"autoscaling": {"enabled": False}, "replicas": 3},
            }
        }
    )
    hpas = by_service(docs, "HorizontalPodAutoscaler")
    assert (hpas["leads"]["spec"]["minReplicas"], hpas["leads"]["spec"]["maxReplicas"]) == (5, 40)
    assert hpas["customers"]["spec"]["maxReplicas"] == 6
    assert "sales" not in hpas
    assert by_service(docs, "Deployment")["sales"]["spec"]["replicas"] == 3


def test_disabling_a_service_removes_all_its_objects() -> None:
    docs = render(
        {
            "ingress": {"enabled": True},
            "monitoring": {"serviceMonitor": {"enabled": True}},
            "services": {"marketing": {"enabled": False}},
        }
    )
    text = json.dumps(docs)
    assert "crm-marketing" not in text
    assert '"app.kubernetes.io/name": "marketing' not in text
    assert "/v1/campaigns" not in text
    # ... and only its objects: the rest are all there.
    assert sorted(by_service(docs, "Deployment")) == sorted(set(SERVICES) - {"marketing"})
    directory = by_service(docs, "NetworkPolicy")["directory"]
    callers = [
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        for rule in directory["spec"]["ingress"]
        for peer in rule["from"]
        if "podSelector" in peer and "namespaceSelector" not in peer
    ]
    assert "marketing" not in callers and "leads" in callers


def peers(rule: Doc) -> list[Doc]:
    return list(rule.get("from", rule.get("to", [])))


def test_network_policies() -> None:
    docs = rendered("production")
    policies = by_service(docs, "NetworkPolicy")
    values = chart().merge_values(copy.deepcopy(PRODUCTION))
    ingress_controller = values["networkPolicy"]["ingressController"]
    for name, policy in policies.items():
        spec = policy["spec"]
        svc = values["services"][name]
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        assert {
            "key": "app.kubernetes.io/name",
            "operator": "In",
            "values": [name, f"{name}-migrations"],
        } in spec["podSelector"]["matchExpressions"]
        by_port = {rule["ports"][0]["port"]: rule for rule in spec["ingress"]}
        assert set(by_port) <= {svc["ports"]["http"], svc["ports"]["grpc"]}
        http_from = peers(by_port[svc["ports"]["http"]])
        assert {
            "namespaceSelector": ingress_controller["namespaceSelector"],
            "podSelector": ingress_controller["podSelector"],
        } in http_from
        # gRPC: only the declared callers' pods, never a namespace or the ingress controller.
        grpc_from = peers(by_port.get(svc["ports"]["grpc"], {"from": []}))
        assert all(set(peer) == {"podSelector"} for peer in grpc_from)
        callers = sorted(
            p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in grpc_from
        )
        assert callers == sorted(svc["grpcCallers"]), name
        egress_ports = {port["port"] for rule in spec["egress"] for port in rule["ports"]}
        assert {53, 5432, 4222, 4317} <= egress_ports, name
        if name != "directory":
            # Everybody calls the directory: gRPC (API keys) and HTTP (JWKS).
            to_directory = [
                rule
                for rule in spec["egress"]
                for peer in peers(rule)
                if peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
                == "directory"
            ]
            assert {p["port"] for p in to_directory[0]["ports"]} == {50051, 8001}
    assert sorted(values["services"]["directory"]["grpcCallers"]) == sorted(
        set(SERVICES) - {"directory"}
    )


def test_trial_dependencies() -> None:
    docs = rendered("trial")
    stateful = {d["metadata"]["name"]: d for d in of_kind(docs, "StatefulSet")}
    assert sorted(stateful) == [f"{RELEASE}-nats", f"{RELEASE}-postgresql"]
    for s in stateful.values():
        assert s["spec"]["replicas"] == 1
    nats_args = stateful[f"{RELEASE}-nats"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "-js" in nats_args
    init = next(
        d
        for d in of_kind(docs, "ConfigMap")
        if d["metadata"]["name"] == f"{RELEASE}-postgresql-init"
    )
    sql = init["data"]["10-databases.sql"]
    for name in SERVICES:
        assert f"CREATE DATABASE crm_{name.replace('-', '_')} " in sql
    # Services point at the in-cluster servers; migrations wait for them (post-install).
    secrets = {d["metadata"]["name"]: d for d in of_kind(docs, "Secret")}

    db_url = base64.b64decode(secrets[f"{RELEASE}-leads"]["data"]["DB_URL"]).decode()
    assert db_url.startswith("postgresql+asyncpg://crm:") and db_url.endswith(
        f"@{RELEASE}-postgresql:5432/crm_leads"
    )
    for job in of_kind(docs, "Job"):
        assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"


def test_migration_jobs_are_hooks_that_run_migrate() -> None:
    docs = rendered("default")
    for job in of_kind(docs, "Job"):
        notes = job["metadata"]["annotations"]
        assert notes["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert "before-hook-creation" in notes["helm.sh/hook-delete-policy"]
        pod = job["spec"]["template"]["spec"]
        assert pod["restartPolicy"] == "Never"
        assert_secure(pod, job["metadata"]["name"])
        (container,) = pod["containers"]
        assert container["args"] == ["migrate"]
        # The DB_URL Secret it reads is a hook too, created first (pre-install runs before
        # the release's own objects exist).
        ref = container["env"][-1]["valueFrom"]["secretKeyRef"]
        secret = next(d for d in of_kind(docs, "Secret") if d["metadata"]["name"] == ref["name"])
        assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
            notes["helm.sh/hook-weight"]
        )
    production = rendered("production")
    for job in of_kind(production, "Job"):
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["env"][-1]["valueFrom"]["secretKeyRef"]["name"] == "crm-db"
    assert of_kind(production, "Secret") == []  # every secret comes from existingSecret


def test_existing_secrets_are_wired() -> None:
    deployments = by_service(rendered("production"), "Deployment")
    for name, deployment in deployments.items():
        env = {
            e["name"]: e["valueFrom"]["secretKeyRef"]
            for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["DB_URL"] == {"name": "crm-db", "key": name}
        assert env["NATS_URL"] == {"name": "crm-nats", "key": "url"}
        if name == "directory":
            assert env["BOOTSTRAP_TOKEN"] == {"name": "crm-auth", "key": "bootstrap-token"}
        else:
            assert "BOOTSTRAP_TOKEN" not in env


# ----------------------------------------------------------------- routing


def ingress_backend(docs: list[Doc], path: str) -> str | None:
    """The Service an Ingress sends `path` to (Exact beats Prefix; the longest Prefix wins;
    Prefix matches whole path segments)."""
    (ingress,) = of_kind(docs, "Ingress")
    best: tuple[int, int, str] | None = None
    for p in ingress["spec"]["rules"][0]["http"]["paths"]:
        rule, service = p["path"], p["backend"]["service"]["name"]
        if p["pathType"] == "Exact":
            hit = path == rule
        else:
            hit = path == rule or path.startswith(rule.rstrip("/") + "/")
        if hit:
            rank = (1 if p["pathType"] == "Exact" else 0, len(rule), service)
            best = max(best, rank) if best else rank
    return best[2] if best else None


def fastapi_paths(service: str) -> list[str]:
    return sorted({r.path for router in service_routers(service) for r in router.routes})


def test_ingress_routes_every_public_rest_path_to_its_service() -> None:
    docs = render({"ingress": {"enabled": True}})
    for service in SERVICES:
        paths = fastapi_paths(service)
        assert paths
        for path in paths:
            concrete = re.sub(r"\{[^}]+\}", "x1", path)
            assert ingress_backend(docs, concrete) == f"{RELEASE}-{service}", path
    for internal in ("/metrics", "/healthz", "/readyz", "/docs", "/openapi.json"):
        assert ingress_backend(docs, internal) is None


def test_httproute_mirrors_the_ingress() -> None:
    docs = rendered("trial")
    (route,) = of_kind(docs, "HTTPRoute")
    (ingress,) = of_kind(docs, "Ingress")
    from_ingress = sorted(
        (p["backend"]["service"]["name"], p["path"], p["pathType"])
        for p in ingress["spec"]["rules"][0]["http"]["paths"]
    )
    from_route = sorted(
        (
            rule["backendRefs"][0]["name"],
            m["path"]["value"],
            "Exact" if m["path"]["type"] == "Exact" else "Prefix",
        )
        for rule in route["spec"]["rules"]
        for m in rule["matches"]
    )
    assert from_route == from_ingress


# ----------------------------------------------------------------- observability objects


def test_dashboards_and_rules_come_from_the_chart_files() -> None:
    docs = rendered("production")
    boards = [
        d
        for d in of_kind(docs, "ConfigMap")
        if d["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    files = sorted(p.name for p in (CHART / "dashboards").glob("*.json"))
    assert sorted(k for b in boards for k in b["data"]) == files
    for board in boards:
        for key, text in board["data"].items():
            assert json.loads(text) == json.loads((CHART / "dashboards" / key).read_text())
    (rule,) = of_kind(docs, "PrometheusRule")
    groups = [
        g
        for path in sorted((CHART / "alerts").glob("*.yaml"))
        for g in yaml.safe_load(path.read_text())
    ]
    assert rule["spec"]["groups"] == groups
    off = render({"monitoring": {"dashboards": {"enabled": False}}})
    assert not [
        d
        for d in off
        if d["kind"] in CRD_KINDS or d["metadata"].get("labels", {}).get("grafana_dashboard")
    ]
