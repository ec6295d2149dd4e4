#!/usr/bin/env bash
# bench/gpu_suite.sh — everything the GPU has to show, in one call on the device machine:
#   build (sm_90a only, to save time) -> info -> pytest (GPU + CPU) -> programs' --check on cuda
#   -> compute-sanitizer (memcheck, racecheck) on a small case matrix -> benchmark.
# Logs go to $OUT (default /tmp/cuattn-out); a short table is printed last.
#
#   bash bench/gpu_suite.sh [stages...]    stages: build test check sanitize bench quickbench programs
#   (default: build test check sanitize bench)
set -uo pipefail
OUT=${OUT:-/tmp/cuattn-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
stages=${*:-build test check sanitize bench}
summary=()
note() { summary+=("$1"); echo "== $1"; }
run() {  # run NAME LOGFILE CMD...: time a stage, keep its log, note pass/fail
  local name=$1 log=$2; shift 2
  local t0=$(date +%s)
  "$@" > "$OUT/$log" 2>&1
  local rc=$?
  note "$name: rc=$rc ($(( $(date +%s) - t0 )) s, log $log)"
  return $rc
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv > "$OUT/gpu.txt" 2>&1
export CUATTN_GIT_SHA=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)

for s in $stages; do
  case $s in
    build)
      CUATTN_CUDA_ARCHS=${CUATTN_CUDA_ARCHS:-90a} run build build.log \
        python3 -m pip install --no-build-isolation --no-deps -v . || { tail -40 "$OUT/build.log"; break; }
      grep -E "spill|error" "$OUT/build.log" | sort -u > "$OUT/spills.txt"
      cmake --build build -j 16 > /dev/null 2>&1  # programs + ctest binaries (same tree)
      for p in flash_attention sliding_window_attention paged_attention mla_attention persistent_decode attention_variants; do
        ln -sf build/bin/$p $p; done
      python3 -m cuattn info | tee -a "$OUT/build.log" ;;
    test)
      run pytest pytest.log python3 -m pytest -q -rs --maxfail=50 tests/python
      tail -3 "$OUT/pytest.log"; grep -E "^FAILED|Error" "$OUT/pytest.log" | head -30 ;;
    check)
      : > "$OUT/check.log"
      for p in flash_attention sliding_window_attention paged_attention mla_attention persistent_decode attention_variants; do
        run "$p --check" check_$p.log ./$p --check --device cuda --small
        tail -4 "$OUT/check_$p.log" >> "$OUT/check.log"
      done
      (cd build && ctest --output-on-failure > "$OUT/ctest.log" 2>&1; note "ctest: rc=$? ($(tail -1 "$OUT/ctest.log"))") ;;
    sanitize)
      for tool in memcheck racecheck; do
        run "compute-sanitizer $tool" sanitize_$tool.log \
          compute-sanitizer --tool $tool --error-exitcode 9 python3 tests/gpu/sanitize_cases.py
        tail -2 "$OUT/sanitize_$tool.log"
      done ;;
    initcheck)
      run "compute-sanitizer initcheck" sanitize_initcheck.log \
        compute-sanitizer --tool initcheck --error-exitcode 9 python3 tests/gpu/sanitize_cases.py ;;
    programs)
      for p in flash_attention sliding_window_attention paged_attention attention_variants; do
        run "$p" prog_$p.log ./$p --device cuda; tail -15 "$OUT/prog_$p.log"; done ;;
    bench)
      run bench bench.log python3 bench/bench.py --out "$OUT"; tail -40 "$OUT/bench.log" ;;
    quickbench)
      run bench bench.log python3 bench/bench.py --quick --out "$OUT"; tail -30 "$OUT/bench.log" ;;
    *) echo "unknown stage $s" ;;
  esac
done
echo
echo "==== summary ($(head -2 "$OUT/gpu.txt" | tail -1))"
printf '%s\n' "${summary[@]}"
