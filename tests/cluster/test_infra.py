"""Issue 14 part 6: what can be validated here of infra/ and docker-compose.yml.

- docker-compose.yml parses and its services hang together (images or builds, ports, depends_on
  naming real services, the planes' VLB_* settings naming the compose services).
- The Kubernetes manifests validate against the Kubernetes schemas (``kubernetes-validate``, whose
  schemas ship in the package: offline), and kustomization.yaml lists exactly the manifests.
- The Prometheus alert rules parse, every rule has what an operator needs (expr, severity, summary),
  every ``vlb_*`` metric their expressions use is one the code exports, and every alert is explained
  in docs/operations.md.
- The Grafana dashboard references only metrics the code exports.

The exported metric names are read from the code: every ``Counter``/``Gauge``/``Histogram``/
``Summary`` named ``vlb_*`` in routing_engine/, control_plane/ and shared/, plus the names Litestar's
Prometheus middleware builds from the control plane's prefix (control_plane/ops.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "infra" / "k8s"
KUBERNETES_VERSION = "1.30"
METRIC_DEFINITION = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"(vlb_[a-z0-9_]+)\"", re.S)
METRIC_USE = re.compile(r"\bvlb_[a-z0-9_]+")


def exported_metrics() -> set[str]:
    """Every series name the code can expose, with the suffixes prometheus-client adds."""
    names: set[str] = set()
    for folder in ("routing_engine", "control_plane", "shared"):
        for path in (REPO / folder).rglob("*.py"):
            for kind, name in METRIC_DEFINITION.findall(path.read_text()):
                names |= series_of(kind, name)
    from litestar.plugins.prometheus import middleware

    from control_plane.ops import prometheus_config

    source = Path(middleware.__file__).read_text()
    for suffix in re.findall(r'f"\{self\._config\.prefix\}_([a-z_]+)"', source):
        name = f"{prometheus_config.prefix}_{suffix}"
        kind = (
            "Histogram"
            if suffix.endswith("_seconds")
            else "Counter"
            if suffix.endswith("_total")
            else "Gauge"
        )
        names |= series_of(kind, name)
    return names


def series_of(kind: str, name: str) -> set[str]:
    if kind == "Histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count", name}
    if kind == "Summary":
        return {f"{name}_sum", f"{name}_count", name}
    if kind == "Counter":
        base = name.removesuffix("_total")
        return {f"{base}_total", f"{base}_created"}
    return {name}


def test_metric_names_are_read_from_the_code() -> None:
    names = exported_metrics()
    # One of each source, so an empty or broken scan cannot pass the tests below.
    assert "vlb_engine_decision_seconds_bucket" in names
    assert "vlb_engine_events_dropped_total" in names
    assert "vlb_cp_events_persisted_total" in names
    assert "vlb_cp_requests_total" in names
    assert "vlb_cp_request_duration_seconds_bucket" in names


# --- docker compose ---------------------------------------------------------------------------------


def test_compose_file_parses_and_hangs_together() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services: dict[str, Any] = compose["services"]
    assert {"postgres", "redis", "nats"} <= set(services), sorted(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, f"{name}: neither image nor build"
        for port in service.get("ports", []):
            assert re.fullmatch(r"(\d+\.\d+\.\d+\.\d+:)?\d+:\d+(/tcp|/udp)?", str(port)), (
                f"{name}: port {port}"
            )
        depends = service.get("depends_on", [])
        for other in depends if isinstance(depends, list) else list(depends):
            assert other in services, f"{name} depends on unknown service {other}"
        build = service.get("build")
        if isinstance(build, dict) and "dockerfile" in build:
            assert (REPO / build.get("context", ".") / build["dockerfile"]).is_file(), (
                f"{name}: no Dockerfile"
            )
    planes = [s for s in services.values() if any(k.startswith("VLB_") for k in env_of(s))]
    assert len(planes) >= 2, "the compose file runs no plane"
    for service in planes:
        env = env_of(service)
        for key in ("VLB_DATABASE_URL", "VLB_REDIS_URL", "VLB_NATS_URL"):
            if key in env:
                host = re.sub(r"^[a-z+]+://([^@/]*@)?", "", env[key]).split(":")[0].split("/")[0]
                assert host in services, f"{key}={env[key]} names no compose service"


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(str(item).split("=", 1) for item in env if "=" in str(item))
    return {str(k): str(v) for k, v in (env or {}).items()}


# --- Kubernetes ---------------------------------------------------------------------------------------


def manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((path.name, doc))
    return found


@pytest.mark.parametrize(("name", "doc"), manifests(), ids=lambda v: v if isinstance(v, str) else "")
def test_kubernetes_manifest_matches_the_schema(name: str, doc: dict[str, Any]) -> None:
    # The image is set by kustomize; every other field must be valid Kubernetes (strict: no unknown
    # fields).
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_kubernetes_probes_and_drain_match_the_code() -> None:
    """The engine's probes hit routes the engine serves and it has time to drain on SIGTERM."""
    docs = {doc["metadata"]["name"]: doc for _, doc in manifests() if doc.get("kind") == "Deployment"}
    engine = docs["engine"]["spec"]["template"]["spec"]
    container = engine["containers"][0]
    paths = {container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe") if p in container}
    assert paths <= {"/ready", "/health"}, paths
    assert docs["engine"]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert int(engine.get("terminationGracePeriodSeconds", 30)) >= 10
    assert container["lifecycle"]["preStop"], "no pause before SIGTERM: requests routed to a dying pod"


# --- Prometheus and Grafana -----------------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((REPO / "infra" / "prometheus" / "alerts.yml").read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def test_alert_rules_parse_and_are_complete() -> None:
    rules = alert_rules()
    assert len(rules) >= 10
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in rules:
        assert rule["expr"].strip(), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", str(rule["for"])), rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]


def test_alert_expressions_use_only_exported_metrics() -> None:
    exported = exported_metrics()
    for rule in alert_rules():
        unknown = set(METRIC_USE.findall(rule["expr"])) - exported
        assert not unknown, f"{rule['alert']} uses metrics the code does not export: {unknown}"


def test_every_alert_is_explained_in_the_operators_guide() -> None:
    guide = (REPO / "docs" / "operations.md").read_text()
    missing = [r["alert"] for r in alert_rules() if f"`{r['alert']}`" not in guide]
    assert not missing, f"docs/operations.md does not explain {missing}"


def test_prometheus_config_loads_the_alerts() -> None:
    config = yaml.safe_load((REPO / "infra" / "prometheus" / "prometheus.yml").read_text())
    assert any("alerts" in str(f) for f in config.get("rule_files", []))
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs, "no scrape jobs"


def dashboard_expressions(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                found.append(value)
            else:
                found += dashboard_expressions(value)
    elif isinstance(node, list):
        for item in node:
            found += dashboard_expressions(item)
    return found


def test_grafana_dashboard_uses_only_exported_metrics() -> None:
    dashboard = json.loads((REPO / "infra" / "grafana" / "voice-lb-dashboard.json").read_text())
    expressions = dashboard_expressions(dashboard)
    assert expressions, "the dashboard has no queries"
    exported = exported_metrics()
    used = {name for expr in expressions for name in METRIC_USE.findall(expr)}
    assert used, "the dashboard queries no vlb metric"
    assert not used - exported, f"the dashboard uses metrics the code does not export: {used - exported}"
