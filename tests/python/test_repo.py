"""The repository stands on its own: one version everywhere, a licence and a changelog, and no
tracked file that points at documents outside the repository.

Runs from a source checkout (git and the source tree present); skips where the tests run without
one (e.g. against an installed package)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VERSION_FILE = ROOT / "python" / "cuattn" / "_version.py"

# Names of documents that live outside the repository (spelt in pieces so that this file does not
# match itself).
FOREIGN = [("DESIGN" + ".md").encode(), ("ANCH" + "ORS").encode(), ("../" + "shared").encode()]
# Benchmark results are historical data, kept as they were written.
# cpp/programs/ is excluded until its footnotes state their figures as plain facts.
EXEMPT = ()


def _tracked_files() -> list[str]:
    if not VERSION_FILE.is_file() or not (ROOT / "pyproject.toml").is_file():
        pytest.skip("no source tree beside the tests (installed package)")
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"not a git checkout or no git: {e}")
    return [f for f in out.decode().split("\0") if f]


def _source_version() -> str:
    if not VERSION_FILE.is_file():
        pytest.skip("no source tree beside the tests (installed package)")
    m = re.search(r'^__version__ = "([^"]+)"$', VERSION_FILE.read_text(), re.M)
    assert m, f"{VERSION_FILE} has no __version__ = \"...\" line"
    return m.group(1)


def test_no_references_outside_the_repository():
    bad = []
    for f in _tracked_files():
        if f.startswith(EXEMPT):
            continue
        path = ROOT / f
        if not path.is_file():  # deleted in the work tree, not yet committed
            continue
        for lineno, line in enumerate(path.read_bytes().splitlines(), 1):
            for word in FOREIGN:
                if word in line:
                    bad.append(f"{f}:{lineno}: {word.decode()}")
    assert not bad, "files that point outside the repository:\n" + "\n".join(bad)


def test_licence_and_changelog():
    _tracked_files()
    licence = (ROOT / "LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert "END OF TERMS AND CONDITIONS" in licence  # the full text, not a pointer to it
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'license\s*=\s*\{\s*text\s*=\s*"Apache-2.0"', pyproject)
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    release = re.match(r"\d+(\.\d+)*", _source_version()).group(0)
    assert f"## [{release}]" in changelog, f"CHANGELOG.md has no section for {release}"


def test_version_is_defined_once():
    """pyproject.toml and CMakeLists.txt read the version from _version.py; neither spells it."""
    version = _source_version()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'dynamic\s*=\s*\[[^\]]*"version"', pyproject)
    assert 'provider = "scikit_build_core.metadata.regex"' in pyproject
    assert 'input = "python/cuattn/_version.py"' in pyproject
    assert not re.search(r"^version\s*=", pyproject, re.M), "pyproject.toml spells a version"
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert "python/cuattn/_version.py" in cmake
    assert version not in cmake, "CMakeLists.txt spells the version"


def test_version_agrees_everywhere():
    """_version.py, cuattn.__version__, the C++ CUATTN_VERSION (build_info) and the CLI."""
    version = _source_version()
    cuattn = pytest.importorskip("cuattn")
    assert cuattn.__version__ == version
    assert cuattn.build_info()["version"] == version, (
        "the compiled module was built from another version: rebuild (pip install)")
    cli = subprocess.run([sys.executable, "-m", "cuattn", "--version"], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert cli == f"cuattn {version}"
