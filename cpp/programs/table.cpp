// table.cpp — see table.h. Also Env::print_header.
#include "table.h"

#include <algorithm>
#include <cmath>
#include <thread>

namespace harness {

static const char* dtype_short(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::fp8_e4m3: return "fp8";
    default: return cuattn::dtype_name(t);
  }
}

void Env::print_header() const {
  fprintf(text, "%s — %s\n", program.c_str(), about.c_str());
  if (cuda())
    fprintf(text, "device: cuda, %s (sm_%d, %d SMs, %.2f GHz): tensor peak %.0f TFLOP/s (fp16/bf16 dense), "
                  "copy %.0f GB/s (measured, read + write)\n",
            device_name.c_str(), cc, sm_count, clock_ghz, peak_tflops, copy_gbps);
  else
    fprintf(text, "device: cpu (%u threads) — the CPU backend; no peak numbers\n",
            std::max(1u, std::thread::hardware_concurrency()));
  fprintf(text, "dtype %s, seed %llu, %s inputs, median of %d run%s after %d warm-up%s%s\n\n", dtype_short(dtype),
          (unsigned long long)seed, normal ? "normal" : "uniform", iters, iters == 1 ? "" : "s", warmup,
          small ? ", --small" : "", check ? ", --check" : "");
  fflush(text);
}

void Row::set(const std::string& column, const std::string& value) {
  for (auto& kv : extra)
    if (kv.first == column) {
      kv.second = value;
      return;
    }
  extra.push_back({column, value});
}

Table::Table(Env& env) : env_(env) { env.print_header(); }

Row& Table::add(const std::string& variant, const std::string& shape) {
  rows_.emplace_back();
  Row& r = rows_.back();
  r.variant = variant, r.shape = shape, r.device = env_.device_str();
  return r;
}

static std::string gbps_str(double g) { return fmt(g < 10 ? "%.2f" : g < 100 ? "%.1f" : "%.0f", g); }
static double tflops_of(const Row& r) { return r.ms > 0 && r.flops > 0 ? r.flops / (r.ms * 1e-3) / 1e12 : 0; }
static double gbps_of(const Row& r) { return r.ms > 0 && r.bytes > 0 ? r.bytes / (r.ms * 1e-3) / 1e9 : 0; }

void Table::progress(const Row& row, const std::string& what) const {
  fprintf(env_.text, "  %-24s %-32s %s\n", row.variant.c_str(), row.shape.c_str(), what.c_str());
  fflush(env_.text);
}

bool Table::run(Row& row, std::vector<Tensor*> outputs, const std::function<void()>& fn) {
  return measure(row, std::move(outputs), [&] { return env_.time_ms(fn) / std::max(row.repeat, 1); });
}

bool Table::measure(Row& row, std::vector<Tensor*> outputs, const std::function<double()>& time) {
  try {
    for (Tensor* t : outputs) t->poison(env_.stream);
    row.ms = time();
    env_.sync();
  } catch (const cuattn::NotImplementedError& e) {  // not on this device yet: a note, not a failure
    row.note += (row.note.empty() ? "" : "; ") + std::string("not run: ") + e.what();
    row.ms = -1;
    progress(row, std::string("not run: ") + e.what());
    return false;
  } catch (const std::exception& e) {
    row.error = e.what();
    row.ms = -1;
    progress(row, std::string("error: ") + e.what());
    return false;
  }
  std::string rate = fmt("%10.4f ms", row.ms);
  const double t = tflops_of(row), g = gbps_of(row);
  if (t > 0) rate += fmt(t < 1 ? "  %.3f TFLOP/s" : "  %.1f TFLOP/s", t);
  if (g > 0) rate += "  " + gbps_str(g) + " GB/s";
  if (row.repeat > 1) rate += fmt("  (per call, %d calls per run)", row.repeat);
  progress(row, rate);
  return true;
}

void Table::check(Row& row, const std::function<CheckResult()>& fn) {
  if (row.ms < 0) return;  // it never ran (an error, or skipped)
  try {
    row.check = fn();
  } catch (const std::exception& e) {
    row.check = CheckResult();
    row.check.done = true, row.check.ok = false;
    row.check.note = std::string("reference error: ") + e.what();
  }
}

static bool failed(const Row& r) { return !r.error.empty() || (r.check.done && !r.check.ok); }

static std::string peak_str(const Row& r, const Env& env) {
  if (r.ms < 0 || !env.cuda()) return "-";
  if (r.bound == Bound::compute && tflops_of(r) > 0 && env.peak_tflops > 0)
    return fmt("%.1f%% tensor", 100 * tflops_of(r) / env.peak_tflops);
  if (r.bound == Bound::memory && gbps_of(r) > 0 && env.copy_gbps > 0)
    return fmt("%.1f%% copy", 100 * gbps_of(r) / env.copy_gbps);
  return "-";
}

// Column-aligned text: a header, a rule, the rows. Cells from column first_number on are
// right-aligned (numbers), except the last one when last_left (a free-text note).
static void print_grid(FILE* f, const std::vector<std::string>& head, const std::vector<std::vector<std::string>>& cells,
                       size_t first_number, bool last_left) {
  std::vector<size_t> w(head.size());
  for (size_t i = 0; i < head.size(); ++i) w[i] = head[i].size();
  for (const auto& c : cells)
    for (size_t i = 0; i < c.size() && i < w.size(); ++i) w[i] = std::max(w[i], c[i].size());
  auto print_line = [&](const std::vector<std::string>& c) {
    std::string line;
    for (size_t i = 0; i < c.size() && i < w.size(); ++i) {
      const bool last = i + 1 == c.size();
      const bool right = i >= first_number && !(last && last_left);
      const std::string pad(w[i] - c[i].size(), ' ');
      line += right ? pad + c[i] : (last ? c[i] : c[i] + pad);
      if (!last) line += " | ";
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    fprintf(f, "%s\n", line.c_str());
  };
  print_line(head);
  std::vector<std::string> rule;
  for (size_t i = 0; i < head.size(); ++i) rule.push_back(std::string(w[i], '-'));
  print_line(rule);
  for (const auto& c : cells) print_line(c);
}

void Table::facts(const std::string& title, const std::vector<std::string>& head,
                  const std::vector<std::vector<std::string>>& rows, size_t first_number) {
  facts_.push_back({title, head, rows});
  fprintf(env_.text, "%s\n", title.c_str());
  print_grid(env_.text, head, rows, first_number, false);
  fprintf(env_.text, "\n");
  fflush(env_.text);
}

int Table::print() const {
  // Which optional columns have anything in them?
  bool any_flops = false, any_bytes = false, any_mem = false, any_check = false;
  std::vector<std::string> extra_cols;
  for (const Row& r : rows_) {
    any_flops |= r.flops > 0;
    any_bytes |= r.bytes > 0;
    any_mem |= r.extra_bytes >= 0;
    any_check |= r.check.done;
    for (const auto& kv : r.extra)
      if (std::find(extra_cols.begin(), extra_cols.end(), kv.first) == extra_cols.end()) extra_cols.push_back(kv.first);
  }
  std::vector<std::string> head = {"variant", "shape", "device", "time (ms)"};
  if (any_flops) head.push_back("TFLOP/s");
  if (any_bytes) head.push_back("GB/s");
  head.push_back("% of peak");
  if (any_mem) head.push_back("extra mem");
  for (const auto& c : extra_cols) head.push_back(c);
  if (any_check) head.push_back("err (rel-L2, max abs)");
  head.push_back("note");

  int status = 0;
  std::vector<std::vector<std::string>> cells;
  for (const Row& r : rows_) {
    std::vector<std::string> c = {r.variant, r.shape, r.device};
    c.push_back(r.ms >= 0 ? fmt(r.ms < 0.1 ? "%.4f" : r.ms < 10 ? "%.3f" : "%.2f", r.ms) : "-");
    const double tflops = tflops_of(r), gbps = gbps_of(r);
    if (any_flops) c.push_back(tflops > 0 ? fmt(tflops < 1 ? "%.3f" : "%.1f", tflops) : "-");
    if (any_bytes) c.push_back(gbps > 0 ? gbps_str(gbps) : "-");
    c.push_back(peak_str(r, env_));
    if (any_mem) c.push_back(r.extra_bytes >= 0 ? bytes_str(r.extra_bytes) : "-");
    for (const auto& col : extra_cols) {
      std::string v = "-";
      for (const auto& kv : r.extra)
        if (kv.first == col) v = kv.second;
      c.push_back(v);
    }
    if (any_check) {
      if (!r.check.done) c.push_back("-");
      else if (r.check.nan) c.push_back("NaN FAIL");
      else if (r.check.note.rfind("reference error", 0) == 0) c.push_back("FAIL");
      else c.push_back(fmt("%.1e, %.1e %s", r.check.rel_l2, r.check.max_abs, r.check.ok ? "ok" : "FAIL"));
    }
    std::string note = r.note;
    if (!r.check.note.empty()) note += (note.empty() ? "" : "; ") + r.check.note;
    if (!r.error.empty()) note += (note.empty() ? "" : "; ") + std::string("ERROR (see below)");
    c.push_back(note);
    cells.push_back(c);
    if (failed(r)) status = kExitMismatch;
  }

  FILE* f = env_.text;
  fprintf(f, "\n");
  print_grid(f, head, cells, 3, true);  // numbers right-aligned, the note left
  fprintf(f, "\n");
  if (env_.cuda())
    fprintf(f, "%% of peak: of the tensor-core peak (%.0f TFLOP/s, SMs x clock x flop/clk) for compute-bound rows, "
               "of the measured copy rate (%.0f GB/s) for memory-bound rows. L2 flushed before each timed run.\n",
            env_.peak_tflops, env_.copy_gbps);
  for (const auto& n : notes_) fprintf(f, "%s\n", n.c_str());
  for (const Row& r : rows_)
    if (!r.error.empty()) fprintf(f, "error in %s (%s): %s\n", r.variant.c_str(), r.shape.c_str(), r.error.c_str());
  if (any_check)
    fprintf(f, status ? "MISMATCH: see the err column\n" : "all results match the float64 reference\n");
  fflush(f);
  write_json(status);
  return status;
}

// ---------------------------------------------------------------------------------------------
// JSON: one object with the run's settings, the rows and the footnotes.

static std::string json_str(const std::string& s) {
  std::string r = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') r += '\\', r += char(c);
    else if (c < 0x20) r += fmt("\\u%04x", c);
    else r += char(c);
  }
  return r + "\"";
}
static std::string json_num(double x) { return std::isfinite(x) ? fmt("%.6g", x) : "null"; }

void Table::write_json(int status) const {
  if (env_.json_path.empty()) return;
  const bool to_stdout = env_.json_path == "-";
  FILE* f = to_stdout ? stdout : fopen(env_.json_path.c_str(), "w");
  if (!f) throw std::runtime_error("--json: cannot write '" + env_.json_path + "'");
  fprintf(f, "{\"program\": %s, \"device\": %s, \"device_name\": %s, \"dtype\": %s, \"seed\": %llu, "
             "\"iters\": %d, \"warmup\": %d, \"small\": %s, \"check\": %s, \"peak_tflops\": %s, \"copy_gbps\": %s,\n"
             " \"rows\": [",
          json_str(env_.program).c_str(), json_str(env_.device_str()).c_str(), json_str(env_.device_name).c_str(),
          json_str(dtype_short(env_.dtype)).c_str(), (unsigned long long)env_.seed, env_.iters, env_.warmup,
          env_.small ? "true" : "false", env_.check ? "true" : "false", json_num(env_.peak_tflops).c_str(),
          json_num(env_.copy_gbps).c_str());
  bool first = true;
  for (const Row& r : rows_) {
    std::string cols;
    for (const auto& kv : r.extra) cols += (cols.empty() ? "" : ", ") + json_str(kv.first) + ": " + json_str(kv.second);
    std::string check = "null";
    if (r.check.done)
      check = fmt("{\"ok\": %s, \"nan\": %s, \"rel_l2\": %s, \"max_abs\": %s, \"note\": %s}", r.check.ok ? "true" : "false",
                  r.check.nan ? "true" : "false", json_num(r.check.rel_l2).c_str(), json_num(r.check.max_abs).c_str(),
                  json_str(r.check.note).c_str());
    fprintf(f, "%s\n  {\"variant\": %s, \"shape\": %s, \"device\": %s, \"ms\": %s, \"calls_per_run\": %d, "
               "\"flops\": %s, \"bytes\": %s, \"tflops\": %s, \"gbps\": %s, \"extra_bytes\": %s, \"columns\": {%s}, "
               "\"check\": %s, \"note\": %s, \"error\": %s, \"failed\": %s}",
            first ? "" : ",", json_str(r.variant).c_str(), json_str(r.shape).c_str(), json_str(r.device).c_str(),
            r.ms >= 0 ? json_num(r.ms).c_str() : "null", r.repeat, json_num(r.flops).c_str(), json_num(r.bytes).c_str(),
            json_num(tflops_of(r)).c_str(), json_num(gbps_of(r)).c_str(),
            r.extra_bytes >= 0 ? json_num(r.extra_bytes).c_str() : "null", cols.c_str(), check.c_str(),
            json_str(r.note).c_str(), json_str(r.error).c_str(), failed(r) ? "true" : "false");
    first = false;
  }
  auto json_list = [](const std::vector<std::string>& v) {
    std::string r;
    for (const auto& x : v) r += (r.empty() ? "" : ", ") + json_str(x);
    return "[" + r + "]";
  };
  std::string facts;
  for (const Facts& t : facts_) {
    std::string rows;
    for (const auto& r : t.rows) rows += (rows.empty() ? "" : ", ") + json_list(r);
    facts += fmt("%s\n  {\"title\": %s, \"columns\": %s, \"rows\": [%s]}", facts.empty() ? "" : ",",
                 json_str(t.title).c_str(), json_list(t.head).c_str(), rows.c_str());
  }
  fprintf(f, "],\n \"facts\": [%s],\n \"notes\": %s, \"status\": %d}\n", facts.c_str(), json_list(notes_).c_str(),
          status);
  if (to_stdout) fflush(f);
  else fclose(f);
}

}  // namespace harness
