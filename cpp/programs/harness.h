// harness.h — what every standalone program shares, in one include:
//
//   common.h   exit codes, UsageError / TooLarge (exit status 2), guarded(main), fmt
//   cli.h      flags with device-dependent defaults and allowed ranges, sweep cases
//   env.h      the run environment: device, stream, dtype, iterations, random generator
//   tensor.h   host/device buffers, the harness's own dtype conversions, random inputs
//   timing.h   median of CUDA-event (or chrono) timings after warm-up, L2 flush, memory probe
//   oracle.h   the float64 reference that --check compares with, and the error measures
//   table.h    the one result table (text, and JSON with --json)
//
// A program reads like the experiment it runs:
//
//   static int run(int argc, char** argv) {
//     int64_t B, S;
//     Cli cli("flash_attention", "naive vs flash attention");
//     cli.flag(&B, "--batch,-b", {8, 1, 1}, {1, kMaxBatch}, "batch size");  // cuda / cpu / --small
//     cli.flag(&S, "--seqlen,-s", {4096, 1024, 97}, {1, kMaxLen}, "sequence length");
//     Env env = cli.parse(argc, argv, DType::f16);         // --device, --dtype, --check, ...
//     Table table(env);
//     Tensor q = env.random({B, S, H, D});                 // host copy + device copy
//     Row& row = table.add("flash", "B8 H32 S4096 D128");
//     table.run(row, {&out}, [&] { cuattn::attention(args, env.stream); });
//     table.check(row, [&] { return compare_slice(out, false, want, 1, slice, env); });
//     return table.print();                                // 0, or 1 on a mismatch / error
//   }
//   int main(int argc, char** argv) { return harness::guarded(argc, argv, run); }
//
// Exit status: 0 success, 1 a check failed or a variant raised an error, 2 bad flags or sizes
// that do not fit in memory, 77 a GPU was asked for but none is usable (ctest's "skipped").
#pragma once

#include "cli.h"
#include "common.h"
#include "env.h"
#include "oracle.h"
#include "table.h"
#include "tensor.h"
#include "timing.h"
