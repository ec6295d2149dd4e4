"""The layering rules of the source tree, checked on the files themselves:

- the kernels under cuda/ include only their own files and the public headers of
  cpp/include/cuattn/ (never the host library's private cpp/src headers), so that a kernel file
  reads with the launch-only interface cuattn/launch.h alone;
- no code under cpp/ or cuda/ reads the environment except for CUATTN_CHECK: kernel variants are
  chosen by code (tests and benchmarks pick them through an internal argument).

Each checker also runs on a small synthetic tree with known violations, so that it cannot pass
by finding nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import cuattn
from conftest import skip_unless_gpu, to_device

ROOT = Path(__file__).resolve().parents[2]
SOURCE_SUFFIXES = {".h", ".hpp", ".cuh", ".cu", ".cpp", ".cc", ".c", ".inl"}
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)
GETENV = re.compile(r"\b(?:secure_)?getenv\s*\(\s*(\"[^\"]*\")?")
ALLOWED_ENV = {"CUATTN_CHECK"}


def sources(folder: Path):
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in SOURCE_SUFFIXES)


def bad_includes(root: Path):
    """(file, include) for every include of a file under root/cuda that is not a file under cuda/
    or cpp/include/: a quoted include must resolve (from the file's folder, cuda/ or
    cpp/include/) to such files only; a <...> one must not name a file of the tree."""
    cuda, public = (root / "cuda").resolve(), (root / "cpp" / "include").resolve()
    bad = []
    for f in sources(root / "cuda"):
        for kind, name in INCLUDE.findall(f.read_text(errors="replace")):
            if kind == '"':
                found = [p.resolve() for p in (f.parent / name, cuda / name, public / name) if p.is_file()]
                ok = bool(found) and all(p.is_relative_to(cuda) or p.is_relative_to(public) for p in found)
            else:
                ok = not (root / "cpp" / "src" / name).exists() and not name.startswith(("cpp/", "python/"))
            if not ok:
                bad.append((str(f.relative_to(root)), name))
    return bad


def bad_getenvs(root: Path):
    """(file, line) for every getenv under root/cpp and root/cuda that does not read a literal
    name in ALLOWED_ENV."""
    bad = []
    for folder in (root / "cpp", root / "cuda"):
        for f in sources(folder):
            for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
                for m in GETENV.finditer(line):
                    if m.group(1) is None or m.group(1).strip('"') not in ALLOWED_ENV:
                        bad.append((str(f.relative_to(root)), n))
    return bad


def test_cuda_includes_only_public_headers():
    assert (ROOT / "cuda").is_dir() and sources(ROOT / "cuda"), "no kernel sources found"
    assert bad_includes(ROOT) == []


def test_no_getenv_but_cuattn_check():
    assert bad_getenvs(ROOT) == []
    # ... and CUATTN_CHECK is still read somewhere (the checker sees the one that exists).
    assert any('getenv("CUATTN_CHECK")' in f.read_text() for f in sources(ROOT / "cpp"))


def test_kernel_instantiations_come_from_launch_h():
    """cuda/sources.cmake takes the instantiated head dims from cuattn/launch.h's tables (written
    once) instead of listing them again; the flash pairs serve both flash kernels."""
    cmake = (ROOT / "cuda" / "sources.cmake").read_text()
    for table in ("kFlashHeadDims", "kPagedHeadDims"):
        assert f"cuattn_read_table({table} " in cmake
    assert "run_flash_fwd_sm90" in cmake and "run_flash_fwd" in cmake
    header = (ROOT / "cpp" / "include" / "cuattn" / "launch.h").read_text()
    for table in ("kFlashHeadDims", "kPagedHeadDims"):
        assert re.search(table + r"\[\] = \{[^;]*\};", header), table


def test_checkers_find_violations(tmp_path):
    """The checkers on a tree with one violation of each kind (and allowed code beside them)."""
    (tmp_path / "cuda" / "common").mkdir(parents=True)
    (tmp_path / "cpp" / "src").mkdir(parents=True)
    (tmp_path / "cpp" / "include" / "cuattn").mkdir(parents=True)
    (tmp_path / "cpp" / "src" / "backend.h").write_text("#pragma once\n")
    (tmp_path / "cpp" / "include" / "cuattn" / "launch.h").write_text("#pragma once\n")
    (tmp_path / "cuda" / "common" / "x.cuh").write_text("#pragma once\n")
    (tmp_path / "cuda" / "ok.cu").write_text(
        '#include <cuda_runtime.h>\n#include "cuattn/launch.h"\n#include "common/x.cuh"\n')
    (tmp_path / "cuda" / "bad.cu").write_text(
        '#include "backend.h"\n#include "../cpp/src/backend.h"\n#include <backend.h>\n'
        '#include "missing.h"\nconst char* v = std::getenv("CUATTN_DECODE_WIDE");\n')
    (tmp_path / "cpp" / "src" / "ok.cpp").write_text('bool check() { return std::getenv("CUATTN_CHECK"); }\n')
    (tmp_path / "cpp" / "src" / "bad.cpp").write_text(
        "const char* name = \"X\";\nconst char* v = getenv(name);\nauto w = secure_getenv(\"CUATTN_PDL\");\n")
    assert sorted(bad_includes(tmp_path)) == sorted([
        ("cuda/bad.cu", "backend.h"), ("cuda/bad.cu", "../cpp/src/backend.h"), ("cuda/bad.cu", "backend.h"),
        ("cuda/bad.cu", "missing.h")])
    assert sorted(bad_getenvs(tmp_path)) == [("cpp/src/bad.cpp", 2), ("cpp/src/bad.cpp", 3), ("cuda/bad.cu", 5)]


def test_variant_argument_is_checked():
    """The internal variant string is parsed on the GPU path: an unknown setting or a value that
    is not an integer is a ValueError naming it (never silently ignored)."""
    skip_unless_gpu()  # the variant is read by the GPU dispatch only
    q = to_device(np.zeros((1, 130, 2, 64), np.float16), "cuda")
    with pytest.raises(ValueError, match="colour"):
        cuattn.attention(q, q, q, _variant="colour=1")
    with pytest.raises(ValueError, match="portable=yes"):
        cuattn.attention(q, q, q, _variant="portable=yes")
    with pytest.raises(ValueError, match="portable=1,hopper=1"):
        cuattn.attention(q, q, q, _variant="portable=1,hopper=1")
    kc = to_device(np.zeros((4, 16, 1, 64), np.float16), "cuda")
    qd = to_device(np.zeros((1, 2, 64), np.float16), "cuda")
    table = to_device(np.arange(4, dtype=np.int32).reshape(1, 4), "cuda")
    lens = to_device(np.array([50], np.int32), "cuda")
    with pytest.raises(ValueError, match="wide=x"):
        cuattn.paged_attention(qd, kc, kc, table, lens, _variant="wide=x")
    with pytest.raises(ValueError, match="row_copies"):
        cuattn.paged_attention(qd, kc, kc, table, lens, _variant="row_copies=1")
