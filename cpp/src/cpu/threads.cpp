// cpu/threads.cpp — the CPU backend's one thread pool: parallel_for and the thread-count setting.
//
// With OpenMP (the usual case) parallel_for is an `omp parallel for` over the items, so the
// backend shares OpenMP's persistent threads with any other OpenMP code in the process. Without
// it, a pool of std::threads is started on first use and kept for the life of the process.
// Items are handed out one at a time (dynamic schedule): the backend's items are tiles of
// different costs (causal rows, varlen documents), so a static split would leave threads idle.
// A parallel_for called from inside a work item runs inline, and so does one in a process forked
// after the threads started: they did not survive the fork (libgomp would wait for them forever,
// e.g. in a multiprocessing worker), so a forked child runs its items on its one thread.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backend.h"

#if defined(_OPENMP)
#include <omp.h>
#endif
#include <unistd.h>

namespace cuattn {

namespace {

std::atomic<int> g_num_threads{0};  // 0: the default (OpenMP's, else the hardware's)

int default_threads() {
#if defined(_OPENMP)
  return std::max(1, omp_get_max_threads());  // honours OMP_NUM_THREADS
#else
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
#endif
}

thread_local bool t_in_worker = false;

// The process whose threads the pool holds (0: none started yet). False in a forked child.
std::atomic<pid_t> g_pool_pid{0};
bool pool_usable() {
  pid_t expected = 0;
  const pid_t self = getpid();
  return g_pool_pid.compare_exchange_strong(expected, self) || expected == self;
}

// Runs fn(i) for every i in [0, n), handing items out one at a time from a shared counter, and
// keeps the first exception (the remaining items are skipped once one has thrown).
struct Job {
  int64_t n = 0;
  const std::function<void(int64_t)>* fn = nullptr;
  std::atomic<int64_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mutex;

  void work() {
    const bool outer = t_in_worker;
    t_in_worker = true;
    for (int64_t i; !failed.load(std::memory_order_relaxed) && (i = next.fetch_add(1)) < n;) {
      try {
        (*fn)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        failed = true;
      }
    }
    t_in_worker = outer;
  }
};

#if !defined(_OPENMP)
// Workers sleep on a condition variable between jobs; one job runs at a time (callers from
// different threads queue on call_mutex_).
class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }

  void run(Job& job, int nthreads) {
    std::lock_guard<std::mutex> call(call_mutex_);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      while (static_cast<int>(workers_.size()) < nthreads - 1) {
        const int id = static_cast<int>(workers_.size());
        workers_.emplace_back([this, id] { loop(id); });
      }
      job_ = &job;
      helpers_ = nthreads - 1;
      busy_ = helpers_;
      ++generation_;
    }
    wake_.notify_all();
    job.work();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return busy_ == 0; });
    job_ = nullptr;
  }

 private:
  void loop(int id) {
    uint64_t seen = 0;
    for (;;) {
      Job* job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        if (id >= helpers_) continue;  // this job asked for fewer threads
        job = job_;
      }
      job->work();
      std::lock_guard<std::mutex> lock(mutex_);
      if (--busy_ == 0) done_.notify_all();
    }
  }

  std::mutex call_mutex_, mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  Job* job_ = nullptr;
  int helpers_ = 0, busy_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};
#endif

}  // namespace

void set_num_threads(int n) {
  if (n < 1) throw ValueError("set_num_threads: n must be >= 1, got " + std::to_string(n));
  g_num_threads = n;
}

int get_num_threads() {
  const int n = g_num_threads.load();
  return n > 0 ? n : default_threads();
}

namespace cpu {

void parallel_for(int64_t n, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  const int nthreads = static_cast<int>(std::min<int64_t>(get_num_threads(), n));
  Job job;
  job.n = n;
  job.fn = &fn;
  if (nthreads <= 1 || t_in_worker || !pool_usable()) {
    job.work();
  } else {
#if defined(_OPENMP)
#pragma omp parallel num_threads(nthreads)
    job.work();
#else
    static Pool pool;
    pool.run(job, nthreads);
#endif
  }
  if (job.error) std::rethrow_exception(job.error);
}

}  // namespace cpu
}  // namespace cuattn
