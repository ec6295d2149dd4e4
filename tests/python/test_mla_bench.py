"""bench/mla_bench.py without a GPU: it imports without PyTorch, refuses bad arguments, and its
--dry-run (made-up timings) goes through every row group, the aims, the table and the JSON.

Runs from a source checkout (bench/ beside the tests); skips elsewhere."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "mla_bench.py"

pytestmark = pytest.mark.skipif(not SCRIPT.is_file(), reason="no bench/ beside the tests (installed package)")


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def load_json(out_dir):
    files = list(Path(out_dir).glob("*_mla.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def test_imports_without_torch():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import mla_bench; "
            "assert 'torch' not in sys.modules, 'torch imported at import time'; print(len(mla_bench.GROUPS))")
    r = subprocess.run([sys.executable, "-c", code, str(SCRIPT.parent)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "10"


@pytest.mark.parametrize("args, word", [(["--rows", "memory,nope"], "nope"), (["--iters", "0"], "--iters"),
                                        (["--iters", "x"], "--iters")])
def test_bad_arguments(args, word):
    r = run("--dry-run", *args)
    assert r.returncode == 2
    assert word in r.stderr


def test_dry_run_without_flashmla(tmp_path):
    r = run("--dry-run", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    res = load_json(tmp_path)
    from_script = {"memory", "small", "compute", "page", "skew", "fp8", "attention", "absorb", "kernels", "hopper"}
    assert {row["group"] for row in res["rows"]} == from_script
    assert res["dry_run"] and res["peers"]["flashmla"]["status"].startswith("not given")
    aims = [a for row in res["rows"] for a in row["aims"]]
    s = res["summary"]
    assert s["met"] + s["missed"] + s["not_measured"] == len(aims) == 66
    # The kernel-choice rows time every kernel and judge the chosen one against the fastest.
    kernels = [row for row in res["rows"] if row["group"] == "kernels"]
    assert len(kernels) == 7
    assert all(row[f"{k}_ms"] > 0 and k in row["rel_err"] for row in kernels for k in ("list", "split", "hopper"))
    assert all(row["aims"][0]["vs"] == "fastest kernel" and row["aims"][0]["cmp"] == "<=" for row in kernels)
    # The sm_90a kernels' rows repeat the decode aims: the 64-row one's 4 memory, 2 small, 4 compute,
    # skew, 2 page 16; the narrow one's where Hq <= 32: 4 memory, B16 small, skew, 1 page 16.
    hopper = [row for row in res["rows"] if row["group"] == "hopper"]
    wide = [row for row in hopper if "[hopper=1]" in row["row"]]
    narrow = [row for row in hopper if "[narrow=1]" in row["row"]]
    assert len(wide) == 13 and sum(len(row["aims"]) for row in wide) == 21
    assert len(narrow) == 7 and sum(len(row["aims"]) for row in narrow) == 11
    assert len(hopper) == len(wide) + len(narrow)
    # Without the peer, every aim against it is "not measured" and the rows say why.
    flash = [a for a in aims if a["vs"] == "FlashMLA"]
    assert len(flash) == 20 and all(a["ratio"] is None and a["met"] is None for a in flash)
    assert s["not_measured"] == len(flash)
    memory = [row for row in res["rows"] if row["group"] == "memory"]
    assert all(any("FlashMLA not given" in n for n in row["notes"]) for row in memory)
    # The printed table has one line per row and the verdicts.
    assert f"aims: {s['met']} met, {s['missed']} missed, {s['not_measured']} not measured" in r.stdout
    assert r.stdout.count("not measured") >= len(flash)
    for row in res["rows"]:
        assert row["row"] in r.stdout


def test_dry_run_with_flashmla_records_commits(tmp_path):
    peer = tmp_path / "flashmla"
    peer.mkdir()
    (peer / "FLASHMLA_COMMIT").write_text("0123abcd\n")
    (peer / "CUTLASS_COMMIT").write_text("4567ef01\n")
    (peer / "build.py").write_text("raise SystemExit('a dry run never builds the peer')\n")
    out = tmp_path / "out"
    r = run("--dry-run", "--flashmla", str(peer), "--out", str(out), "--rows", "memory,fp8,page")
    assert r.returncode == 0, r.stderr
    res = load_json(out)
    info = res["peers"]["flashmla"]
    assert (info["commit"], info["cutlass_commit"]) == ("0123abcd", "4567ef01")
    assert "0123abcd" in r.stdout
    for row in res["rows"]:
        flash = [a for a in row["aims"] if a["vs"] == "FlashMLA"]
        if row["group"] == "memory":  # measured: a ratio and a verdict that agrees with it
            assert row["x_flashmla"] == pytest.approx(row["flashmla_ms"] / row["ms"])
            assert flash[0]["met"] == (flash[0]["ratio"] >= 1.1)
        else:  # fp8 and page 16: FlashMLA cannot run them, and the row says so
            assert row.get("flashmla_ms") is None
            assert any("page 64 only" in n for n in row["notes"])


def test_aim_verdicts():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import mla_bench
    finally:
        sys.path.pop(0)
    assert mla_bench.aim("copy", 0.91, 0.9)["met"] is True
    assert mla_bench.aim("copy", 0.89, 0.9)["met"] is False
    assert mla_bench.aim("page 64 time", 1.06, 1.05, higher_is_better=False)["met"] is False
    assert mla_bench.aim("page 64 time", 0.97, 1.05, higher_is_better=False)["met"] is True
    assert mla_bench.aim("FlashMLA", None, 1.1)["met"] is None
    assert mla_bench.fmt(None, "7.2f") == "      -"


def test_missing_flashmla_folder(tmp_path):
    r = run("--dry-run", "--flashmla", str(tmp_path / "absent"), "--out", str(tmp_path), "--rows", "memory")
    assert r.returncode == 0, r.stderr
    res = load_json(tmp_path)
    assert res["peers"]["flashmla"]["status"].startswith("not found")
    assert all(a["met"] is None for row in res["rows"] for a in row["aims"] if a["vs"] == "FlashMLA")
    assert "FlashMLA not found" in r.stdout
