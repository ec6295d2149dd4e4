#!/usr/bin/env bash
# bench/gpu_suite.sh — everything the GPU has to show, in one call on the device machine:
#   build (sm_90a only, to save time) -> info -> pytest (GPU + CPU) -> programs' --check on cuda
#   -> compute-sanitizer (memcheck, racecheck) on a small case matrix -> benchmark.
# Logs go to $OUT (default /tmp/cuattn-out); a short table is printed last.
#
#   bash bench/gpu_suite.sh [stages...]
#   stages: build test portable check sanitize initcheck programs bench quickbench prefill decode targets ncu
#           probe trace heads chain hostile lab mla mlahopper mlatrace hopperdims listdiag
#   (portable: the attention tests that run the mma.sync kernel where the Hopper one would run,
#   through attention's internal _variant="portable=1" (the test stage runs them too); prefill / decode: that suite of bench.py only; ncu: Nsight Compute on the paged kernel for the
#   cases in $NCU_CASES, default 1x32768p16,16x8192p16; probe: bench/copy_probe.cu, the copy
#   engine's read rate by copy kind (128 and 512 MiB, zeroing and read flush); trace: bench/trace_decode.cu at B16 L8192 (bf16 and fp8) and B1 L32768,
#   the splits the scheduler picks; heads: ./paged_attention at D64/128/256, bf16 and fp8 caches;
#   chain: decode steps back to back, bench/decode_sweep.py --chain, with and without PDL;
#   mla: bench/mla_bench.py, the MLA rows against plain torch and FlashMLA, .devcarry/flashmla;
#   mlahopper: the sm_90a MLA decode kernels' tests, then their bench rows (hopper, kernels);
#   mlatrace: bench/trace_mla.py, the kernels of an mla_decode call with their durations and gaps,
#   beside FlashMLA (.devcarry/flashmla) and a pure read of the same bytes;
#   hopperdims: the Hopper kernel at D 96 / 192 / 256 / (192, 128) (the default on sm_90; the
#   tests force it with _variant="hopper=1"): tests/python/test_hopper_dims.py, then
#   bench.py --suite hopperdims against the portable kernel and cuDNN; listdiag: the paged decode
#   work list against the grid schedule under Nsight Compute (bench/ncu_decode_peer.py), then
#   bench/decode_targets.py over the list's cost-model settings)
#   (default: build test check sanitize bench)
#   Environment: CUATTN_GIT_SHA=<sha> names the commit in every result (pass it: the device
#   machine's copy of .git can point at an older commit); CUATTN_CUDA_ARCHS (default 90a; 80 runs
#   the portable path through PTX on a Hopper card); TESTS=<pytest files> for the test stage.
set -uo pipefail
OUT=${OUT:-/tmp/cuattn-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
stages=${*:-build test check sanitize bench}
summary=()
note() { summary+=("$1"); echo "== $1"; }
# Only 8 files come back from the device tool: stage logs live in $OUT/logs/ and are appended,
# each under a header, to $OUT/suite.log.
mkdir -p "$OUT/logs"
run() {  # run NAME LOGFILE CMD...: time a stage, keep its log, note pass/fail
  local name=$1 log=$2; shift 2
  local t0=$(date +%s)
  "$@" > "$OUT/logs/$log" 2>&1
  local rc=$?
  note "$name: rc=$rc ($(( $(date +%s) - t0 )) s, log $log)"
  { echo; echo "######## $name (rc=$rc) ########"; cat "$OUT/logs/$log"; } >> "$OUT/suite.log"
  return $rc
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv > "$OUT/logs/gpu.txt" 2>&1
cat "$OUT/logs/gpu.txt" > "$OUT/suite.log"
export CUATTN_GIT_SHA=${CUATTN_GIT_SHA:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}

for s in $stages; do
  case $s in
    build)
      CUATTN_CUDA_ARCHS=${CUATTN_CUDA_ARCHS:-90a} run build build.log \
        python3 -m pip install --no-build-isolation --no-deps -v . || { tail -40 "$OUT/logs/build.log"; break; }
      grep -E "spill|error" "$OUT/logs/build.log" | sort -u >> "$OUT/suite.log"
      cmake --build build -j 16 > /dev/null 2>&1  # programs + ctest binaries (same tree)
      for p in flash_attention sliding_window_attention paged_attention mla_attention persistent_decode attention_variants; do
        ln -sf build/bin/$p $p; done
      python3 -m cuattn info | tee -a "$OUT/suite.log" ;;
    test)
      # One pytest process per file, so a crash in one file cannot hide the others.
      for f in ${TESTS:-tests/python/test_*.py}; do
        run "pytest $(basename $f)" pytest_$(basename $f .py).log python3 -X faulthandler -m pytest -q -rs --maxfail=20 "$f"
        tail -1 "$OUT/logs/pytest_$(basename $f .py).log"
      done ;;
    portable)
      run "portable pytest" portable.log python3 -X faulthandler -m pytest -q -rs --maxfail=20 \
        -k portable tests/python/test_attention.py
      tail -1 "$OUT/logs/portable.log" ;;
    check)
      for p in flash_attention sliding_window_attention paged_attention mla_attention persistent_decode attention_variants; do
        run "$p --check" check_$p.log ./$p --check --device cuda --small
      done
      run ctest ctest.log ctest --test-dir build --output-on-failure ;;
    sanitize)
      for tool in memcheck racecheck; do
        run "compute-sanitizer $tool" sanitize_$tool.log \
          compute-sanitizer --tool $tool --error-exitcode 9 python3 tests/gpu/sanitize_cases.py
        tail -2 "$OUT/logs/sanitize_$tool.log"
      done ;;
    initcheck)
      run "compute-sanitizer initcheck" sanitize_initcheck.log \
        compute-sanitizer --tool initcheck --error-exitcode 9 python3 tests/gpu/sanitize_cases.py ;;
    programs)
      for p in flash_attention sliding_window_attention paged_attention attention_variants; do
        run "$p" prog_$p.log ./$p --device cuda; tail -15 "$OUT/logs/prog_$p.log"; done ;;
    bench)
      run bench bench.log python3 bench/bench.py --out "$OUT"; tail -40 "$OUT/logs/bench.log" ;;
    prefill)
      run "bench prefill" bench_prefill.log python3 bench/bench.py --suite prefill,masks --out "$OUT"
      tail -30 "$OUT/logs/bench_prefill.log" ;;
    decode)
      run "bench decode" bench_decode.log python3 bench/bench.py --suite decode --out "$OUT"
      tail -8 "$OUT/logs/bench_decode.log" ;;
    chain)
      # Decode steps back to back (append + paged_attention, as a serving loop issues them), with
      # and without programmatic dependent launch.
      run "decode chain" chain.log python3 bench/decode_sweep.py --cases 1x32768,16x8192,64x4096,256x2048 \
        --k 1 --chain 24 --variants pdl=0,default
      tail -5 "$OUT/logs/chain.log" ;;
    heads)
      # Other head dims and fp8 caches at the benchmark's decode shapes (no plan), one table each.
      for d in 64 128 256; do for f in "" --fp8; do
        run "paged D$d ${f:-bf16}" heads_d$d${f:+_fp8}.log ./paged_attention --device cuda --no-gather -d $d $f \
          --cases 1x32768p16,16x8192p16,64x4096p16,256x2048p16
        grep "^  paged  " "$OUT/logs/heads_d$d${f:+_fp8}.log"
      done; done ;;
    ncu)
      for c in $(echo "${NCU_CASES:-1x32768p16,16x8192p16}" | tr , ' '); do
        run "ncu paged $c" ncu_$c.log ncu --kernel-name regex:paged_decode --launch-skip 2 --launch-count 1 \
          --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
          --section SchedulerStats --section Occupancy --section LaunchStats \
          ./paged_attention --device cuda --cases $c --no-gather --iters 1 --warmup 2
        grep -E "Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Stall|Warp Cycles Per Issued|Issued Warp|No Eligible|L2 Hit|Registers|Waves" "$OUT/logs/ncu_$c.log" | head -30
      done ;;
    probe)
      nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Icuda -Icpp/include -Icpp/src \
        -o /tmp/copy_probe bench/copy_probe.cu > "$OUT/logs/probe_build.log" 2>&1
      run "copy probe" probe.log bash -c "for m in 128 512; do for f in write read; do /tmp/copy_probe \$m \$f; done; done"
      cat "$OUT/logs/probe.log" ;;
    trace)
      nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Icuda -Icpp/include -Icpp/src \
        -o /tmp/trace_decode bench/trace_decode.cu > "$OUT/logs/trace_build.log" 2>&1
      run "trace decode" trace.log bash -c "/tmp/trace_decode 8192 1 16; /tmp/trace_decode 32768 16 1; /tmp/trace_decode 8192 1 16 tma fp8"
      grep -E "rep 5|CTA z=0|loop done|merge done" "$OUT/logs/trace.log" ;;
    hostile)
      # The hostile-input and property tests on GPU arrays with CUATTN_CHECK off: bad contents may
      # raise or run, but must never fault (memcheck watches the hostile cases, each subprocess too).
      CUATTN_TEST_DEVICE=cuda run "hostile + properties (cuda)" hostile.log env -u CUATTN_CHECK \
        python3 -m pytest -q -rs tests/python/test_hostile.py tests/python/test_properties.py
      tail -3 "$OUT/logs/hostile.log"
      CUATTN_TEST_DEVICE=cuda run "memcheck hostile (cuda)" hostile_memcheck.log env -u CUATTN_CHECK \
        compute-sanitizer --tool memcheck --target-processes all --error-exitcode 9 \
        python3 -m pytest -q -x tests/python/test_hostile.py
      tail -3 "$OUT/logs/hostile_memcheck.log" ;;
    lab)
      run "persistent decode lab" lab.log ./persistent_decode --check --json "$OUT/lab.json"
      tail -12 "$OUT/logs/lab.log" ;;
    listdiag)
      # The work list against the grid schedule: Nsight Compute on one call of each (grid, shared
      # memory a CTA, occupancy, DRAM, stalls) at B1, B64 (bf16 and fp8) and the skewed batch,
      # then the list's cost-model knobs on the rows it loses or wins.
      for c in "1x32768 bf16" "64x4096 fp8" "64x4096 bf16" "skew bf16"; do
        set -- $c
        run "ncu list $1 $2" ncu_list_$1_$2.log ncu --profile-from-start off --clock-control none \
          --kernel-name regex:"paged_decode|build_worklist" --section SpeedOfLight --section Occupancy \
          --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis \
          python3 bench/ncu_decode_peer.py --case $1 --kv $2 --no-peer --variants default,list=1,list=1+drain=1
        grep -E "^  [a-z_]+kernel|Duration|DRAM Throughput|Achieved Occupancy|Block Limit (Shared|Reg)|Dynamic Shared|Registers Per|Grid Size|Waves Per SM|Stall (Long|Barrier|Wait)" \
          "$OUT/logs/ncu_list_$1_$2.log" | head -60
      done
      run "list sweep" list_sweep.log python3 bench/decode_targets.py --out "$OUT" --rows skew,waves,b1 \
        --variants default,list=1,list=1+drain=1,list=1+list_granule=256,list=1+list_granule=1024,list=1+list_overhead=16,list=1+tma=0
      tail -45 "$OUT/logs/list_sweep.log"
      # Page-row locality: on NHD pages a token's 8 kv heads share 2 KB, which the grid schedule reads
      # together (its CTAs of one sequence's heads walk the same keys at once) and the list does
      # not (its shares start at different keys in each head). HND pages make a head's rows
      # contiguous: if the list's loss shrinks there, locality is the cause.
      run "list layouts" list_layouts.log python3 bench/decode_sweep.py --cases 1x32768,64x4096 --k 1 \
        --layouts NHD,HND --variants default,list=1,list=1+drain=1
      tail -8 "$OUT/logs/list_layouts.log" ;;
    targets)
      # Paged decode against its ceilings and peers in one run (skew, partial waves, B1 against a
      # pure-read kernel, the fixed rows against cuDNN, the mixed batch).
      run "decode targets" decode_targets.log python3 bench/decode_targets.py --out "$OUT"
      tail -20 "$OUT/logs/decode_targets.log" ;;
    mla)
      # MLA decode and mla_attention against plain torch and FlashMLA's dense decode (built from the
      # git-ignored .devcarry/flashmla when present; its columns say so when it is not).
      run "mla bench" mla.log python3 bench/mla_bench.py --flashmla .devcarry/flashmla --out "$OUT"
      tail -32 "$OUT/logs/mla.log"
      run "mla program" mla_program.log ./mla_attention --device cuda
      grep -E "^(per_pair|materialise|absorb|mla_decode)" "$OUT/logs/mla_program.log" ;;
    mlahopper)
      # The sm_90a MLA decode kernels (_variant="hopper=1", "narrow=1"): their test cases first,
      # under a time limit (a wrong barrier phase hangs), then their rows and the kernel choice
      # against FlashMLA.
      run "pytest test_mla hopper" pytest_mla_hopper.log timeout 300 python3 -X faulthandler -m pytest -q -rs \
        --maxfail=10 -k "hopper or narrow or runs_the" tests/python/test_mla.py
      tail -3 "$OUT/logs/pytest_mla_hopper.log"
      run "mla bench hopper" mla_hopper.log timeout 400 python3 bench/mla_bench.py --flashmla .devcarry/flashmla \
        --rows hopper,kernels --out "$OUT"
      tail -24 "$OUT/logs/mla_hopper.log" ;;
    mlatrace)
      run "mla trace" mla_trace.log python3 bench/trace_mla.py --flashmla .devcarry/flashmla
      tail -45 "$OUT/logs/mla_trace.log" ;;
    hopperdims)
      run "pytest test_hopper_dims.py" pytest_test_hopper_dims.log python3 -X faulthandler -m pytest -q -rs \
        --maxfail=20 tests/python/test_hopper_dims.py
      tail -1 "$OUT/logs/pytest_test_hopper_dims.log"
      run "bench hopperdims" bench_hopperdims.log python3 bench/bench.py --suite hopperdims --out "$OUT"
      tail -24 "$OUT/logs/bench_hopperdims.log" ;;
    quickbench)
      run bench bench.log python3 bench/bench.py --quick --out "$OUT"; tail -30 "$OUT/logs/bench.log" ;;
    *) echo "unknown stage $s" ;;
  esac
done
# Only 8 files come back from the device tool: the stage logs travel as one archive.
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"
echo
echo "==== summary ($(sed -n 2p "$OUT/suite.log"))"
printf '%s\n' "${summary[@]}"
