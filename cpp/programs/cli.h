// cli.h — the programs' command line: a small parser of our own (about 350 lines) rather than a
// vendored library, because what the programs need is specific: defaults that depend on the
// device and on --small, an allowed range on every number (a bad value is ONE line naming the
// flag and its range, exit status 2), lists and sweep cases checked the same way, and the common
// flags (--device, --dtype, --check, --iters, --json, ...) that every program shares.
//
//   int64_t B;
//   Cli cli("flash_attention", "naive vs flash attention");
//   cli.flag(&B, "--batch,-b", {8, 1, 2}, {1, 65536}, "batch size");  // default cuda / cpu / --small
//   Env env = cli.parse(argc, argv, DType::f16);
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "common.h"
#include "env.h"

namespace harness {

// A flag default may depend on the device and on --small: {on cuda, on cpu, with --small}.
struct Def {
  std::string cuda, cpu, small;
  Def(int all);
  Def(int on_cuda, int on_cpu, int with_small);
  Def(const char* all);
  Def(const char* on_cuda, const char* on_cpu, const char* with_small);
};

// The values an integer may take: lo <= x <= hi and x % multiple == 0.
struct Range {
  int64_t lo = 0, hi = 0, multiple = 1;
  bool contains(int64_t x) const { return x >= lo && x <= hi && x % multiple == 0; }
  std::string str() const;  // "[1, 1024]" or "[8, 256], a multiple of 8"
};

// Limits shared by the programs (the memory check refuses what does not fit before these do).
constexpr int64_t kMaxBatch = 65536, kMaxHeads = 1024, kMaxLen = 1 << 22, kMaxPage = 4096;
constexpr Range kHeadDims{8, 256, 8};  // what the kernels take

// A sweep case "64x4096p16q2": batch x length, then letter-number options.
struct Case {
  int64_t batch = 1, len = 1;
  std::vector<std::pair<char, int64_t>> opt;
  int64_t get(char key, int64_t fallback) const;
};
// What a cases flag accepts: batch and length ranges, and each option letter with its range.
struct CaseSpec {
  Range batch, len;
  std::vector<std::pair<char, Range>> options = {};
  std::string str() const;
};

[[noreturn]] void usage_error(const std::string& msg);  // throws UsageError (exit status 2)

class Cli {
 public:
  Cli(std::string program, std::string about);
  // names: "--batch,-b". Values are parsed and range-checked once the device is known.
  void flag(int64_t* out, const std::string& names, Def def, Range range, const std::string& help);
  void flag(std::vector<int64_t>* out, const std::string& names, Def def, Range each, const std::string& help);
  void flag(std::vector<Case>* out, const std::string& names, Def def, CaseSpec spec, const std::string& help);
  void flag(std::string* out, const std::string& names, Def def, std::vector<std::string> choices,
            const std::string& help);  // empty choices: any string
  void flag(bool* out, const std::string& names, const std::string& help);  // a switch, off
  // Parses argv: prints the usage and exits 0 on --help, exits 77 for --device cuda without a
  // GPU, throws UsageError on a bad flag; sets every flag and prepares the device.
  Env parse(int argc, char** argv, DType default_dtype);
  void usage(FILE* f) const;

 private:
  enum class Kind { i64, list, cases, str, boolean };
  struct Flag {
    std::vector<std::string> names;
    Kind kind;
    void* out;
    Def def;
    std::string help;
    Range range;
    CaseSpec spec;
    std::vector<std::string> choices;
  };
  void set(const Flag& fl, const std::string& value) const;
  std::string program_, about_;
  std::vector<Flag> flags_;
  size_t n_program_flags_ = 0;
};

}  // namespace harness
