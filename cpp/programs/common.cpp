// common.cpp — see common.h.
#include "common.h"

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <exception>

namespace harness {

std::string fmt(const char* f, ...) {
  va_list ap;
  va_start(ap, f);
  va_list again;
  va_copy(again, ap);
  const int n = vsnprintf(nullptr, 0, f, ap);
  va_end(ap);
  std::string s(size_t(n > 0 ? n : 0), '\0');
  vsnprintf(&s[0], s.size() + 1, f, again);
  va_end(again);
  return s;
}

std::string bytes_str(double b) {
  if (b >= 1024.0 * 1024 * 1024) return fmt("%.2f GiB", b / (1024.0 * 1024 * 1024));
  if (b >= 1024.0 * 1024) return fmt("%.1f MiB", b / (1024.0 * 1024));
  if (b >= 1024.0) return fmt("%.1f KiB", b / 1024.0);
  return fmt("%.0f B", b);
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

int guarded(int argc, char** argv, int (*body)(int, char**)) {
  const char* slash = argc > 0 ? strrchr(argv[0], '/') : nullptr;
  const char* name = argc > 0 ? (slash ? slash + 1 : argv[0]) : "program";
  try {
    return body(argc, argv);
  } catch (const UsageError& e) {
    fflush(stdout);
    fprintf(stderr, "%s: %s\nusage: %s [flags]  (%s --help lists them)\n", name, e.what(), name, name);
  } catch (const std::exception& e) {
    fflush(stdout);
    fprintf(stderr, "%s: error: %s\n", name, e.what());
    return kExitMismatch;
  } catch (...) {
    fflush(stdout);
    fprintf(stderr, "%s: error: unknown exception\n", name);
    return kExitMismatch;
  }
  return kExitUsage;
}

}  // namespace harness
