"""Fixtures shared by the deploy checks."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from common import REPO, RENDERS, documents, in_ci, kustomize, run


def require(condition: bool, reason: str) -> None:
    """A missing prerequisite skips the test on a workstation but fails it on CI (CI=true)."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"prerequisite missing on CI: {reason}")
    pytest.skip(reason)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"`{name}` is not installed")
    return path


@pytest.fixture(scope="session")
def renders() -> dict[str, list[dict]]:
    """Every kustomization of RENDERS, rendered now (not the committed files)."""
    return {name: documents(kustomize(path)) for name, path in RENDERS.items()}


@pytest.fixture(scope="session")
def nodewall_bin() -> Path:
    """The agent binary: $NODEWALL_BIN, or a debug build of the workspace (incremental)."""
    if os.environ.get("NODEWALL_BIN"):
        path = Path(os.environ["NODEWALL_BIN"])
        require(path.is_file(), f"NODEWALL_BIN={path} does not exist")
        return path
    require_tool("cargo")
    build = run(["cargo", "build", "--quiet", "-p", "nodewall"], cwd=REPO)
    assert build.returncode == 0, f"cargo build -p nodewall failed:\n{build.stderr}"
    meta = run(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=REPO)
    target = Path(json.loads(meta.stdout)["target_directory"])
    return target / "debug" / "nodewall"
