"""docs/deploy.md: the sections a newcomer follows exist, and what they name exists."""

from __future__ import annotations

import re

import yaml

from common import OVERLAYS, REPO, SYSTEMD

DOC = REPO / "docs" / "deploy.md"


def text() -> str:
    return DOC.read_text()


def test_sections():
    headings = re.findall(r"^## (.+)$", text(), re.M)
    for wanted in ("Container image", "Deploy on Kubernetes", "Standalone host firewall"):
        assert wanted in headings, f"docs/deploy.md lacks a '## {wanted}' section"


def test_named_paths_exist():
    # The user's own copy (my-cluster) is created by following the doc.
    paths = set(re.findall(r"\bdeploy/[\w./{},-]*[\w}]", text()))
    for path in sorted(paths):
        if "my-cluster" in path:
            continue
        expanded = [path]
        if m := re.search(r"\{([^}]+)\}", path):
            expanded = [path.replace(m.group(0), part) for part in m.group(1).split(",")]
        for p in expanded:
            assert (REPO / p).exists(), f"docs/deploy.md names {p}, which does not exist"


def test_overlay_table_lists_every_overlay():
    for name in OVERLAYS:
        assert f"| `{name}`" in text(), f"the overlay table lacks {name}"


def test_unit_commands_in_doc_match_the_unit():
    unit = (SYSTEMD / "nodewall.service").read_text()
    caps = re.search(r"^CapabilityBoundingSet=(.+)$", unit, re.M).group(1)
    assert f"capabilities limited to `{caps}`" in text()
    metrics = re.search(r"^Environment=NODEWALL_METRICS_ADDR=(.+)$", unit, re.M).group(1)
    assert f"`{metrics}`" in text()
    assert yaml.safe_load((SYSTEMD / "config.yaml").read_text())["failsafe"], "the doc promises an admin-only failsafe"
