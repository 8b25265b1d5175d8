"""Dashboards, alerts and /metrics output (issue 6 item 4).

Static checks: every dashboard is valid Grafana JSON whose PromQL names only metrics the
services export (crm_platform.metrics and the default process_/python_ collectors) or recording
rules of deploy/helm/crm/alerts; every alert has a severity, text and a runbook anchor that
exists in the README. With promtool (scripts/ensure_promtool.sh installs it): `check rules` on
each alerts file and on the dashboards' expressions, `test rules` on deploy/monitoring-tests,
and `check metrics` on the real /metrics of running services. Without promtool those tests
skip, saying so, unless CRM_REQUIRE_PROMTOOL=1 (CI) turns the skip into a failure."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import Tenant, http_client
from crm_platform import metrics
from crm_platform.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "crm"
ALERT_FILES = sorted((CHART / "alerts").glob("*.yaml"))
DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
RULE_TESTS = sorted((ROOT / "deploy" / "monitoring-tests").glob("*.yaml"))
README = ROOT / "README.md"

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or"}
PROMQL_WORDS |= {"unless", "bool", "offset", "inf", "nan"}
STANDARD_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool not found: run scripts/ensure_promtool.sh (apt-get install prometheus)"
        if os.environ.get("CRM_REQUIRE_PROMTOOL") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_promtool(*args: str, stdin: bytes | None = None, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        [promtool(), *args], input=stdin, capture_output=True, cwd=cwd, timeout=60, check=False
    )
    output = (proc.stdout + proc.stderr).decode()
    assert proc.returncode == 0, output
    return output


def groups(path: Path) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, list), f"{path.name}: must be a YAML list of rule groups"
    return data


def all_rules() -> Iterator[dict[str, Any]]:
    for path in ALERT_FILES:
        for group in groups(path):
            yield from group["rules"]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in all_rules() if "record" in rule}


def exported_names() -> set[str]:
    """Every series name the registry of crm_platform.metrics can export."""
    names = set(STANDARD_SERIES)
    for family in metrics.REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (with Grafana variables): the identifiers left once
    strings, label matchers, ranges, grouping clauses and function calls are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    found = re.findall(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", text)
    return {name for name in found if name.lower() not in PROMQL_WORDS}


def dashboard(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs(board: dict[str, Any]) -> Iterator[str]:
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield target["expr"]


def readme_anchors() -> set[str]:
    """GitHub heading anchors of the README."""
    anchors = set()
    for line in README.read_text().splitlines():
        if match := re.match(r"#{1,6}\s+(.*)", line):
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


# ------------------------------------------------------------------------- static checks


def test_metric_name_parser() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (service, le) (rate(x_seconds_bucket{service=~"$service",'
        ' route="/v1/a"}[$__rate_interval]))) / on (service) rec:y:rate5m offset 1h > bool 2'
    )
    assert metric_names(expr) == {"x_seconds_bucket", "rec:y:rate5m"}


def test_metric_names_follow_conventions() -> None:
    for family in metrics.REGISTRY.collect():
        assert re.fullmatch(r"[a-z][a-z0-9_]*", family.name), family.name
        assert family.documentation, f"{family.name} has no help text"
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        if family.type != "counter":
            assert not family.name.endswith("_total"), family.name
    for name in ("crm_leads_captured", "crm_leads_distributed", "crm_leads_converted"):
        assert name in {f.name for f in metrics.REGISTRY.collect()}


def test_dashboards_are_valid_grafana_json() -> None:
    assert {p.name for p in DASHBOARDS} >= {
        "crm-overview.json",
        "crm-events.json",
        "crm-business.json",
    }
    uids = set()
    for path in DASHBOARDS:
        board = dashboard(path)
        assert board["schemaVersion"] >= 39, path.name
        assert board["uid"] not in uids
        uids.add(board["uid"])
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource", path.name
        ids = [panel["id"] for panel in panels(board)]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in panels(board):
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == "${datasource}", (path.name, panel["title"])
            assert panel["targets"], (path.name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}", (path.name, panel["title"])
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, (path.name, panel["title"])


def test_dashboard_exprs_use_exported_metrics() -> None:
    known = exported_names() | recorded_names()
    for path in DASHBOARDS:
        board = dashboard(path)
        used: set[str] = set()
        for expr in dashboard_exprs(board):
            names = metric_names(expr)
            assert names, f"{path.name}: no metric in {expr}"
            used |= names
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                match = re.fullmatch(r"label_values\(([\w:]+),\s*\w+\)", variable["definition"])
                assert match, variable["definition"]
                used.add(match.group(1))
        assert used <= known, f"{path.name}: unknown metrics {sorted(used - known)}"


def test_alerts_are_complete_and_documented() -> None:
    known = exported_names() | recorded_names()
    anchors = readme_anchors()
    alerts = [rule for rule in all_rules() if "alert" in rule]
    names = {rule["alert"] for rule in alerts}
    assert names >= {
        "CrmServiceDown",
        "CrmHttpHighErrorRate",
        "CrmGrpcHighErrorRate",
        "CrmHttpHighLatency",
        "CrmGrpcHighLatency",
        "CrmConsumerLagHigh",
        "CrmOutboxBacklogOld",
        "CrmDeadLettersIncreasing",
        "CrmSlaBreachSpike",
    }
    assert len(names) == len(alerts), "duplicate alert names"
    for rule in alerts:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        anchor = annotations["runbook_url"].rpartition("#")[2]
        assert anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in anchors, f"README has no runbook heading for {rule['alert']}"
    for rule in all_rules():
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: {sorted(unknown)}"


# ------------------------------------------------------------------------------- promtool


def test_promtool_check_rules(tmp_path: Path) -> None:
    assert ALERT_FILES
    for path in ALERT_FILES:
        wrapped = tmp_path / path.name
        wrapped.write_text(yaml.safe_dump({"groups": groups(path)}))
        output = run_promtool("check", "rules", str(wrapped))
        assert "SUCCESS" in output, output


def test_promtool_parses_dashboard_exprs(tmp_path: Path) -> None:
    """Each dashboard query, with its Grafana variables filled in, as a recording rule:
    `check rules` then parses every one."""
    rules = []
    for path in DASHBOARDS:
        for i, expr in enumerate(dashboard_exprs(dashboard(path))):
            filled = expr.replace("$__rate_interval", "5m").replace("$service", ".*")
            rules.append({"record": f"dashboard:{path.stem.replace('-', '_')}:{i}", "expr": filled})
    rule_file = tmp_path / "dashboards.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    run_promtool("check", "rules", str(rule_file))


def test_promtool_rule_unit_tests(tmp_path: Path) -> None:
    """deploy/monitoring-tests/*.yaml read rules.yaml: every alerts file, wrapped in groups."""
    assert RULE_TESTS
    all_groups = [group for path in ALERT_FILES for group in groups(path)]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": all_groups}))
    for path in RULE_TESTS:
        shutil.copy(path, tmp_path / path.name)
    output = run_promtool("test", "rules", *(p.name for p in RULE_TESTS), cwd=tmp_path)
    assert "SUCCESS" in output and "FAILED" not in output, output


async def scrape(rt: Runtime) -> str:
    async with http_client(rt) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def test_promtool_check_metrics_on_running_services(
    directory: Runtime, leads: Runtime, analytics: Runtime, tenant: Tenant
) -> None:
    promtool()
    phone = "139" + str(uuid.uuid4().int)[:8]
    async with http_client(leads) as client:
        created = await client.post(
            "/v1/leads",
            json={"full_name": "Metrics", "phone": phone},
            headers=tenant.auth("d1-rep"),
        )
        assert created.status_code == 201, created.text
        listed = await client.get("/v1/leads", headers=tenant.auth("d1-rep"))
        assert listed.status_code == 200
    async with http_client(directory) as client:
        assert (await client.get("/v1/org-units", headers=tenant.auth("admin"))).is_success
    async with http_client(analytics) as client:
        report = await client.get("/v1/reports/lead-counts", headers=tenant.auth("admin"))
        assert report.status_code == 200

    for rt in (leads, directory, analytics):
        text = await scrape(rt)
        output = run_promtool("check", "metrics", stdin=text.encode())
        assert output.strip() == "", f"{rt.settings.service_name}: {output}"
        # Route templates, never raw paths with ids.
        assert not re.search(r'route="[^"]*[0-9a-f]{8}-[0-9a-f]{4}', text)
    leads_text = await scrape(leads)
    assert re.search(r'^crm_leads_captured_total\{outcome="created"\} [1-9]', leads_text, re.M)
    assert 'http_server_requests_total{method="POST",route="/v1/leads",status="201"}' in leads_text
