/*
 * vsgd.hpp: header-only C++17 wrapper over the C ABI in vsgd.h.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * - vsgd::Optimizer owns a vsgd_optimizer handle (move-only, freed by the destructor).
 * - Every failure throws vsgd::Error, carrying the vsgd_result code and the library's message
 *   (vsgd_last_error of the calling thread).
 * - vsgd::Config is a plain value (a vsgd_config), copyable.
 * - vsgd::step() is the stateless kernel over caller-owned buffers.
 * - Checkpoints: Optimizer::save() -> bytes, Optimizer::load(bytes), restore(bytes), and the
 *   atomic file forms save_file / load_file / restore_file (docs/checkpoint-format.md).
 *
 * Thread safety is the C library's: one thread per Optimizer at a time (a concurrent call
 * throws with VSGD_RESULT_HANDLE_BUSY), distinct Optimizers and the stateless step are
 * independent. A moved-from Optimizer holds no handle; calling it throws
 * (VSGD_RESULT_NULL_PARAMETER), it never crashes.
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
/// Throws vsgd::Error for anything but VSGD_RESULT_OK, with this thread's last message.
inline void check(vsgd_result r) {
  if (r == VSGD_RESULT_OK) return;
  std::size_t n = 0;
  vsgd_last_error(nullptr, 0, &n);  // size query
  std::string message(n, '\0');
  if (n > 0) vsgd_last_error(&message[0], n + 1, &n);
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

/// Element type of a tensor.
enum class DType : vsgd_dtype { F32 = VSGD_DTYPE_F32, F64 = VSGD_DTYPE_F64 };

/// What a step did to one tensor.
enum class StepOutcome : vsgd_step_outcome {
  Applied = VSGD_STEP_APPLIED,
  Skipped = VSGD_STEP_SKIPPED,
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

/// An algorithm and its hyperparameters (a copyable vsgd_config).
class Config {
 public:
  /// The defaults of `algorithm`.
  explicit Config(Algorithm algorithm) {
    detail::check(vsgd_config_default(static_cast<vsgd_algorithm>(algorithm), &c_));
  }
  /// Wraps a C configuration (not validated until used).
  explicit Config(const vsgd_config& c) : c_(c) {}

  /// Sets a hyperparameter by name (range checked when the configuration is used, or by
  /// validate()).
  Config& set(const char* name, double value) {
    detail::check(vsgd_config_set(&c_, name, value));
    return *this;
  }
  /// Reads a hyperparameter by name.
  double get(const char* name) const {
    double v = 0;
    detail::check(vsgd_config_get(&c_, name, &v));
    return v;
  }
  /// Throws VSGD_RESULT_INVALID_CONFIG naming the first field out of range.
  void validate() const { detail::check(vsgd_config_validate(&c_)); }
  Algorithm algorithm() const { return static_cast<Algorithm>(c_.algorithm); }
  const vsgd_config& raw() const noexcept { return c_; }
  vsgd_config& raw() noexcept { return c_; }

 private:
  vsgd_config c_{};
};

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

/// One stateless step of one tensor (or shard) over caller-owned buffers; see vsgd_step_f32.
inline StepOutcome step(const Config& config, std::uint64_t t, double lr, float* param,
                        const float* grad, std::size_t len, float* const* state,
                        std::size_t count, Policy policy = Policy::Skip) {
  vsgd_step_outcome o = VSGD_STEP_APPLIED;
  detail::check(vsgd_step_f32(&config.raw(), t, lr, param, grad, len, state, count,
                              static_cast<vsgd_policy>(policy), &o));
  return static_cast<StepOutcome>(o);
}

/// As above, for double buffers (vsgd_step_f64).
inline StepOutcome step(const Config& config, std::uint64_t t, double lr, double* param,
                        const double* grad, std::size_t len, double* const* state,
                        std::size_t count, Policy policy = Policy::Skip) {
  vsgd_step_outcome o = VSGD_STEP_APPLIED;
  detail::check(vsgd_step_f64(&config.raw(), t, lr, param, grad, len, state, count,
                              static_cast<vsgd_policy>(policy), &o));
  return static_cast<StepOutcome>(o);
}

/// Owner of a vsgd_optimizer handle: move-only, freed by the destructor.
class Optimizer {
 public:
  /// A handle with one group (group 0) configured by `config`.
  explicit Optimizer(const Config& config) {
    detail::check(vsgd_optimizer_new(&config.raw(), &h_));
  }
  /// Takes ownership of a handle from vsgd_optimizer_new (may be NULL).
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
  std::size_t add_group(const Config& config) {
    std::size_t g = 0;
    detail::check(vsgd_optimizer_add_group(h_, &config.raw(), &g));
    return g;
  }
  Config config(std::size_t group = 0) const {
    vsgd_config c{};
    detail::check(vsgd_optimizer_config(h_, group, &c));
    return Config(c);
  }
  void set_config(std::size_t group, const Config& config) {
    detail::check(vsgd_optimizer_set_config(h_, group, &config.raw()));
  }
  void set_lr(std::size_t group, double lr) {
    detail::check(vsgd_optimizer_set_lr(h_, group, lr));
  }
  void set_schedule(std::size_t group, const vsgd_schedule& schedule) {
    detail::check(vsgd_optimizer_set_schedule(h_, group, &schedule));
  }
  double lr_at(std::size_t group, std::uint64_t t) const {
    double lr = 0;
    detail::check(vsgd_optimizer_lr_at(h_, group, t, &lr));
    return lr;
  }
  void set_policy(Policy policy) {
    detail::check(vsgd_optimizer_set_policy(h_, static_cast<vsgd_policy>(policy)));
  }
  Policy policy() const {
    vsgd_policy p = 0;
    detail::check(vsgd_optimizer_policy(h_, &p));
    return static_cast<Policy>(p);
  }

  /// Registers a tensor of `len` elements; returns its index.
  std::size_t add_tensor(std::size_t len, DType dtype = DType::F32, const char* name = nullptr,
                         std::size_t group = 0) {
    std::size_t id = 0;
    detail::check(vsgd_optimizer_add_tensor(h_, len, static_cast<vsgd_dtype>(dtype), name,
                                            group, &id));
    return id;
  }
  std::size_t num_tensors() const {
    std::size_t n = 0;
    detail::check(vsgd_optimizer_num_tensors(h_, &n));
    return n;
  }
  vsgd_tensor_info info(std::size_t tensor) const {
    vsgd_tensor_info i{};
    detail::check(vsgd_optimizer_tensor_info(h_, tensor, &i));
    return i;
  }
  std::string tensor_name(std::size_t tensor) const {
    std::size_t n = 0;
    vsgd_result r = vsgd_optimizer_tensor_name(h_, tensor, nullptr, 0, &n);
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

  vsgd_step_report step(float* const* params, const float* const* grads,
                        const std::size_t* lens, std::size_t count) {
    vsgd_step_report r{};
    detail::check(vsgd_optimizer_step_f32(h_, params, grads, lens, count, &r));
    return r;
  }
  vsgd_step_report step(double* const* params, const double* const* grads,
                        const std::size_t* lens, std::size_t count) {
    vsgd_step_report r{};
    detail::check(vsgd_optimizer_step_f64(h_, params, grads, lens, count, &r));
    return r;
  }

  std::vector<std::size_t> last_skipped() const {
    std::size_t n = 0;
    vsgd_result r = vsgd_optimizer_last_skipped(h_, nullptr, 0, &n);
    if (r != VSGD_RESULT_BUFFER_TOO_SMALL) detail::check(r);
    std::vector<std::size_t> out(n);
    if (n > 0) detail::check(vsgd_optimizer_last_skipped(h_, out.data(), n, &n));
    return out;
  }

  /// The handle's checkpoint (vsgd_optimizer_save): everything needed to continue
  /// bit-exactly except the parameters, which are the caller's.
  std::vector<std::uint8_t> save() const {
    std::size_t n = 0;
    vsgd_result r = vsgd_optimizer_save(h_, nullptr, 0, &n);
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
  /// (vsgd_optimizer_save_file).
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
