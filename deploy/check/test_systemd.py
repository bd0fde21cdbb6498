"""The systemd unit: accepted by systemd-analyze without a warning, hardened, and consistent with
the agent's contract."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from common import AGENT_BIN, CONFIG_PATH, REPO, SYSTEMD, run
from conftest import require_tool

UNIT = SYSTEMD / "nodewall.service"
# systemd-analyze security's overall exposure (0 best, 10 worst); the unit scores 2.4 ("OK").
MAX_EXPOSURE = 3.0


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


@pytest.fixture(scope="module")
def root(tmp_path_factory, nodewall_bin) -> Path:
    """A file system root for `systemd-analyze --root`: the host's unit directory, the unit
    under test, and the real agent binary at its installed path, so that verify can check the
    Exec lines without anything being installed on this machine."""
    root = tmp_path_factory.mktemp("sysroot")
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system" / UNIT.name)
    (root / AGENT_BIN.lstrip("/")).parent.mkdir(parents=True)
    shutil.copy(nodewall_bin, root / AGENT_BIN.lstrip("/"))
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    shutil.copy(shutil.which("kill"), root / "usr/bin/kill")
    (root / "bin").symlink_to("usr/bin")
    return root


def analyze(root: Path, *args: str):
    return run([require_tool("systemd-analyze"), *args, f"--root={root}"])


def test_verify_accepts_the_unit_silently(root):
    out = analyze(root, "verify", UNIT.name)
    # Unknown keys and bad values are only warnings: any output at all is a failure.
    assert (out.returncode, out.stdout + out.stderr) == (0, "")


def test_verify_harness_reports_mistakes(root):
    """The check above can fail: a misspelt key in a copy of the unit is reported."""
    bad = root / "etc/systemd/system/nodewall-typo.service"
    bad.write_text(UNIT.read_text().replace("NoNewPrivileges=", "NoNewPrivilege="))
    out = analyze(root, "verify", bad.name)
    assert "Unknown key" in out.stderr and "NoNewPrivilege" in out.stderr


def test_exposure_level(root):
    out = analyze(root, "security", "--offline=yes", UNIT.name)
    m = re.search(r"Overall exposure level for nodewall\.service: ([0-9.]+)", out.stdout + out.stderr)
    assert m, out.stdout + out.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, out.stdout
    quoted = re.search(r"rates it ([0-9.]+)", (REPO / "docs" / "deploy.md").read_text()).group(1)
    assert quoted == m.group(1), "docs/deploy.md quotes another exposure level"


def test_unit_matches_the_agent_contract():
    s = unit_settings(UNIT.read_text())
    assert s["ExecStartPre"] == [f"{AGENT_BIN} check -c {CONFIG_PATH}"]
    assert s["ExecStart"][0].startswith(f"{AGENT_BIN} run -c {CONFIG_PATH} --metrics-addr ")
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert "KillSignal" not in s, "SIGTERM (the default) leaves the policy installed"
    assert "--flush-on-exit" not in s["ExecStart"][0]
    assert s["RuntimeDirectory"] == ["nodewall"], "the lock and agent.sock live in /run/nodewall"
    assert s["LogsDirectory"] == ["nodewall"], "the flow log may be written in /var/log/nodewall"
    assert s["ReadWritePaths"] == ["/sys/fs/bpf"], "pinned XDP state"
    assert s["ProtectSystem"] == ["strict"]
    assert "PrivateNetwork" not in s, "the agent filters the host's network namespace"
    caps = s["CapabilityBoundingSet"][0].split()
    assert caps == ["CAP_NET_ADMIN", "CAP_BPF", "CAP_PERFMON"]
    assert s["ConditionPathExists"] == [CONFIG_PATH]
