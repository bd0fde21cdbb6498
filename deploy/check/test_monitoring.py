"""Alert rules (promtool), the PrometheusRule copy, scrape config and the Grafana dashboard."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from common import METRICS, MONITORING, prometheusrule_text, run
from conftest import require_tool

RULES = MONITORING / "alerts.rules.yaml"
TESTS = MONITORING / "alerts.test.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"

# Dashboard variables, replaced by plausible values so that every query can be parsed.
VARIABLES = {"$__rate_interval": "5m", "$__range": "6h", "$job": "nodewall", "$node": ".*"}
# Identifiers in PromQL that are not metric names.
PROMQL_WORDS = {"and", "or", "unless", "offset", "bool", "group_left", "group_right"}


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool")


def alert_names() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r["alert"] for g in groups for r in g["rules"] if "alert" in r]


def test_promtool_check_rules(promtool):
    out = run([promtool, "check", "rules", str(RULES)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in out.stdout


def test_promtool_test_rules(promtool):
    out = run([promtool, "test", "rules", str(TESTS)], cwd=MONITORING)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_is_tested_firing_and_quiet():
    cases = [c for t in yaml.safe_load(TESTS.read_text())["tests"] for c in t["alert_rule_test"]]
    for name in alert_names():
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: no test shows it firing"
        assert any(not c["exp_alerts"] for c in mine), f"{name}: no test shows it quiet"


def test_alert_rules_cover_the_issue():
    assert set(alert_names()) == {
        "NodewallAgentDown",
        "NodewallApplyErrors",
        "NodewallConfigReloadErrors",
        "NodewallDriftRepairsSpiking",
        "NodewallDropsSpiking",
        "NodewallPolicyGenerationSkew",
    }


def test_prometheusrule_carries_the_same_rules():
    path = MONITORING / "prometheusrule.yaml"
    assert path.read_text() == prometheusrule_text(), (
        "prometheusrule.yaml differs from alerts.rules.yaml: run bash deploy/check.sh --update"
    )


def test_scrape_config(promtool, tmp_path):
    """Debian's promtool is built without Kubernetes service discovery, so the pod job is
    checked with a static target in place of kubernetes_sd_configs; its relabeling, the other
    jobs and the rule file are checked as written."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    jobs = config["scrape_configs"]
    pod_job = next(j for j in jobs if "kubernetes_sd_configs" in j)
    assert pod_job["job_name"] == "nodewall"
    assert pod_job["kubernetes_sd_configs"] == [{"role": "pod"}]
    pod_job["static_configs"] = [{"targets": ["198.18.0.1:9469"]}]
    del pod_job["kubernetes_sd_configs"]
    config["rule_files"] = [str(MONITORING / f) for f in config["rule_files"]]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    out = run([promtool, "check", "config", str(tmp_path / "prometheus.yml")])
    assert out.returncode == 0, out.stdout + out.stderr
    # Every job ends up as job="nodewall", which the alerts select.
    for job in jobs:
        renamed = any(r.get("target_label") == "job" and r.get("replacement") == "nodewall" for r in job.get("relabel_configs", []))
        assert job["job_name"] == "nodewall" or renamed, job["job_name"]


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def expressions(dashboard: dict) -> list[tuple[str, str]]:
    out = [(p["title"], t["expr"]) for p in panels(dashboard) for t in p["targets"]]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            # label_values(SELECTOR, LABEL): the selector is the PromQL part.
            selector = re.fullmatch(r"label_values\((.*), *\w+\)", var["definition"]).group(1)
            out.append((f"variable {var['name']}", selector))
    return out


def substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in re.sub(r'"\$\d"', "", expr), f"unknown variable in {expr}"
    return expr


def test_dashboard_queries_parse(promtool, dashboard, tmp_path):
    """Each panel query becomes a recording rule, which promtool parses as PromQL."""
    rules = []
    for i, (title, expr) in enumerate(expressions(dashboard)):
        rules.append({"record": f"dashboard:query_{i}", "expr": substitute(expr)})
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = run([promtool, "check", "rules", str(path)])
    assert out.returncode == 0, out.stdout + out.stderr


def strip_labels(expr: str) -> str:
    """What is left once strings, label matchers, groupings and durations are removed: function
    names (followed by `(`), keywords and metric names."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    return re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)


def test_dashboard_uses_only_agent_metrics(dashboard):
    for title, expr in expressions(dashboard):
        names = set(re.findall(r"\b([a-z_][a-z0-9_]*)\b(?!\s*\()", strip_labels(expr)))
        unknown = names - METRICS - PROMQL_WORDS
        assert not unknown, f"{title}: {unknown} not in the agent's metrics"
        assert any(m in expr for m in METRICS), f"{title}: queries no agent metric"


def test_dashboard_layout(dashboard):
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells = set()
    for p in dashboard["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        cells |= mine
    for p in panels(dashboard):
        assert p["datasource"]["uid"] == "${datasource}", f"{p['title']}: hard-coded data source"
        assert p["description"], f"{p['title']}: no description"


def test_dashboard_covers_the_issue(dashboard):
    titles = {p["title"] for p in panels(dashboard)}
    required = {
        "Drops by reason", "Drops by rule", "Top rules", "Apply latency", "Drift repairs", "Agents up per node",
        "Top dropped sources", "Top dropped ports", "Rules never matched",
    }
    assert required <= titles, required - titles
