"""The Dockerfile, kept honest without a container engine: its build stage's commands are run
here as written (they are CI's own install and build commands), and the runtime stage must
install exactly the Debian packages holding the libraries the built binary links."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from common import AGENT_BIN, CONFIG_PATH, DEPLOY, METRICS_PORT, REPO, run
from conftest import require, require_tool

DOCKERFILE = DEPLOY / "Dockerfile"
# In debian:bookworm-slim already (Essential: yes, or required by it).
BASE_PACKAGES = {"libc6", "libgcc-s1"}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#")))
    return [(l.split(None, 1)[0].upper(), l.split(None, 1)[1].strip()) for l in text.splitlines() if l.strip()]


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for ins, args in instructions(DOCKERFILE.read_text()):
        if ins == "FROM":
            out.append([])
        out[-1].append((ins, args))
    return out


def test_multi_stage_layout():
    build, runtime = stages()
    assert build[0][1].startswith("rust:") and build[0][1].endswith(" AS build")
    assert runtime[0] == ("FROM", "debian:bookworm-slim")
    copies = [a for i, a in runtime if i == "COPY"]
    assert copies == [f"--from=build /src/target/release/nodewall {AGENT_BIN}"], "the agent only"
    assert ("ENTRYPOINT", f'["{AGENT_BIN}"]') in runtime
    cmd = dict(runtime)["CMD"]
    assert f"--config={CONFIG_PATH}" in cmd and f"--metrics-addr=0.0.0.0:{METRICS_PORT}" in cmd


def test_builder_uses_ci_toolchain():
    """rust:X.Y matches the stable toolchain CI builds with."""
    (build, _) = stages()
    tag = re.match(r"rust:(\d+\.\d+)-bookworm AS build", build[0][1])
    assert tag, build[0][1]
    rustc = run(["rustc", "--version"], cwd=REPO)
    require(rustc.returncode == 0, "rustc is not installed")
    assert rustc.stdout.split()[1].startswith(tag.group(1) + "."), rustc.stdout


def build_commands() -> list[str]:
    (build, _) = stages()
    return [args for ins, args in build if ins == "RUN"]


def test_build_stage_runs_ci_commands():
    assert build_commands() == ["cargo xtask setup", "cargo build --release --locked -p nodewall"]


@pytest.fixture(scope="module")
def release_binary() -> Path:
    """Runs the build stage's RUN lines in the repository (WORKDIR /src is the repository root):
    the toolchain setup is idempotent, the release build incremental."""
    require_tool("cargo")
    for command in build_commands():
        out = run(shlex.split(command), cwd=REPO)
        assert out.returncode == 0, f"{command} failed:\n{out.stderr[-4000:]}"
    binary = REPO / "target" / "release" / "nodewall"
    assert binary.is_file()
    return binary


def linked_packages(binary: Path) -> dict[str, str]:
    """library path -> Debian package, for every shared library the binary loads."""
    out = run(["ldd", str(binary)])
    assert out.returncode == 0, out.stderr
    libs = re.findall(r"=> (/\S+)", out.stdout)
    owners = {}
    for lib in libs:
        real = str(Path(lib).resolve())
        owner = run(["dpkg", "-S", real])
        if owner.returncode != 0:  # merged /usr: dpkg may know the /lib path instead
            owner = run(["dpkg", "-S", real.removeprefix("/usr")])
        assert owner.returncode == 0, f"no Debian package owns {lib}"
        owners[lib] = owner.stdout.split(":")[0]
    return owners


def runtime_packages() -> set[str]:
    (_, runtime) = stages()
    installs = [a for i, a in runtime if i == "RUN" and "apt-get install" in a]
    assert len(installs) == 1
    words = installs[0].split("apt-get install", 1)[1].split("&&")[0].split()
    return {w for w in words if not w.startswith("-")}


def test_runtime_packages_exist_in_debian():
    require_tool("apt-cache")
    for pkg in sorted(runtime_packages()):
        out = run(["apt-cache", "show", "--no-all-versions", pkg])
        require("Package:" in out.stdout, f"apt-cache knows no {pkg} (apt-get update not run?)")


def test_runtime_stage_carries_exactly_the_linked_libraries(release_binary):
    owners = linked_packages(release_binary)
    needed = set(owners.values()) - BASE_PACKAGES
    installed = runtime_packages()
    missing = needed - installed
    assert not missing, f"the binary links libraries from {missing}, which the runtime stage lacks: {owners}"
    extra = installed - needed
    if extra and "nftnl" not in (REPO / "agent" / "Cargo.toml").read_text():
        pytest.skip(f"the agent does not link the nft backend's libraries yet: {sorted(extra)}")
    assert not extra, f"the runtime stage installs {extra}, which the binary does not link"
