"""Every shipped config, checked by the agent itself (`nodewall check`): as shipped, its FILL-ME
placeholders must be refused, so that nothing half-filled can be applied; filled with test
addresses (or as shipped, when its networks are all discovered from the Kubernetes API), it must
be valid."""

from __future__ import annotations

import ipaddress

import pytest
import yaml

from common import K8S, OVERLAYS, PLACEHOLDER, SYSTEMD, run

EXIT_INVALID = 2


def shipped_configs(renders) -> dict[str, str]:
    """name -> config text: what the rendered ConfigMaps deploy, and the host example."""
    out = {}
    for name in OVERLAYS:
        (cm,) = [d for d in renders[name] if d["kind"] == "ConfigMap"]
        out[f"kubernetes/{name}"] = cm["data"]["config.yaml"]
    out["kubernetes/base"] = (K8S / "base" / "config.yaml").read_text()
    out["systemd"] = (SYSTEMD / "config.yaml").read_text()
    return out


CONFIG_NAMES = [f"kubernetes/{n}" for n in OVERLAYS] + ["kubernetes/base", "systemd"]


def fill(text: str) -> str:
    """Replaces the n-th placeholder with 198.18.n.0/24 (test addresses only)."""
    subnets = ipaddress.ip_network("198.18.0.0/15").subnets(new_prefix=24)
    return PLACEHOLDER.sub(lambda _: str(next(subnets)), text)


def check(nodewall_bin, path):
    return run([str(nodewall_bin), "check", "-c", str(path)])


@pytest.fixture(scope="module")
def configs(renders):
    return shipped_configs(renders)


# Configs whose every network is read from the Kubernetes API: nothing to fill in.
DISCOVERED_ONLY = {"kubernetes/tke-node", "kubernetes/tke-master", "kubernetes/base"}


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_placeholders_are_refused(nodewall_bin, configs, name, tmp_path):
    text = configs[name]
    holders = PLACEHOLDER.findall(text)
    if name in DISCOVERED_ONLY:
        assert not holders, f"{name}: its networks are discovered, nothing should need filling"
        return
    assert holders, f"{name}: a shipped config with literal networks has something the user must fill"
    path = tmp_path / "config.yaml"
    path.write_text(text)
    out = check(nodewall_bin, path)
    assert out.returncode == EXIT_INVALID, f"{name}: nodewall check accepted placeholders\n{out.stdout}{out.stderr}"
    for holder in holders:
        assert holder in out.stdout + out.stderr, f"{name}: the error does not name {holder}"


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_filled_config_is_valid(nodewall_bin, configs, name, tmp_path):
    text = fill(configs[name])
    assert "FILL-ME" not in text
    path = tmp_path / "config.yaml"
    path.write_text(text)
    out = check(nodewall_bin, path)
    assert out.returncode == 0, f"{name}:\n{text}\n{out.stdout}{out.stderr}"
    assert "valid" in out.stdout


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_shipped_configs_start_in_audit_mode(configs, name):
    """A first rollout counts would-be drops instead of dropping (see docs/deploy.md)."""
    config = yaml.safe_load(configs[name])
    assert config["mode"] == "audit"
    assert config["backend"] in {"auto", "nft", "xdp"}


@pytest.mark.parametrize("name", sorted(DISCOVERED_ONLY))
def test_discovered_configs_need_no_cidrs(configs, name):
    """On a cluster whose nodes carry podCIDRs, these overlays run as shipped."""
    config = yaml.safe_load(configs[name])
    for net, entries in config["networks"].items():
        assert entries and all(isinstance(e, dict) for e in entries), f"networks.{net}: {entries}"
