/*
 * vsgd.hpp: header-only C++17 wrapper over the C ABI in vsgd.h (ABI 2).
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * - vsgd::Optimizer owns a vsgd_optimizer handle (move-only, freed by the destructor).
 * - vsgd::Config owns a vsgd_config (an algorithm and its hyperparameters, set by name):
 *   copyable (a copy is a vsgd_config_clone) and movable.
 * - vsgd::Schedule owns a vsgd_schedule (a learning-rate schedule, fields set by name):
 *   movable only, since the C ABI has no vsgd_schedule_clone (Optimizer::schedule() hands
 *   out a new one whenever one is needed).
 * - Every failure throws vsgd::Error, carrying the vsgd_result code and the library's message
 *   (vsgd_last_error of the calling thread).
 * - vsgd::step() is the stateless kernel over caller-owned buffers, with vsgd::all_finite()
 *   for the verdict a sharded tensor's shards agree on (vsgd::Finite).
 * - Checkpoints: Optimizer::save() -> bytes, Optimizer::load(bytes), restore(bytes), and the
 *   atomic file forms save_file / load_file / restore_file (docs/checkpoint-format.md).
 *
 * Thread safety is the C library's: one thread per Optimizer at a time (a concurrent call
 * throws with VSGD_RESULT_HANDLE_BUSY), distinct Optimizers and the stateless step are
 * independent; a Config or Schedule may be read by many threads at once but not changed while
 * read. A moved-from Optimizer, Config or Schedule holds no handle; using it throws
 * (VSGD_RESULT_NULL_PARAMETER), it never crashes (copying a moved-from Config gives another
 * empty one).
 */
#ifndef VSGD_HPP
#define VSGD_HPP

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "vsgd.h"

namespace vsgd {

/// A failed call: the library's result code and message.
class Error : public std::runtime_error {
 public:
  Error(vsgd_result code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  /// The `VSGD_RESULT_*` code.
  vsgd_result code() const noexcept { return code_; }
  /// The code's name, e.g. "VSGD_RESULT_LENGTH_MISMATCH".
  const char* code_name() const noexcept { return vsgd_result_name(code_); }

 private:
  vsgd_result code_;
};

namespace detail {
/// The message of this thread's last failed call (vsgd_last_error).
inline std::string last_error() {
  std::size_t n = 0;
  vsgd_last_error(nullptr, 0, &n);  // size query
  std::string message(n, '\0');
  if (n > 0) vsgd_last_error(&message[0], n + 1, &n);
  return message;
}
/// Throws vsgd::Error for anything but VSGD_RESULT_OK, with this thread's last message.
inline void check(vsgd_result r) {
  if (r == VSGD_RESULT_OK) return;
  std::string message = last_error();
  if (message.empty()) message = vsgd_result_name(r);
  throw Error(r, message);
}
/// `path` as a C string; a path with an embedded NUL would be cut short silently, so it
/// throws VSGD_RESULT_INVALID_STRING instead.
inline const char* c_path(const std::string& path, const char* function) {
  if (path.find('\0') != std::string::npos) {
    throw Error(VSGD_RESULT_INVALID_STRING,
                std::string(function) + ": path contains a NUL character");
  }
  return path.c_str();
}
}  // namespace detail

/// Which optimizer.
enum class Algorithm : vsgd_algorithm {
  Vsgd = VSGD_ALGORITHM_VSGD,
  ConstantVsgd = VSGD_ALGORITHM_CONSTANT_VSGD,
  Adam = VSGD_ALGORITHM_ADAM,
  AdamW = VSGD_ALGORITHM_ADAMW,
  Sgdm = VSGD_ALGORITHM_SGDM,
};

/// What a step does with a non-finite gradient.
enum class Policy : vsgd_policy {
  Skip = VSGD_POLICY_SKIP,
  Error = VSGD_POLICY_ERROR,
  Propagate = VSGD_POLICY_PROPAGATE,
};

/// What a schedule's step number is: each tensor's own count (the default) or one global step
/// advanced by every successful multi-tensor step.
enum class ScheduleClock : vsgd_schedule_clock {
  PerTensor = VSGD_CLOCK_PER_TENSOR,
  Global = VSGD_CLOCK_GLOBAL,
};

/// Who decides whether a stateless step's gradient is finite: the step itself (Check), or
/// the caller, for a sharded tensor, with the verdict all shards agreed on (Yes / No; see
/// vsgd::all_finite and vsgd_finite in vsgd.h).
enum class Finite : vsgd_finite {
  Check = VSGD_FINITE_CHECK,
  Yes = VSGD_FINITE_YES,
  No = VSGD_FINITE_NO,
};

/// Element type of a tensor.
enum class DType : vsgd_dtype {
  F32 = VSGD_DTYPE_F32,
  F64 = VSGD_DTYPE_F64,
  BF16 = VSGD_DTYPE_BF16,
  F16 = VSGD_DTYPE_F16,
};

/// What a step did to one tensor.
enum class StepOutcome : vsgd_step_outcome {
  Applied = VSGD_STEP_APPLIED,
  Skipped = VSGD_STEP_SKIPPED,
};

/// Shape of a learning-rate schedule.
enum class ScheduleKind : vsgd_schedule_kind {
  Constant = VSGD_SCHEDULE_CONSTANT,
  StepDecay = VSGD_SCHEDULE_STEP_DECAY,
  Cosine = VSGD_SCHEDULE_COSINE,
  OneCycle = VSGD_SCHEDULE_ONE_CYCLE,
};

/// Throws unless the loaded library implements the ABI this header describes.
inline void check_abi() {
  if (vsgd_abi_version() != VSGD_ABI_VERSION) {
    throw Error(VSGD_RESULT_OTHER_ERROR,
                "libvsgd ABI " + std::to_string(vsgd_abi_version()) +
                    " loaded, header describes ABI " +
                    std::to_string(VSGD_ABI_VERSION));
  }
}

/// The library's version string ("MAJOR.MINOR.PATCH").
inline std::string version() { return vsgd_version(); }

/// The name of `algorithm` ("vsgd", "constant_vsgd", "adam", "adamw", "sgdm").
inline std::string algorithm_name(Algorithm algorithm) {
  const char* s = nullptr;
  detail::check(vsgd_algorithm_name(static_cast<vsgd_algorithm>(algorithm), &s));
  return s;
}

/// The algorithm named `name` (as algorithm_name() writes it); VSGD_RESULT_INVALID_ENUM if
/// none.
inline Algorithm algorithm_from_name(const char* name) {
  vsgd_algorithm a = 0;
  detail::check(vsgd_algorithm_from_name(name, &a));
  return static_cast<Algorithm>(a);
}

/// Name of hyperparameter `index` of `algorithm`; VSGD_RESULT_UNKNOWN_HYPERPARAMETER past the
/// last one.
inline std::string hyper_name(Algorithm algorithm, std::size_t index) {
  const char* s = nullptr;
  detail::check(vsgd_hyper_name(static_cast<vsgd_algorithm>(algorithm), index, &s));
  return s;
}

/// Every hyperparameter name of `algorithm`, in the library's order (those Config::set and
/// Config::get take).
inline std::vector<std::string> hyper_names(Algorithm algorithm) {
  std::vector<std::string> names;
  for (std::size_t i = 0;; i++) {
    const char* s = nullptr;
    const vsgd_result r = vsgd_hyper_name(static_cast<vsgd_algorithm>(algorithm), i, &s);
    if (r == VSGD_RESULT_UNKNOWN_HYPERPARAMETER) return names;
    detail::check(r);
    names.emplace_back(s);
  }
}

/// Number of state arrays `algorithm` keeps per tensor.
inline std::size_t state_count(Algorithm algorithm) {
  std::size_t n = 0;
  detail::check(vsgd_state_count(static_cast<vsgd_algorithm>(algorithm), &n));
  return n;
}

/// Name of state array `index` of `algorithm`.
inline std::string state_name(Algorithm algorithm, std::size_t index) {
  const char* s = nullptr;
  detail::check(vsgd_state_name(static_cast<vsgd_algorithm>(algorithm), index, &s));
  return s;
}

/// An algorithm and its hyperparameters: owns a vsgd_config. Copyable (vsgd_config_clone)
/// and movable; a moved-from Config is empty.
class Config {
 public:
  /// The defaults of `algorithm` (vsgd_config_new).
  explicit Config(Algorithm algorithm) {
    detail::check(vsgd_config_new(static_cast<vsgd_algorithm>(algorithm), &h_));
  }
  /// Takes ownership of a configuration from vsgd_config_new / _clone /
  /// vsgd_optimizer_config (may be NULL).
  static Config adopt(vsgd_config* handle) noexcept { return Config(handle); }

  ~Config() { vsgd_config_free(h_); }
  /// A copy (vsgd_config_clone); the copy of an empty Config is empty.
  Config(const Config& other) {
    if (other.h_ != nullptr) detail::check(vsgd_config_clone(other.h_, &h_));
  }
  Config& operator=(const Config& other) {
    if (this != &other) {
      Config copy(other);
      swap(copy);
    }
    return *this;
  }
  Config(Config&& other) noexcept : h_(std::exchange(other.h_, nullptr)) {}
  Config& operator=(Config&& other) noexcept {
    if (this != &other) {
      vsgd_config_free(h_);
      h_ = std::exchange(other.h_, nullptr);
    }
    return *this;
  }
  void swap(Config& other) noexcept { std::swap(h_, other.h_); }
  friend void swap(Config& a, Config& b) noexcept { a.swap(b); }

  /// The configuration, still owned by this object.
  const vsgd_config* get() const noexcept { return h_; }
  vsgd_config* get() noexcept { return h_; }
  /// Gives up ownership: the caller must vsgd_config_free the result.
  vsgd_config* release() noexcept { return std::exchange(h_, nullptr); }
  explicit operator bool() const noexcept { return h_ != nullptr; }

  /// Sets a hyperparameter by name (booleans: 0 or 1). The range is checked when the
  /// configuration is used, or by validate(), so fields may be set in any order.
  Config& set(const char* name, double value) {
    detail::check(vsgd_config_set(h_, name, value));
    return *this;
  }
  /// Reads a hyperparameter by name (booleans read as 0 or 1).
  double get(const char* name) const {
    double v = 0;
    detail::check(vsgd_config_get(h_, name, &v));
    return v;
  }
  /// Throws VSGD_RESULT_INVALID_CONFIG naming the first field out of range.
  void validate() const { detail::check(vsgd_config_validate(h_)); }
  Algorithm algorithm() const {
    vsgd_algorithm a = 0;
    detail::check(vsgd_config_algorithm(h_, &a));
    return static_cast<Algorithm>(a);
  }
  /// The names set() and get() take, in the library's order (vsgd::hyper_names).
  std::vector<std::string> hyper_names() const { return vsgd::hyper_names(algorithm()); }

 private:
  explicit Config(vsgd_config* h) noexcept : h_(h) {}
  vsgd_config* h_ = nullptr;
};

/// A learning-rate schedule: owns a vsgd_schedule. Movable only (the C ABI has no clone);
/// a moved-from Schedule is empty. Fields by kind (see vsgd_schedule_new): `warmup` (all),
/// `every` and `factor` (StepDecay), `total` and `min_factor` (Cosine), `total`,
/// `pct_start`, `div_factor` and `final_div_factor` (OneCycle); step counts are whole
/// numbers passed as doubles.
class Schedule {
 public:
  /// A schedule of `kind` with the library's defaults (vsgd_schedule_new).
  explicit Schedule(ScheduleKind kind = ScheduleKind::Constant) {
    detail::check(vsgd_schedule_new(static_cast<vsgd_schedule_kind>(kind), &h_));
  }
  /// Takes ownership of a schedule from vsgd_schedule_new / vsgd_optimizer_schedule (may be
  /// NULL).
  static Schedule adopt(vsgd_schedule* handle) noexcept { return Schedule(handle); }

  /// The base learning rate at every step.
  static Schedule constant() { return Schedule(ScheduleKind::Constant); }
  /// η · factor^⌊(t − 1) / every⌋.
  static Schedule step_decay(std::uint64_t every, double factor) {
    Schedule s(ScheduleKind::StepDecay);
    s.set("every", static_cast<double>(every)).set("factor", factor);
    return s;
  }
  /// Cosine annealing from η to min_factor·η over `total` steps, then flat.
  static Schedule cosine(std::uint64_t total, double min_factor = 0.0) {
    Schedule s(ScheduleKind::Cosine);
    s.set("total", static_cast<double>(total)).set("min_factor", min_factor);
    return s;
  }
  /// One-cycle over `total` steps (torch's OneCycleLR); the other fields keep torch's
  /// defaults (set them with set()).
  static Schedule one_cycle(std::uint64_t total) {
    Schedule s(ScheduleKind::OneCycle);
    s.set("total", static_cast<double>(total));
    return s;
  }

  ~Schedule() { vsgd_schedule_free(h_); }
  /// A copy (vsgd_schedule_clone); the copy of an empty Schedule is empty.
  Schedule(const Schedule& other) {
    if (other.h_ != nullptr) detail::check(vsgd_schedule_clone(other.h_, &h_));
  }
  Schedule& operator=(const Schedule& other) {
    if (this != &other) {
      Schedule copy(other);
      swap(copy);
    }
    return *this;
  }
  Schedule(Schedule&& other) noexcept : h_(std::exchange(other.h_, nullptr)) {}
  Schedule& operator=(Schedule&& other) noexcept {
    if (this != &other) {
      vsgd_schedule_free(h_);
      h_ = std::exchange(other.h_, nullptr);
    }
    return *this;
  }
  void swap(Schedule& other) noexcept { std::swap(h_, other.h_); }
  friend void swap(Schedule& a, Schedule& b) noexcept { a.swap(b); }

  /// The schedule, still owned by this object.
  const vsgd_schedule* get() const noexcept { return h_; }
  vsgd_schedule* get() noexcept { return h_; }
  /// Gives up ownership: the caller must vsgd_schedule_free the result.
  vsgd_schedule* release() noexcept { return std::exchange(h_, nullptr); }
  explicit operator bool() const noexcept { return h_ != nullptr; }

  ScheduleKind kind() const {
    vsgd_schedule_kind k = 0;
    detail::check(vsgd_schedule_kind_of(h_, &k));
    return static_cast<ScheduleKind>(k);
  }
  /// Sets a field by name (VSGD_RESULT_INVALID_SCHEDULE for a field the kind does not have,
  /// or a step count that is not a whole number); ranges are checked where the schedule is
  /// used, or by validate().
  Schedule& set(const char* name, double value) {
    detail::check(vsgd_schedule_set(h_, name, value));
    return *this;
  }
  /// Reads a field by name.
  double get(const char* name) const {
    double v = 0;
    detail::check(vsgd_schedule_get(h_, name, &v));
    return v;
  }
  /// Throws VSGD_RESULT_INVALID_SCHEDULE naming the first field out of range.
  void validate() const { detail::check(vsgd_schedule_validate(h_)); }

 private:
  explicit Schedule(vsgd_schedule* h) noexcept : h_(h) {}
  vsgd_schedule* h_ = nullptr;
};

/// Whether every element of x[0..len) is finite (no NaN, no infinity): one shard's verdict,
/// to be AND-ed across shards and passed to step() as Finite::Yes / Finite::No.
inline bool all_finite(const float* x, std::size_t len) {
  std::uint32_t out = 0;
  detail::check(vsgd_all_finite_f32(x, len, &out));
  return out != 0;
}
inline bool all_finite(const double* x, std::size_t len) {
  std::uint32_t out = 0;
  detail::check(vsgd_all_finite_f64(x, len, &out));
  return out != 0;
}
template <class T>
bool all_finite(const std::vector<T>& x) {
  return all_finite(x.data(), x.size());
}

/// One stateless step of one tensor (or shard) over caller-owned buffers; see vsgd_step_f32.
/// `state` holds `count` pointers (state_count()), each to `len` elements. A shard of a
/// sharded tensor passes `finite` = Finite::Yes / Finite::No, the verdict all its shards
/// agreed on, so that they all skip or all apply.
inline StepOutcome step(const Config& config, std::uint64_t t, double lr, float* param,
                        const float* grad, std::size_t len, float* const* state,
                        std::size_t count, Policy policy = Policy::Skip,
                        Finite finite = Finite::Check) {
  vsgd_step_outcome o = VSGD_STEP_APPLIED;
  detail::check(vsgd_step_f32(config.get(), t, lr, param, grad, len, state, count,
                              static_cast<vsgd_policy>(policy),
                              static_cast<vsgd_finite>(finite), &o));
  return static_cast<StepOutcome>(o);
}

/// As above, for double buffers (vsgd_step_f64).
inline StepOutcome step(const Config& config, std::uint64_t t, double lr, double* param,
                        const double* grad, std::size_t len, double* const* state,
                        std::size_t count, Policy policy = Policy::Skip,
                        Finite finite = Finite::Check) {
  vsgd_step_outcome o = VSGD_STEP_APPLIED;
  detail::check(vsgd_step_f64(config.get(), t, lr, param, grad, len, state, count,
                              static_cast<vsgd_policy>(policy),
                              static_cast<vsgd_finite>(finite), &o));
  return static_cast<StepOutcome>(o);
}

/// Mixed precision: one stateless step of a bfloat16 tensor (uint16_t bits) with float state,
/// rounded once to nearest even (vsgd_step_bf16).
inline StepOutcome step_bf16(const Config& config, std::uint64_t t, double lr,
                             std::uint16_t* param, const std::uint16_t* grad, std::size_t len,
                             float* const* state, std::size_t count,
                             Policy policy = Policy::Skip, Finite finite = Finite::Check) {
  vsgd_step_outcome o = VSGD_STEP_APPLIED;
  detail::check(vsgd_step_bf16(config.get(), t, lr, param, grad, len, state, count,
                               static_cast<vsgd_policy>(policy),
                               static_cast<vsgd_finite>(finite), &o));
  return static_cast<StepOutcome>(o);
}

/// As step_bf16, for IEEE binary16 parameters and gradients (vsgd_step_f16).
inline StepOutcome step_f16(const Config& config, std::uint64_t t, double lr,
                            std::uint16_t* param, const std::uint16_t* grad, std::size_t len,
                            float* const* state, std::size_t count,
                            Policy policy = Policy::Skip, Finite finite = Finite::Check) {
  vsgd_step_outcome o = VSGD_STEP_APPLIED;
  detail::check(vsgd_step_f16(config.get(), t, lr, param, grad, len, state, count,
                              static_cast<vsgd_policy>(policy),
                              static_cast<vsgd_finite>(finite), &o));
  return static_cast<StepOutcome>(o);
}

/// bfloat16 parameters and bfloat16 state with stochastic rounding keyed by (seed, t, array,
/// offset + index) (vsgd_step_bf16_sr).
inline StepOutcome step_bf16_sr(const Config& config, std::uint64_t t, double lr,
                                std::uint16_t* param, const std::uint16_t* grad,
                                std::size_t len, std::uint16_t* const* state, std::size_t count,
                                std::uint64_t seed, std::uint64_t offset = 0,
                                Policy policy = Policy::Skip, Finite finite = Finite::Check) {
  vsgd_step_outcome o = VSGD_STEP_APPLIED;
  detail::check(vsgd_step_bf16_sr(config.get(), t, lr, param, grad, len, state, count, seed,
                                  offset, static_cast<vsgd_policy>(policy),
                                  static_cast<vsgd_finite>(finite), &o));
  return static_cast<StepOutcome>(o);
}

/// Whether every bfloat16 (all_finite_bf16) or binary16 (all_finite_f16) element is finite.
inline bool all_finite_bf16(const std::uint16_t* x, std::size_t len) {
  std::uint32_t out = 0;
  detail::check(vsgd_all_finite_bf16(x, len, &out));
  return out != 0;
}
inline bool all_finite_f16(const std::uint16_t* x, std::size_t len) {
  std::uint32_t out = 0;
  detail::check(vsgd_all_finite_f16(x, len, &out));
  return out != 0;
}

/// Whether a GPU can be used (the CUDA driver loads and initializes). Without one it returns
/// false; `reason`, if given, receives vsgd_last_error's explanation.
inline bool cuda_available(std::string* reason = nullptr) {
  const vsgd_result r = vsgd_cuda_available();
  if (r == VSGD_RESULT_NO_DEVICE) {
    if (reason != nullptr) *reason = detail::last_error();
    return false;
  }
  detail::check(r);
  return true;
}

/// Enqueues one step of `count` tensors on `stream` in the current CUDA context (see
/// vsgd_cuda_step: device addresses, the verdict array of count + 1 uint32_t in device memory
/// at `verdict`). Throws vsgd::Error (VSGD_RESULT_NO_DEVICE without a GPU).
inline void cuda_step(const Config& config, Policy policy, const vsgd_cuda_tensor* tensors,
                      std::size_t count, std::uint64_t verdict, void* stream = nullptr) {
  detail::check(vsgd_cuda_step(config.get(), static_cast<vsgd_policy>(policy), tensors, count,
                               sizeof(vsgd_cuda_tensor), verdict, stream));
}

/// Owner of a vsgd_optimizer handle: move-only, freed by the destructor.
class Optimizer {
 public:
  /// A handle with one group (group 0) configured by `config` (copied).
  explicit Optimizer(const Config& config) {
    detail::check(vsgd_optimizer_new(config.get(), &h_));
  }
  /// Takes ownership of a handle from vsgd_optimizer_new / vsgd_optimizer_load* (may be
  /// NULL).
  static Optimizer adopt(vsgd_optimizer* handle) noexcept { return Optimizer(handle); }

  ~Optimizer() { vsgd_optimizer_free(h_); }
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;
  Optimizer(Optimizer&& other) noexcept : h_(std::exchange(other.h_, nullptr)) {}
  Optimizer& operator=(Optimizer&& other) noexcept {
    if (this != &other) {
      vsgd_optimizer_free(h_);
      h_ = std::exchange(other.h_, nullptr);
    }
    return *this;
  }
  void swap(Optimizer& other) noexcept { std::swap(h_, other.h_); }
  friend void swap(Optimizer& a, Optimizer& b) noexcept { a.swap(b); }

  /// The handle, still owned by this object.
  vsgd_optimizer* get() const noexcept { return h_; }
  /// Gives up ownership: the caller must vsgd_optimizer_free the result.
  vsgd_optimizer* release() noexcept { return std::exchange(h_, nullptr); }
  explicit operator bool() const noexcept { return h_ != nullptr; }

  Algorithm algorithm() const {
    vsgd_algorithm a = 0;
    detail::check(vsgd_optimizer_algorithm(h_, &a));
    return static_cast<Algorithm>(a);
  }

  // ---- parameter groups

  /// Adds a group configured by `config` (same algorithm; copied) with a constant schedule;
  /// returns its index (1, 2, ...).
  std::size_t add_group(const Config& config) {
    std::size_t g = 0;
    detail::check(vsgd_optimizer_add_group(h_, config.get(), &g));
    return g;
  }
  /// 1 + the groups added by add_group().
  std::size_t num_groups() const {
    std::size_t n = 0;
    detail::check(vsgd_optimizer_num_groups(h_, &n));
    return n;
  }
  /// A copy of group `group`'s configuration (its learning rate included).
  Config config(std::size_t group = 0) const {
    vsgd_config* c = nullptr;
    detail::check(vsgd_optimizer_config(h_, group, &c));
    return Config::adopt(c);
  }
  /// Replaces group `group`'s configuration (same algorithm; validated, copied); state is
  /// kept.
  void set_config(std::size_t group, const Config& config) {
    detail::check(vsgd_optimizer_set_config(h_, group, config.get()));
  }
  /// Sets group `group`'s base learning rate (finite, >= 0; 0 freezes the group).
  void set_lr(std::size_t group, double lr) {
    detail::check(vsgd_optimizer_set_lr(h_, group, lr));
  }
  /// Sets group `group`'s schedule (validated; copied, so `schedule` may go right after).
  void set_schedule(std::size_t group, const Schedule& schedule) {
    detail::check(vsgd_optimizer_set_schedule(h_, group, schedule.get()));
  }
  /// A copy of group `group`'s schedule.
  Schedule schedule(std::size_t group = 0) const {
    vsgd_schedule* s = nullptr;
    detail::check(vsgd_optimizer_schedule(h_, group, &s));
    return Schedule::adopt(s);
  }
  /// The learning rate group `group`'s tensors get at their update number `t` (>= 1).
  double lr_at(std::size_t group, std::uint64_t t) const {
    double lr = 0;
    detail::check(vsgd_optimizer_lr_at(h_, group, t, &lr));
    return lr;
  }

  // ---- policy and threads

  void set_policy(Policy policy) {
    detail::check(vsgd_optimizer_set_policy(h_, static_cast<vsgd_policy>(policy)));
  }
  Policy policy() const {
    vsgd_policy p = 0;
    detail::check(vsgd_optimizer_policy(h_, &p));
    return static_cast<Policy>(p);
  }
  /// What the schedules' step number is (vsgd_optimizer_set_schedule_clock).
  void set_schedule_clock(ScheduleClock clock) {
    detail::check(
        vsgd_optimizer_set_schedule_clock(h_, static_cast<vsgd_schedule_clock>(clock)));
  }
  ScheduleClock schedule_clock() const {
    vsgd_schedule_clock c = 0;
    detail::check(vsgd_optimizer_schedule_clock(h_, &c));
    return static_cast<ScheduleClock>(c);
  }
  /// Successful multi-tensor steps under the global clock.
  std::uint64_t global_step() const {
    std::uint64_t n = 0;
    detail::check(vsgd_optimizer_global_step(h_, &n));
    return n;
  }
  void set_global_step(std::uint64_t step) {
    detail::check(vsgd_optimizer_set_global_step(h_, step));
  }

  /// Gradient clipping by global norm at most `max_norm` (0: off; vsgd_optimizer_set_clip_norm).
  void set_clip_norm(double max_norm) {
    detail::check(vsgd_optimizer_set_clip_norm(h_, max_norm));
  }
  /// The maximum norm, 0 when clipping is off.
  double clip_norm() const {
    double m = 0;
    detail::check(vsgd_optimizer_clip_norm(h_, &m));
    return m;
  }
  /// The global gradient norm of the last step (NaN when it computed none).
  double last_grad_norm() const {
    double n = 0;
    detail::check(vsgd_optimizer_last_grad_norm(h_, &n));
    return n;
  }

  /// Threads the steps use: 1 runs them on the calling thread, 0 as many as the machine has
  /// cores (the default). The results are the same bits for every count.
  void set_threads(std::size_t threads) {
    detail::check(vsgd_optimizer_set_threads(h_, threads));
  }
  /// The threads the steps may use (0 resolved to the number of cores).
  std::size_t threads() const {
    std::size_t n = 0;
    detail::check(vsgd_optimizer_threads(h_, &n));
    return n;
  }

  // ---- tensors

  /// Registers a tensor of shape shape[0] × … × shape[rank − 1] (rank 0: a scalar, one
  /// element) in group `group`; returns its index (0, 1, ... in registration order).
  std::size_t add_tensor(const std::size_t* shape, std::size_t rank, DType dtype = DType::F32,
                         const char* name = nullptr, std::size_t group = 0) {
    std::size_t id = 0;
    detail::check(vsgd_optimizer_add_tensor(h_, shape, rank, static_cast<vsgd_dtype>(dtype),
                                            name, group, &id));
    return id;
  }
  /// Vector form: add_tensor({rows, cols}, DType::F32, "w"); add_tensor({}, ...) is a scalar.
  std::size_t add_tensor(const std::vector<std::size_t>& shape, DType dtype = DType::F32,
                         const char* name = nullptr, std::size_t group = 0) {
    return add_tensor(shape.data(), shape.size(), dtype, name, group);
  }
  /// A mixed-precision tensor: parameter and gradient of `param` (F32, BF16, F16), state of
  /// `state` (F32, or BF16 rounded stochastically with bits keyed by `seed`); see
  /// vsgd_optimizer_add_tensor_mixed.
  std::size_t add_tensor_mixed(const std::vector<std::size_t>& shape, DType param, DType state,
                               std::uint64_t seed = 0, const char* name = nullptr,
                               std::size_t group = 0) {
    std::size_t id = 0;
    detail::check(vsgd_optimizer_add_tensor_mixed(
        h_, shape.data(), shape.size(), static_cast<vsgd_dtype>(param),
        static_cast<vsgd_dtype>(state), seed, name, group, &id));
    return id;
  }
  std::size_t num_tensors() const {
    std::size_t n = 0;
    detail::check(vsgd_optimizer_num_tensors(h_, &n));
    return n;
  }
  /// What is registered for tensor `tensor` (struct_size set for this header's struct).
  vsgd_tensor_info info(std::size_t tensor) const {
    vsgd_tensor_info i{};
    i.struct_size = sizeof i;
    detail::check(vsgd_optimizer_tensor_info(h_, tensor, &i));
    return i;
  }
  /// Tensor `tensor`'s shape (empty for a scalar).
  std::vector<std::size_t> shape(std::size_t tensor) const {
    std::size_t rank = 0;
    const vsgd_result r = vsgd_optimizer_tensor_shape(h_, tensor, nullptr, 0, &rank);
    if (r != VSGD_RESULT_BUFFER_TOO_SMALL) detail::check(r);  // OK: a scalar
    std::vector<std::size_t> dims(rank);
    if (rank > 0)
      detail::check(vsgd_optimizer_tensor_shape(h_, tensor, dims.data(), dims.size(), &rank));
    return dims;
  }
  std::string tensor_name(std::size_t tensor) const {
    std::size_t n = 0;
    const vsgd_result r = vsgd_optimizer_tensor_name(h_, tensor, nullptr, 0, &n);
    if (r != VSGD_RESULT_BUFFER_TOO_SMALL) detail::check(r);  // OK: empty name
    std::string s(n, '\0');
    if (n > 0) detail::check(vsgd_optimizer_tensor_name(h_, tensor, &s[0], n + 1, &n));
    return s;
  }
  std::size_t find(const char* name) const {
    std::size_t id = 0;
    detail::check(vsgd_optimizer_find(h_, name, &id));
    return id;
  }
  std::uint64_t step_count(std::size_t tensor) const {
    std::uint64_t n = 0;
    detail::check(vsgd_optimizer_step_count(h_, tensor, &n));
    return n;
  }

  // ---- steps

  StepOutcome step_tensor(std::size_t tensor, float* param, const float* grad,
                          std::size_t len) {
    vsgd_step_outcome o = VSGD_STEP_APPLIED;
    detail::check(vsgd_optimizer_step_tensor_f32(h_, tensor, param, grad, len, &o));
    return static_cast<StepOutcome>(o);
  }
  StepOutcome step_tensor(std::size_t tensor, double* param, const double* grad,
                          std::size_t len) {
    vsgd_step_outcome o = VSGD_STEP_APPLIED;
    detail::check(vsgd_optimizer_step_tensor_f64(h_, tensor, param, grad, len, &o));
    return static_cast<StepOutcome>(o);
  }
  /// Vector form; the library checks that both lengths equal the tensor's.
  template <class T>
  StepOutcome step_tensor(std::size_t tensor, std::vector<T>& param, const std::vector<T>& grad) {
    if (param.size() != grad.size()) {
      throw Error(VSGD_RESULT_LENGTH_MISMATCH,
                  "vsgd::Optimizer::step_tensor: param and grad differ in length");
    }
    return step_tensor(tensor, param.data(), grad.data(), param.size());
  }

  /// One update of every tensor (all float, or all double), in registration order; see
  /// vsgd_optimizer_step_f32. The report says how many were applied and skipped.
  vsgd_step_report step(float* const* params, const float* const* grads,
                        const std::size_t* lens, std::size_t count) {
    vsgd_step_report r{};
    r.struct_size = sizeof r;
    detail::check(vsgd_optimizer_step_f32(h_, params, grads, lens, count, &r));
    return r;
  }
  vsgd_step_report step(double* const* params, const double* const* grads,
                        const std::size_t* lens, std::size_t count) {
    vsgd_step_report r{};
    r.struct_size = sizeof r;
    detail::check(vsgd_optimizer_step_f64(h_, params, grads, lens, count, &r));
    return r;
  }
  /// One update of every tensor, all with bfloat16 parameters and gradients (uint16_t bits);
  /// see vsgd_optimizer_step_bf16.
  vsgd_step_report step_bf16(std::uint16_t* const* params, const std::uint16_t* const* grads,
                             const std::size_t* lens, std::size_t count) {
    vsgd_step_report r{};
    r.struct_size = sizeof r;
    detail::check(vsgd_optimizer_step_bf16(h_, params, grads, lens, count, &r));
    return r;
  }
  /// As step_bf16, for IEEE binary16 parameters and gradients (vsgd_optimizer_step_f16).
  vsgd_step_report step_f16(std::uint16_t* const* params, const std::uint16_t* const* grads,
                            const std::size_t* lens, std::size_t count) {
    vsgd_step_report r{};
    r.struct_size = sizeof r;
    detail::check(vsgd_optimizer_step_f16(h_, params, grads, lens, count, &r));
    return r;
  }
  /// One update of every tensor, whatever its types (float, double, or uint16_t bits of
  /// bfloat16/binary16; float, double or bfloat16 state): each buffer of its tensor's type,
  /// grads[i] nullptr for a frozen tensor; see vsgd_optimizer_step.
  vsgd_step_report step_any(void* const* params, const void* const* grads,
                            const std::size_t* lens, std::size_t count) {
    vsgd_step_report r{};
    r.struct_size = sizeof r;
    detail::check(vsgd_optimizer_step(h_, params, grads, lens, count, &r));
    return r;
  }
  /// One update of one tensor of any type (vsgd_optimizer_step_tensor).
  StepOutcome step_tensor_any(std::size_t tensor, void* param, const void* grad,
                              std::size_t len) {
    vsgd_step_outcome o = VSGD_STEP_APPLIED;
    detail::check(vsgd_optimizer_step_tensor(h_, tensor, param, grad, len, &o));
    return static_cast<StepOutcome>(o);
  }
  /// A copy of a bfloat16 state array (uint16_t bits; vsgd_optimizer_state_bf16).
  std::vector<std::uint16_t> state_bf16(std::size_t tensor, const char* name) const {
    std::vector<std::uint16_t> out(info(tensor).len);
    detail::check(vsgd_optimizer_state_bf16(h_, tensor, name, out.data(), out.size()));
    return out;
  }
  /// Vector form: params[i] and grads[i] are tensor i's (every tensor, in order).
  template <class T>
  vsgd_step_report step(std::vector<std::vector<T>>& params,
                        const std::vector<std::vector<T>>& grads) {
    if (params.size() != grads.size()) {
      throw Error(VSGD_RESULT_LENGTH_MISMATCH,
                  "vsgd::Optimizer::step: params and grads differ in count");
    }
    std::vector<T*> p;
    std::vector<const T*> g;
    std::vector<std::size_t> lens;
    p.reserve(params.size());
    g.reserve(params.size());
    lens.reserve(params.size());
    for (std::size_t i = 0; i < params.size(); i++) {
      if (params[i].size() != grads[i].size()) {
        throw Error(VSGD_RESULT_LENGTH_MISMATCH,
                    "vsgd::Optimizer::step: param and grad " + std::to_string(i) +
                        " differ in length");
      }
      p.push_back(params[i].data());
      g.push_back(grads[i].data());
      lens.push_back(params[i].size());
    }
    return step(p.data(), g.data(), lens.data(), p.size());
  }

  /// The tensors the last step call skipped (non-finite gradients under Policy::Skip).
  std::vector<std::size_t> last_skipped() const {
    std::size_t n = 0;
    const vsgd_result r = vsgd_optimizer_last_skipped(h_, nullptr, 0, &n);
    if (r != VSGD_RESULT_BUFFER_TOO_SMALL) detail::check(r);
    std::vector<std::size_t> out(n);
    if (n > 0) detail::check(vsgd_optimizer_last_skipped(h_, out.data(), n, &n));
    return out;
  }

  // ---- checkpoints

  /// The handle's checkpoint (vsgd_optimizer_save): everything needed to continue
  /// bit-exactly except the parameters, which are the caller's.
  std::vector<std::uint8_t> save() const {
    std::size_t n = 0;
    const vsgd_result r = vsgd_optimizer_save(h_, nullptr, 0, &n);
    if (r != VSGD_RESULT_BUFFER_TOO_SMALL) detail::check(r);
    std::vector<std::uint8_t> out(n);
    detail::check(vsgd_optimizer_save(h_, out.data(), out.size(), &n));
    return out;
  }
  /// A new Optimizer from checkpoint bytes (vsgd_optimizer_load); damaged bytes throw with
  /// their VSGD_RESULT_CHECKPOINT_* code.
  static Optimizer load(const std::uint8_t* bytes, std::size_t len) {
    vsgd_optimizer* h = nullptr;
    detail::check(vsgd_optimizer_load(bytes, len, &h));
    return Optimizer(h);
  }
  static Optimizer load(const std::vector<std::uint8_t>& bytes) {
    return load(bytes.data(), bytes.size());
  }
  /// Restores checkpoint bytes into this Optimizer, whose tensors must match the
  /// checkpoint's (VSGD_RESULT_CHECKPOINT_MISMATCH names the first that does not); on any
  /// error it is unchanged (vsgd_optimizer_restore).
  void restore(const std::uint8_t* bytes, std::size_t len) {
    detail::check(vsgd_optimizer_restore(h_, bytes, len));
  }
  void restore(const std::vector<std::uint8_t>& bytes) { restore(bytes.data(), bytes.size()); }
  /// Saves the checkpoint to `path` atomically: the previous file survives any failure
  /// before the rename (vsgd_optimizer_save_file; VSGD_RESULT_CHECKPOINT_NOT_DURABLE: the
  /// new file is in place, only the directory flush failed).
  void save_file(const std::string& path) const {
    detail::check(vsgd_optimizer_save_file(h_, detail::c_path(path, "vsgd::Optimizer::save_file")));
  }
  /// A new Optimizer from a checkpoint file (vsgd_optimizer_load_file).
  static Optimizer load_file(const std::string& path) {
    vsgd_optimizer* h = nullptr;
    detail::check(vsgd_optimizer_load_file(detail::c_path(path, "vsgd::Optimizer::load_file"), &h));
    return Optimizer(h);
  }
  /// Restores a checkpoint file into this Optimizer (vsgd_optimizer_restore_file).
  void restore_file(const std::string& path) {
    detail::check(
        vsgd_optimizer_restore_file(h_, detail::c_path(path, "vsgd::Optimizer::restore_file")));
  }

  // ---- state read-outs

  /// A copy of state array `name` of tensor `tensor` (element type T: float or double).
  template <class T>
  std::vector<T> state(std::size_t tensor, const char* name) const {
    std::vector<T> out(info(tensor).len);
    copy_state(tensor, name, out.data(), out.size());
    return out;
  }
  /// VSGD's effective momentum bhg / (bg + bhg) per element (T: float or double).
  template <class T>
  std::vector<T> effective_momentum(std::size_t tensor) const {
    std::vector<T> out(info(tensor).len);
    momentum(tensor, out.data(), out.size());
    return out;
  }

 private:
  explicit Optimizer(vsgd_optimizer* h) noexcept : h_(h) {}
  void copy_state(std::size_t t, const char* name, float* out, std::size_t n) const {
    detail::check(vsgd_optimizer_state_f32(h_, t, name, out, n));
  }
  void copy_state(std::size_t t, const char* name, double* out, std::size_t n) const {
    detail::check(vsgd_optimizer_state_f64(h_, t, name, out, n));
  }
  void momentum(std::size_t t, float* out, std::size_t n) const {
    detail::check(vsgd_optimizer_effective_momentum_f32(h_, t, out, n));
  }
  void momentum(std::size_t t, double* out, std::size_t n) const {
    detail::check(vsgd_optimizer_effective_momentum_f64(h_, t, out, n));
  }

  vsgd_optimizer* h_ = nullptr;
};

}  // namespace vsgd

#endif  // VSGD_HPP
