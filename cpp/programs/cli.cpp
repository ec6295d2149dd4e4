// cli.cpp — see cli.h.
#include "cli.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <random>

namespace harness {

Def::Def(int all) : cuda(std::to_string(all)), cpu(cuda), small(cuda) {}
Def::Def(int a, int b, int c) : cuda(std::to_string(a)), cpu(std::to_string(b)), small(std::to_string(c)) {}
Def::Def(const char* all) : cuda(all), cpu(all), small(all) {}
Def::Def(const char* a, const char* b, const char* c) : cuda(a), cpu(b), small(c) {}

std::string Range::str() const {
  const std::string r = fmt("[%lld, %lld]", (long long)lo, (long long)hi);
  return multiple > 1 ? fmt("%s, a multiple of %lld", r.c_str(), (long long)multiple) : r;
}

std::string CaseSpec::str() const {
  std::string s = "BxL";
  for (const auto& o : options) s += fmt("[%c%c]", o.first, char(std::toupper(o.first)));
  s += fmt(" with B in %s, L in %s", batch.str().c_str(), len.str().c_str());
  for (const auto& o : options) s += fmt(", %c in %s", o.first, o.second.str().c_str());
  return s;
}

int64_t Case::get(char key, int64_t fallback) const {
  for (const auto& kv : opt)
    if (kv.first == key) return kv.second;
  return fallback;
}

void usage_error(const std::string& msg) { throw UsageError(msg); }

static std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t p = s.find(sep, start);
    out.push_back(s.substr(start, p - start));
    if (p == std::string::npos) break;
    start = p + 1;
  }
  return out;
}

// A whole decimal integer that fits int64 (no spaces, no exponent). *p is advanced past it.
static bool parse_int(const char** p, int64_t* v) {
  if (!std::isdigit(static_cast<unsigned char>(**p)) && **p != '-' && **p != '+') return false;
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(*p, &end, 10);
  if (end == *p || errno == ERANGE) return false;
  *p = end, *v = x;
  return true;
}

static bool parse_whole_int(const std::string& s, int64_t* v) {
  const char* p = s.c_str();
  return parse_int(&p, v) && *p == 0;
}

Cli::Cli(std::string program, std::string about) : program_(std::move(program)), about_(std::move(about)) {}

void Cli::flag(int64_t* out, const std::string& names, Def def, Range range, const std::string& help) {
  Flag f{split(names, ','), Kind::i64, out, def, help, {}, {}, {}};
  f.range = range;
  flags_.push_back(f);
}
void Cli::flag(std::vector<int64_t>* out, const std::string& names, Def def, Range each, const std::string& help) {
  Flag f{split(names, ','), Kind::list, out, def, help, {}, {}, {}};
  f.range = each;
  flags_.push_back(f);
}
void Cli::flag(std::vector<Case>* out, const std::string& names, Def def, CaseSpec spec, const std::string& help) {
  Flag f{split(names, ','), Kind::cases, out, def, help, {}, {}, {}};
  f.spec = spec;
  flags_.push_back(f);
}
void Cli::flag(std::string* out, const std::string& names, Def def, std::vector<std::string> choices,
               const std::string& help) {
  Flag f{split(names, ','), Kind::str, out, def, help, {}, {}, {}};
  f.choices = std::move(choices);
  flags_.push_back(f);
}
void Cli::flag(bool* out, const std::string& names, const std::string& help) {
  flags_.push_back({split(names, ','), Kind::boolean, out, Def("off"), help, {}, {}, {}});
}

void Cli::usage(FILE* f) const {
  fprintf(f, "usage: %s [flags]\n\n%s\n\n", program_.c_str(), about_.c_str());
  fprintf(f, "flags (default on cuda / on cpu / with --small), then the values allowed:\n");
  for (size_t k = 0; k < flags_.size(); ++k) {
    const Flag& fl = flags_[k];
    if (k == n_program_flags_) fprintf(f, "\ncommon flags:\n");
    std::vector<std::string> names = fl.names;  // short names first ("-b, --batch")
    std::sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) { return a.size() < b.size(); });
    std::string left;
    for (size_t i = 0; i < names.size(); ++i) left += (i ? ", " : "") + names[i];
    std::string allowed;
    if (fl.kind == Kind::i64) left += " N", allowed = " " + fl.range.str();
    if (fl.kind == Kind::list) left += " N,N,..", allowed = " each " + fl.range.str();
    if (fl.kind == Kind::cases) left += " CASES", allowed = " " + fl.spec.str();
    if (fl.kind == Kind::str) {
      left += " S";
      for (size_t i = 0; i < fl.choices.size(); ++i) allowed += (i ? ", " : " {") + fl.choices[i];
      if (!fl.choices.empty()) allowed += "}";
    }
    std::string d;
    if (fl.kind == Kind::boolean) d = "off";
    else if (fl.def.cuda == fl.def.cpu && fl.def.cpu == fl.def.small) d = fl.def.cuda;
    else d = fl.def.cuda + " / " + fl.def.cpu + " / " + fl.def.small;
    const std::string help = fl.help + (d.empty() ? "" : " (" + d + ")") + allowed;
    if (left.size() <= 26) fprintf(f, "  %-26s %s\n", left.c_str(), help.c_str());
    else fprintf(f, "  %s\n  %-26s %s\n", left.c_str(), "", help.c_str());
  }
  fprintf(f, "\n--check compares every variant with the harness's float64 reference; it fails on a\n"
             "rel-L2 error above 1e-2 (bf16), 2e-3 (f16), 1e-4 (f32), or on any NaN.\n"
             "exit status: 0 ok, 1 a check failed or a variant raised an error, 2 bad flags or sizes\n"
             "that do not fit in memory, 77 --device cuda without a usable GPU.\n");
}

// Parses `value` into the flag's variable, range-checked; UsageError names the flag on failure.
void Cli::set(const Flag& fl, const std::string& value) const {
  const std::string& name = fl.names[0];
  if (fl.kind == Kind::i64) {
    int64_t v = 0;
    if (!parse_whole_int(value, &v) || !fl.range.contains(v))
      usage_error(fmt("%s must be an integer in %s, got '%s'", name.c_str(), fl.range.str().c_str(), value.c_str()));
    *static_cast<int64_t*>(fl.out) = v;
  } else if (fl.kind == Kind::list) {
    std::vector<int64_t> out;
    for (const std::string& part : split(value, ',')) {
      int64_t v = 0;
      if (!parse_whole_int(part, &v) || !fl.range.contains(v) || out.size() >= 64)
        usage_error(fmt("%s must be a list of at most 64 integers, each in %s, got '%s'", name.c_str(),
                        fl.range.str().c_str(), value.c_str()));
      out.push_back(v);
    }
    *static_cast<std::vector<int64_t>*>(fl.out) = out;
  } else if (fl.kind == Kind::cases) {
    std::vector<Case> out;
    const std::string bad = fmt("%s must be comma-separated cases %s, got '%s'", name.c_str(), fl.spec.str().c_str(),
                                value.c_str());
    for (const std::string& part : split(value, ',')) {
      Case c;
      const char* p = part.c_str();
      if (!parse_int(&p, &c.batch) || !fl.spec.batch.contains(c.batch) || *p++ != 'x' || !parse_int(&p, &c.len) ||
          !fl.spec.len.contains(c.len) || out.size() >= 64)
        usage_error(bad);
      while (*p) {
        const char key = *p++;
        int64_t v = 0;
        auto o = std::find_if(fl.spec.options.begin(), fl.spec.options.end(), [&](const auto& kv) { return kv.first == key; });
        if (o == fl.spec.options.end() || !parse_int(&p, &v) || !o->second.contains(v)) usage_error(bad);
        c.opt.push_back({key, v});
      }
      out.push_back(c);
    }
    *static_cast<std::vector<Case>*>(fl.out) = out;
  } else if (fl.kind == Kind::str) {
    if (!fl.choices.empty() && std::find(fl.choices.begin(), fl.choices.end(), value) == fl.choices.end()) {
      std::string allowed;
      for (size_t i = 0; i < fl.choices.size(); ++i) allowed += (i ? ", " : "") + fl.choices[i];
      usage_error(fmt("%s must be one of %s, got '%s'", name.c_str(), allowed.c_str(), value.c_str()));
    }
    *static_cast<std::string*>(fl.out) = value;
  }
}

Env Cli::parse(int argc, char** argv, DType default_dtype) {
  // The common flags follow the program's in the same list.
  std::string device_s, dtype_s, init_s, json_s;
  int64_t iters = 0, warmup = 0, seed = -1;
  bool check = false, small = false;
  n_program_flags_ = flags_.size();
  flag(&device_s, "--device", Def(""), {"cpu", "cuda"}, "where to run (cuda when a GPU is usable, else cpu)");
  flag(&dtype_s, "--dtype", Def(""), {"f16", "bf16", "f32"}, "element type of q/k/v/out (f32: CPU only)");
  flag(&check, "--check", "compare every variant with the float64 reference; exit 1 on a mismatch");
  flag(&iters, "--iters", {20, 3, 3}, {1, 100000}, "timed runs; the median is reported");
  flag(&warmup, "--warmup", {3, 1, 1}, {0, 100000}, "untimed runs first");
  flag(&small, "--small", "tiny sizes: the whole program runs in seconds on a CPU");
  flag(&seed, "--seed", Def(-1), {-1, INT64_MAX}, "random seed (-1: a fresh one, printed)");
  flag(&init_s, "--init", Def("normal"), {"normal", "uniform"}, "distribution of the random inputs");
  flag(&json_s, "--json", Def(""), {}, "also write the results as JSON to FILE, or to stdout with '-'");

  // 1. Collect the given values.
  std::vector<std::string> given(flags_.size());
  std::vector<bool> seen(flags_.size(), false);
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], value;
    bool has_value = false;
    if (arg == "-h" || arg == "--help") {
      usage(stdout);
      exit(0);
    }
    const size_t eq = arg.find('=');
    if (arg.rfind("--", 0) == 0 && eq != std::string::npos) value = arg.substr(eq + 1), arg = arg.substr(0, eq), has_value = true;
    size_t k = 0;
    for (; k < flags_.size(); ++k)
      if (std::find(flags_[k].names.begin(), flags_[k].names.end(), arg) != flags_[k].names.end()) break;
    if (k == flags_.size()) usage_error("unknown flag '" + arg + "'");
    if (flags_[k].kind == Kind::boolean) {
      if (has_value && value != "1" && value != "0" && value != "true" && value != "false")
        usage_error(arg + " is a switch: it takes no value, or 0, 1, true, false");
      *static_cast<bool*>(flags_[k].out) = !has_value || value == "1" || value == "true";
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) usage_error(arg + " needs a value");
      value = argv[++i];
    }
    given[k] = value, seen[k] = true;
  }

  // 2. The device decides the defaults (--small, a switch, is set by now).
  Env env;
  env.program = program_, env.about = about_;
  const size_t i_device = n_program_flags_;
  if (seen[i_device]) set(flags_[i_device], given[i_device]);
  env.device = device_s == "cuda" || (device_s.empty() && cuattn::cuda_available()) ? DeviceType::cuda : DeviceType::cpu;
  if (env.cuda() && !cuattn::cuda_available()) {
    const cuattn::DeviceInfo d = cuattn::device_info(0);
    fprintf(stderr, "%s: --device cuda asked for, but no GPU is usable: %s\n"
                    "(run with --device cpu to use the CPU backend)\n",
            program_.c_str(), d.reason.empty() ? "no CUDA device" : d.reason.c_str());
    exit(kExitNoGpu);
  }

  // 3. Every flag gets its value or its default for this device, range-checked.
  for (size_t k = 0; k < flags_.size(); ++k) {
    const Flag& fl = flags_[k];
    if (fl.kind == Kind::boolean || k == i_device) continue;
    const std::string& v = seen[k] ? given[k] : small ? fl.def.small : env.cuda() ? fl.def.cuda : fl.def.cpu;
    if (seen[k] || !v.empty()) set(fl, v);
  }

  env.check = check, env.small = small;
  env.dtype = dtype_s == "f16" ? DType::f16 : dtype_s == "bf16" ? DType::bf16 : dtype_s == "f32" ? DType::f32 : default_dtype;
  if (env.dtype == DType::f32 && env.cuda())
    usage_error("--dtype f32 runs on the CPU only (--device cpu); the GPU kernels take f16 or bf16");
  env.normal = init_s == "normal";
  env.iters = int(iters), env.warmup = int(warmup);
  if (seed >= 0) {
    env.seed = uint64_t(seed);
  } else {
    std::random_device rd;
    env.seed = (uint64_t(rd()) << 20 ^ uint64_t(rd())) % 1000000007ull;
  }
  env.json_path = json_s;
  if (json_s == "-") {
    env.text = stderr;
  } else if (!json_s.empty()) {  // fail now, not after the run
    FILE* f = fopen(json_s.c_str(), "a");  // writable? (no truncation until the results are in)
    if (!f) usage_error(fmt("--json: cannot write '%s': %s", json_s.c_str(), strerror(errno)));
    fclose(f);
  }
  if (env.cuda()) env.setup_device();
  return env;
}

}  // namespace harness
