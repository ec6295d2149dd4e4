// table.h — the one result table every program prints: a text table on stdout (stderr with
// --json -) and, with --json FILE|-, the same rows as JSON.
#pragma once

#include <deque>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "env.h"
#include "oracle.h"
#include "tensor.h"

namespace harness {

enum class Bound { compute, memory };

struct Row {
  std::string variant, shape, device;
  double ms = -1;                // per call; < 0: not run
  int repeat = 1;                // calls per timed run (a loop of steps): ms = run time / repeat
  double flops = 0, bytes = 0;   // of one call; 0 = not reported
  Bound bound = Bound::compute;  // which peak "% of peak" refers to
  double extra_bytes = -1;       // extra memory (workspace, materialised scores), -1 = none
  std::vector<std::pair<std::string, std::string>> extra;  // program-specific columns
  CheckResult check;
  std::string error, note;
  void set(const std::string& column, const std::string& value);
};

class Table {
 public:
  explicit Table(Env& env);  // prints the run's header (device, peaks, dtype, seed, iterations)
  Row& add(const std::string& variant, const std::string& shape);
  // Poisons `outputs`, times fn (env.time_ms) and prints a progress line. A cuattn::Error or
  // std::exception thrown by fn is recorded in the row (which then fails) instead of ending the
  // program; NotImplementedError is a note, not a failure. Returns true when it ran.
  bool run(Row& row, std::vector<Tensor*> outputs, const std::function<void()>& fn);
  // The same with the program's own timing: time() runs the work and returns ms per call (e.g.
  // the median of time_each, timing.h, over the steps of a loop).
  bool measure(Row& row, std::vector<Tensor*> outputs, const std::function<double()>& time);
  // Runs fn (an oracle comparison) and records a thrown error in the row's check.
  void check(Row& row, const std::function<CheckResult()>& fn);
  void footnote(const std::string& line) { notes_.push_back(line); }
  // A table of figures worked out rather than timed (e.g. cache bytes per token): printed at once,
  // numbers right-aligned from column `first_number`, and kept for --json ("facts").
  void facts(const std::string& title, const std::vector<std::string>& head,
             const std::vector<std::vector<std::string>>& rows, size_t first_number = 1);
  // Prints the table and the footnotes, writes --json; returns the exit status (0, or 1 on a
  // failure).
  int print() const;

 private:
  void progress(const Row& row, const std::string& what) const;
  void write_json(int status) const;
  Env& env_;
  struct Facts {
    std::string title;
    std::vector<std::string> head;
    std::vector<std::vector<std::string>> rows;
  };
  std::deque<Row> rows_;  // a deque: add() hands out references that must stay valid
  std::vector<std::string> notes_;
  std::vector<Facts> facts_;
};

}  // namespace harness
