"""Paths, the agent's contract and helpers shared by the deploy checks and `update.py`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
MONITORING = DEPLOY / "monitoring"
SYSTEMD = DEPLOY / "systemd"
RENDERED = K8S / "rendered"
VENV_BIN = Path(sys.executable).parent

# What `kubectl kustomize` renders into deploy/kubernetes/rendered/<name>.yaml.
RENDERS = {
    "tke-node": K8S / "overlays" / "tke-node",
    "tke-master": K8S / "overlays" / "tke-master",
    "eks": K8S / "overlays" / "eks",
    "ack": K8S / "overlays" / "ack",
    "monitoring": K8S / "monitoring",
}
OVERLAYS = ["tke-node", "tke-master", "eks", "ack"]

# The agent's contract (see the brief in docs/deploy.md): profiles and the networks each needs.
PROFILE_NETWORKS = {
    "tke-node": {"cluster", "container"},
    "tke-master": {"cluster", "container"},
    "eks-cluster": {"cluster", "control-plane"},
    "eks-cluster-restricted": {"cluster", "control-plane"},
    "eks-node": {"cluster", "control-plane"},
    "eks-node-recommended": {"cluster", "control-plane"},
    "eks-control-plane": {"cluster"},
    "ack-node": {"cluster", "control-plane"},
    "ack-node-recommended": {"cluster", "control-plane"},
}
OVERLAY_PROFILES = {
    "tke-node": "tke-node",
    "tke-master": "tke-master",
    "eks": "eks-node-recommended",
    "ack": "ack-node-recommended",
}
METRICS = {
    "nodewall_dropped_packets_total",
    "nodewall_dropped_bytes_total",
    "nodewall_rule_packets_total",
    "nodewall_rule_bytes_total",
    "nodewall_apply_duration_seconds_bucket",
    "nodewall_apply_duration_seconds_sum",
    "nodewall_apply_duration_seconds_count",
    "nodewall_apply_errors_total",
    "nodewall_config_reload_errors_total",
    "nodewall_drift_repairs_total",
    "nodewall_policy_generation",
    "nodewall_policy_info",
    "nodewall_drop_samples_total",
    "nodewall_last_apply_success_timestamp_seconds",
    "nodewall_build_info",
    "nodewall_top_dropped_sources",
    "nodewall_top_dropped_ports",
    "nodewall_rule_unmatched",
    "nodewall_drop_stream_readers",
    "nodewall_drop_stream_lost_samples_total",
    "nodewall_flow_log_records_total",
    "nodewall_flow_log_rotations_total",
    "up",
}
METRICS_PORT = 9469
CONFIG_PATH = "/etc/nodewall/config.yaml"
AGENT_BIN = "/usr/local/bin/nodewall"
# Capabilities the agent may be granted anywhere (base, legacy-kernel component, systemd unit).
ALLOWED_CAPS = {"NET_ADMIN", "BPF", "PERFMON", "SYS_ADMIN", "SYS_RESOURCE"}
PLACEHOLDER = re.compile(r"FILL-ME[A-Za-z0-9-]*")

KUBECTL_ENV = {**os.environ, "KUBECONFIG": os.devnull}


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """Runs a command, capturing text output; never raises on a non-zero exit."""
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def kubectl() -> str:
    path = VENV_BIN / "kubectl"
    return str(path) if path.exists() else shutil.which("kubectl") or "kubectl"


def kustomize(directory: Path) -> str:
    """`kubectl kustomize DIR` with the pinned kubectl from the check venv."""
    out = run([kubectl(), "kustomize", str(directory)], env=KUBECTL_ENV)
    if out.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed:\n{out.stderr}")
    return out.stdout


def documents(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def workspace_version() -> str:
    text = (REPO / "Cargo.toml").read_text()
    section = text.split("[workspace.package]", 1)[1]
    return re.search(r'^version\s*=\s*"([^"]+)"', section, re.M).group(1)


class _LiteralDumper(yaml.SafeDumper):
    """Dumps multi-line strings as `|-` blocks so generated YAML stays readable."""


def _str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _str)


def dump_yaml(data) -> str:
    return yaml.dump(data, Dumper=_LiteralDumper, sort_keys=False, width=100, allow_unicode=True)


PROMETHEUSRULE_HEADER = (
    "# Generated from alerts.rules.yaml by `bash deploy/check.sh --update`: edit that file, not this one.\n"
)


def prometheusrule_text() -> str:
    """The PrometheusRule carrying exactly the groups of alerts.rules.yaml."""
    groups = yaml.safe_load((MONITORING / "alerts.rules.yaml").read_text())["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "nodewall", "labels": {"app.kubernetes.io/name": "nodewall"}},
        "spec": {"groups": groups},
    }
    return PROMETHEUSRULE_HEADER + dump_yaml(rule)


def rendered_header(name: str) -> str:
    rel = RENDERS[name].relative_to(REPO)
    return (
        f"# Rendered from {rel} by `bash deploy/check.sh --update` (kubectl kustomize {rel}).\n"
        "# Do not edit: change the kustomization and re-render; CI fails when this file is stale.\n"
    )


def rendered_text(name: str) -> str:
    return rendered_header(name) + kustomize(RENDERS[name])
