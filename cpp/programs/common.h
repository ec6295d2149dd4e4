// common.h — exit codes, the two errors that end a program with exit status 2, and small
// formatting helpers shared by every part of the harness.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace harness {

constexpr int kExitMismatch = 1;  // a check failed, a variant or the program raised an error
constexpr int kExitUsage = 2;     // bad flags, or sizes whose memory does not fit
constexpr int kExitNoGpu = 77;    // --device cuda without a usable GPU (ctest's "skipped")

// A bad flag value: one line naming the flag and what it allows. Exit status 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Sizes whose tensors would not fit in the free host or device memory, found before allocating.
struct TooLarge : UsageError {
  using UsageError::UsageError;
};

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string bytes_str(double bytes);  // "16.25 GiB"
std::string shape_str(const std::vector<int64_t>& s);

// Runs a program's body: returns its exit status, or prints an error that escaped it on one line
// and returns 2 (UsageError, TooLarge) or 1 (anything else). Every program's main is this call.
int guarded(int argc, char** argv, int (*body)(int, char**));

}  // namespace harness
