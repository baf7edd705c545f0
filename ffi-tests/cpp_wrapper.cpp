// The C++17 wrapper (vsgd.hpp): ownership (move-only, freed once, moved-from objects throw
// instead of crashing), exceptions carrying code and message, and conformance cases through
// vsgd::Optimizer and vsgd::step with the same bits as the Rust API.
//
// Checkpoints: training resumed from vsgd::Optimizer::save/load/restore and the file forms
// ends with the same bits as uninterrupted training; damaged input throws with its code.
//
// usage: cpp_wrapper FIXTURE SCRATCH_DIR
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "vsgd.hpp"

static_assert(!std::is_copy_constructible_v<vsgd::Optimizer>, "Optimizer must be move-only");
static_assert(!std::is_copy_assignable_v<vsgd::Optimizer>, "Optimizer must be move-only");
static_assert(std::is_nothrow_move_constructible_v<vsgd::Optimizer>, "noexcept move");
static_assert(std::is_nothrow_move_assignable_v<vsgd::Optimizer>, "noexcept move");
static_assert(std::is_copy_constructible_v<vsgd::Config>, "Config is a value");

static int checks = 0;

#define CHECK(cond)                                                                      \
  do {                                                                                   \
    ++checks;                                                                            \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);     \
      std::exit(1);                                                                      \
    }                                                                                    \
  } while (0)

// Runs `f`, which must throw vsgd::Error with `code` and a message naming `function`.
static void expect_error(vsgd_result code, const char* function, const std::function<void()>& f) {
  try {
    f();
  } catch (const vsgd::Error& e) {
    if (e.code() != code || std::strstr(e.what(), function) != e.what()) {
      std::fprintf(stderr, "expected %s from %s, got %s: %s\n", vsgd_result_name(code),
                   function, e.code_name(), e.what());
      std::exit(1);
    }
    ++checks;
    return;
  }
  std::fprintf(stderr, "expected %s from %s, nothing was thrown\n", vsgd_result_name(code),
               function);
  std::exit(1);
}

static void test_ownership_and_errors() {
  vsgd::check_abi();
  CHECK(vsgd::version() == VSGD_VERSION_STRING);

  vsgd::Config config(vsgd::Algorithm::Vsgd);
  CHECK(config.get("ghattg") == 30.0);
  config.set("lr", 0.05).set("weight_decay", 0.01);
  CHECK(config.raw().params.vsgd.lr == 0.05);
  expect_error(VSGD_RESULT_UNKNOWN_HYPERPARAMETER, "vsgd_config_set",
               [&] { config.set("beta1", 0.9); });
  expect_error(VSGD_RESULT_INVALID_CONFIG, "vsgd_config_validate", [] {
    vsgd::Config bad(vsgd::Algorithm::Adam);
    bad.set("beta2", 1.0).validate();
  });
  expect_error(VSGD_RESULT_INVALID_CONFIG, "vsgd_optimizer_new", [] {
    vsgd::Config bad(vsgd::Algorithm::Sgdm);
    bad.set("momentum", -1);
    vsgd::Optimizer opt(bad);
  });

  vsgd::Optimizer a(config);
  std::size_t w = a.add_tensor(3, vsgd::DType::F32, "w");
  std::size_t b = a.add_tensor(2, vsgd::DType::F64, "b");
  CHECK(w == 0 && b == 1 && a.num_tensors() == 2);
  CHECK(a.tensor_name(w) == "w" && a.find("b") == b);
  CHECK(a.algorithm() == vsgd::Algorithm::Vsgd);

  // Move construction leaves the source empty; using it throws, never crashes.
  vsgd::Optimizer moved(std::move(a));
  CHECK(!a && moved);
  expect_error(VSGD_RESULT_NULL_PARAMETER, "vsgd_optimizer_num_tensors", [&] { a.num_tensors(); });
  CHECK(moved.num_tensors() == 2);
  // Move assignment frees the target's old handle (valgrind checks nothing leaks).
  vsgd::Optimizer other(vsgd::Config(vsgd::Algorithm::Vsgd));
  other.add_tensor(5);
  other = std::move(moved);
  CHECK(other.num_tensors() == 2 && !moved);
  other = std::move(other);  // self-move keeps the handle
  CHECK(other && other.num_tensors() == 2);
  // release / adopt hand the handle over exactly once.
  vsgd_optimizer* raw = other.release();
  CHECK(!other && raw != nullptr);
  vsgd::Optimizer adopted = vsgd::Optimizer::adopt(raw);
  CHECK(adopted.num_tensors() == 2);

  std::vector<float> p{1.0f, -2.0f, 0.5f}, g{0.1f, 0.2f, 0.3f}, short_g{0.1f, 0.2f};
  expect_error(VSGD_RESULT_LENGTH_MISMATCH, "vsgd::Optimizer::step_tensor",
               [&] { adopted.step_tensor(w, p, short_g); });
  std::vector<double> pd{1.0, 2.0}, gd{0.5, 0.5};
  expect_error(VSGD_RESULT_DTYPE_MISMATCH, "vsgd_optimizer_step_tensor_f64",
               [&] { adopted.step_tensor(w, pd.data(), gd.data(), 2); });
  expect_error(VSGD_RESULT_INVALID_LEARNING_RATE, "vsgd_optimizer_set_lr",
               [&] { adopted.set_lr(0, -1.0); });
  expect_error(VSGD_RESULT_UNKNOWN_STATE_ARRAY, "vsgd_optimizer_state_f32",
               [&] { adopted.state<float>(w, "m"); });
  CHECK(adopted.step_tensor(w, p, g) == vsgd::StepOutcome::Applied);
  CHECK(adopted.step_tensor(b, pd, gd) == vsgd::StepOutcome::Applied);
  CHECK(adopted.step_count(w) == 1 && adopted.info(b).step == 1);
  CHECK(adopted.state<float>(w, "mug").size() == 3);
  auto beta = adopted.effective_momentum<double>(b);
  CHECK(beta.size() == 2 && beta[0] > 0 && beta[0] < 1);

  // Non-finite gradients: skipped and reported by default, an exception under Policy::Error.
  std::vector<float> bad_g{0.0f, NAN, 0.0f};
  CHECK(adopted.step_tensor(w, p, bad_g) == vsgd::StepOutcome::Skipped);
  CHECK(adopted.last_skipped() == std::vector<std::size_t>{w});
  adopted.set_policy(vsgd::Policy::Error);
  CHECK(adopted.policy() == vsgd::Policy::Error);
  expect_error(VSGD_RESULT_NON_FINITE_GRADIENT, "vsgd_optimizer_step_tensor_f32",
               [&] { adopted.step_tensor(w, p, bad_g); });
  CHECK(adopted.step_count(w) == 1);

  // Wrong algorithm.
  vsgd::Optimizer adam(vsgd::Config(vsgd::Algorithm::Adam));
  adam.add_tensor(2, vsgd::DType::F64);
  expect_error(VSGD_RESULT_ALGORITHM_MISMATCH, "vsgd_optimizer_effective_momentum_f64",
               [&] { adam.effective_momentum<double>(0); });
  expect_error(VSGD_RESULT_ALGORITHM_MISMATCH, "vsgd_optimizer_add_group",
               [&] { adam.add_group(config); });

  // Schedules.
  vsgd_schedule s{};
  s.kind = VSGD_SCHEDULE_COSINE;
  s.total = 10;
  s.min_factor = 0.1;
  adam.set_schedule(0, s);
  CHECK(std::fabs(adam.lr_at(0, 11) - 1e-4) < 1e-15);
  s.total = 0;
  expect_error(VSGD_RESULT_INVALID_SCHEDULE, "vsgd_optimizer_set_schedule",
               [&] { adam.set_schedule(0, s); });

  CHECK(vsgd::state_count(vsgd::Algorithm::ConstantVsgd) == 2);
  CHECK(vsgd::state_name(vsgd::Algorithm::Vsgd, 1) == "bg");
  expect_error(VSGD_RESULT_STATE_COUNT, "vsgd_state_name",
               [] { vsgd::state_name(vsgd::Algorithm::Sgdm, 1); });
}

// ---- checkpoints through the wrapper

// Deterministic gradient of step s, element i (any smooth, sign-changing function will do).
template <class T>
static std::vector<T> grad_at(std::size_t s, std::size_t n, T offset) {
  std::vector<T> g(n);
  for (std::size_t i = 0; i < n; i++)
    g[i] = static_cast<T>(std::sin(0.7 * static_cast<double>(s) + 1.3 * static_cast<double>(i))) + offset;
  return g;
}

struct Model {
  std::vector<float> w{0.5f, -1.0f, 2.0f};
  std::vector<double> b{0.25, -0.75};
};

static vsgd::Optimizer fresh_optimizer(vsgd::Algorithm a) {
  vsgd::Optimizer opt{vsgd::Config(a)};
  vsgd_schedule s{};
  s.kind = VSGD_SCHEDULE_COSINE;
  s.total = 20;
  s.min_factor = 0.1;
  opt.set_schedule(0, s);
  opt.add_tensor(3, vsgd::DType::F32, "w");
  opt.add_tensor(2, vsgd::DType::F64, "b");
  return opt;
}

static void train(vsgd::Optimizer& opt, Model& m, std::size_t from, std::size_t to) {
  for (std::size_t s = from; s < to; s++) {
    CHECK(opt.step_tensor(0, m.w, grad_at<float>(s, 3, 0.1f)) == vsgd::StepOutcome::Applied);
    CHECK(opt.step_tensor(1, m.b, grad_at<double>(s, 2, -0.2)) == vsgd::StepOutcome::Applied);
  }
}

static bool same_bits(const Model& a, const Model& b) {
  return std::memcmp(a.w.data(), b.w.data(), a.w.size() * sizeof(float)) == 0 &&
         std::memcmp(a.b.data(), b.b.data(), a.b.size() * sizeof(double)) == 0;
}

static std::size_t test_checkpoints(const std::string& dir) {
  const std::string path = dir + "/cpp_wrapper.vsgdckpt";
  const std::size_t steps = 10, cut = 4;
  std::size_t resumed = 0;
  for (vsgd::Algorithm a : {vsgd::Algorithm::Vsgd, vsgd::Algorithm::ConstantVsgd,
                            vsgd::Algorithm::Adam, vsgd::Algorithm::AdamW,
                            vsgd::Algorithm::Sgdm}) {
    Model want;
    vsgd::Optimizer whole = fresh_optimizer(a);
    train(whole, want, 0, steps);
    const std::vector<std::uint8_t> want_bytes = whole.save();
    for (int way = 0; way < 4; way++) {
      Model m;
      vsgd::Optimizer opt = fresh_optimizer(a);
      train(opt, m, 0, cut);
      std::vector<std::uint8_t> bytes;
      if (way < 2) bytes = opt.save(); else opt.save_file(path);
      opt = vsgd::Optimizer(vsgd::Config(vsgd::Algorithm::Sgdm));  // the old state is gone
      switch (way) {
        case 0: opt = vsgd::Optimizer::load(bytes); break;
        case 1: opt = fresh_optimizer(a); opt.set_lr(0, 1e-6); opt.restore(bytes); break;
        case 2: opt = vsgd::Optimizer::load_file(path); break;
        default: opt = fresh_optimizer(a); opt.set_lr(0, 1e-6); opt.restore_file(path);
      }
      CHECK(opt.algorithm() == a && opt.step_count(0) == cut && opt.tensor_name(1) == "b");
      train(opt, m, cut, steps);
      CHECK(same_bits(m, want));
      CHECK(opt.save() == want_bytes);
      resumed++;
    }
  }

  // Errors: each with its code and the C function's name.
  vsgd::Optimizer opt = fresh_optimizer(vsgd::Algorithm::Vsgd);
  Model m;
  train(opt, m, 0, 2);
  std::vector<std::uint8_t> bytes = opt.save();
  expect_error(VSGD_RESULT_CHECKPOINT_TRUNCATED, "vsgd_optimizer_load",
               [] { vsgd::Optimizer::load(std::vector<std::uint8_t>{}); });
  std::vector<std::uint8_t> cut_bytes(bytes.begin(), bytes.end() - 1);
  expect_error(VSGD_RESULT_CHECKPOINT_TRUNCATED, "vsgd_optimizer_load",
               [&] { vsgd::Optimizer::load(cut_bytes); });
  std::vector<std::uint8_t> flipped = bytes;
  flipped[flipped.size() / 2] ^= 0x04;
  expect_error(VSGD_RESULT_CHECKPOINT_CHECKSUM_MISMATCH, "vsgd_optimizer_load",
               [&] { vsgd::Optimizer::load(flipped); });
  expect_error(VSGD_RESULT_CHECKPOINT_CHECKSUM_MISMATCH, "vsgd_optimizer_restore",
               [&] { opt.restore(flipped); });
  vsgd::Optimizer other{vsgd::Config(vsgd::Algorithm::Vsgd)};
  other.add_tensor(3, vsgd::DType::F32, "w");
  other.add_tensor(2, vsgd::DType::F64, "bias");
  try {
    other.restore(bytes);
    CHECK(false);
  } catch (const vsgd::Error& e) {
    CHECK(e.code() == VSGD_RESULT_CHECKPOINT_MISMATCH);
    CHECK(std::strstr(e.what(), "tensor 1 (\"bias\")") != nullptr);
  }
  CHECK(other.step_count(0) == 0);  // unchanged
  expect_error(VSGD_RESULT_FILE_NOT_FOUND, "vsgd_optimizer_load_file",
               [&] { vsgd::Optimizer::load_file(dir + "/no/such.vsgdckpt"); });
  expect_error(VSGD_RESULT_FILE_NOT_FOUND, "vsgd_optimizer_save_file",
               [&] { opt.save_file(dir + "/no/such.vsgdckpt"); });
  expect_error(VSGD_RESULT_FILE_NOT_FOUND, "vsgd_optimizer_restore_file",
               [&] { opt.restore_file(dir + "/no/such.vsgdckpt"); });
  const std::string with_nul = path + std::string(1, '\0') + "x";
  expect_error(VSGD_RESULT_INVALID_STRING, "vsgd::Optimizer::save_file",
               [&] { opt.save_file(with_nul); });
  expect_error(VSGD_RESULT_INVALID_STRING, "vsgd::Optimizer::load_file",
               [&] { vsgd::Optimizer::load_file(with_nul); });
  expect_error(VSGD_RESULT_INVALID_STRING, "vsgd::Optimizer::restore_file",
               [&] { opt.restore_file(with_nul); });
  vsgd::Optimizer gone(std::move(opt));
  expect_error(VSGD_RESULT_NULL_PARAMETER, "vsgd_optimizer_save", [&] { (void)opt.save(); });
  expect_error(VSGD_RESULT_NULL_PARAMETER, "vsgd_optimizer_restore",
               [&] { opt.restore(bytes); });
  CHECK(gone.save() == bytes);
  CHECK(std::remove(path.c_str()) == 0);
  return resumed;
}

// ---- conformance through the wrapper (fixture format: bindings/c/examples/ffi_fixture.rs)

struct Case {
  std::string name, algorithm;
  std::size_t steps = 0, total = 0;
  std::vector<std::pair<std::string, double>> hyper;
  std::vector<double> lr;
  std::vector<std::size_t> lens, checkpoints;
  std::vector<std::vector<double>> param0, grads;
  std::vector<std::uint64_t> exp_param[2];
  std::map<std::string, std::vector<std::uint64_t>> exp_state[2];
};

static void word(std::istream& in, const char* w) {
  std::string t;
  in >> t;
  if (t != w) {
    std::fprintf(stderr, "fixture: expected '%s', found '%s'\n", w, t.c_str());
    std::exit(1);
  }
}

static std::uint64_t bits(std::istream& in) {
  std::string t;
  in >> t;
  return std::stoull(t, nullptr, 16);
}

static double real(std::istream& in) {
  std::uint64_t b = bits(in);
  double d;
  std::memcpy(&d, &b, sizeof d);
  return d;
}

static Case parse(std::istream& in) {
  Case c;
  std::size_t ntensors = 0, n = 0;
  word(in, "case");
  in >> c.name >> c.algorithm >> c.steps >> ntensors;
  word(in, "hyper");
  in >> n;
  for (std::size_t i = 0; i < n; i++) {
    std::string k;
    in >> k;
    c.hyper.emplace_back(k, real(in));
  }
  word(in, "lr");
  in >> n;
  if (n == 1)
    for (std::size_t s = 0; s < c.steps; s++) c.lr.push_back(real(in));
  for (std::size_t k = 0; k < ntensors; k++) {
    std::size_t len = 0;
    word(in, "tensor");
    in >> len;
    c.lens.push_back(len);
    c.total += len;
    word(in, "param0");
    c.param0.emplace_back();
    for (std::size_t i = 0; i < len; i++) c.param0.back().push_back(real(in));
    word(in, "grads");
    c.grads.emplace_back();
    for (std::size_t i = 0; i < len * c.steps; i++) c.grads.back().push_back(real(in));
  }
  word(in, "checkpoints");
  in >> n;
  c.checkpoints.resize(n);
  for (auto& x : c.checkpoints) in >> x;
  for (int d = 0; d < 2; d++) {
    word(in, "expect");
    word(in, d == 0 ? "f32" : "f64");
    word(in, "param");
    for (std::size_t i = 0; i < c.checkpoints.size() * c.total; i++)
      c.exp_param[d].push_back(bits(in));
    word(in, "state");
    in >> n;
    for (std::size_t j = 0; j < n; j++) {
      std::string name;
      in >> name;
      auto& v = c.exp_state[d][name];
      for (std::size_t i = 0; i < c.total; i++) v.push_back(bits(in));
    }
  }
  CHECK(in.good());
  return c;
}

template <class T>
static std::uint64_t to_bits(T x) {
  if constexpr (sizeof(T) == 4) {
    std::uint32_t b;
    std::memcpy(&b, &x, 4);
    return b;
  } else {
    std::uint64_t b;
    std::memcpy(&b, &x, 8);
    return b;
  }
}

// Runs a case through the handle (stateless = false) or vsgd::step, comparing every value.
template <class T>
static std::size_t run(const Case& c, bool stateless) {
  const int d = sizeof(T) == 4 ? 0 : 1;
  vsgd_algorithm a = 0;
  if (vsgd_algorithm_from_name(c.algorithm.c_str(), &a) != VSGD_RESULT_OK) std::exit(1);
  vsgd::Config config(static_cast<vsgd::Algorithm>(a));
  for (const auto& [k, v] : c.hyper) config.set(k.c_str(), v);
  const std::size_t nstate = vsgd::state_count(config.algorithm());
  vsgd::Optimizer opt(config);
  std::vector<std::vector<T>> params, grads(c.lens.size());
  std::vector<std::vector<std::vector<T>>> state(c.lens.size());
  for (std::size_t k = 0; k < c.lens.size(); k++) {
    opt.add_tensor(c.lens[k], sizeof(T) == 4 ? vsgd::DType::F32 : vsgd::DType::F64);
    params.emplace_back(c.param0[k].begin(), c.param0[k].end());  // rounds like T::from_f64
    state[k].assign(nstate, std::vector<T>(c.lens[k]));
  }
  std::size_t compared = 0, cp = 0;
  for (std::size_t s = 0; s < c.steps; s++) {
    const double lr = c.lr.empty() ? config.get("lr") : c.lr[s];
    if (!c.lr.empty()) opt.set_lr(0, lr);
    for (std::size_t k = 0; k < c.lens.size(); k++) {
      auto first = c.grads[k].begin() + static_cast<std::ptrdiff_t>(s * c.lens[k]);
      grads[k].assign(first, first + static_cast<std::ptrdiff_t>(c.lens[k]));
      if (stateless) {
        std::vector<T*> ptrs;
        for (auto& v : state[k]) ptrs.push_back(v.data());
        CHECK(vsgd::step(config, s + 1, lr, params[k].data(), grads[k].data(), c.lens[k],
                         ptrs.data(), nstate) == vsgd::StepOutcome::Applied);
      } else {
        CHECK(opt.step_tensor(k, params[k], grads[k]) == vsgd::StepOutcome::Applied);
      }
    }
    if (cp < c.checkpoints.size() && c.checkpoints[cp] == s + 1) {
      std::size_t i = cp * c.total;
      for (const auto& p : params)
        for (T x : p) {
          CHECK(to_bits(x) == c.exp_param[d][i++]);
          compared++;
        }
      cp++;
    }
  }
  for (std::size_t j = 0; j < nstate; j++) {
    const std::string name = vsgd::state_name(config.algorithm(), j);
    const auto& want = c.exp_state[d].at(name);
    std::size_t i = 0;
    for (std::size_t k = 0; k < c.lens.size(); k++) {
      const std::vector<T> got = stateless ? state[k][j] : opt.state<T>(k, name.c_str());
      for (T x : got) {
        CHECK(to_bits(x) == want[i++]);
        compared++;
      }
    }
  }
  return compared;
}

int main(int argc, char** argv) {
  CHECK(argc == 3);
  test_ownership_and_errors();
  const std::size_t resumed = test_checkpoints(argv[2]);
  std::ifstream f(argv[1]);
  CHECK(f.good());
  word(f, "vsgd-ffi-fixture");
  word(f, "2");
  std::size_t ncases = 0, values = 0;
  f >> ncases;
  for (std::size_t i = 0; i < ncases; i++) {
    Case c = parse(f);
    for (bool stateless : {false, true}) values += run<float>(c, stateless) + run<double>(c, stateless);
  }
  CHECK(ncases > 0 && values > 0);
  std::printf("cpp_wrapper: %d checks; %zu cases through vsgd::Optimizer and vsgd::step, "
              "%zu values bit-identical to Rust; %zu resumed runs bit-identical to "
              "uninterrupted ones\n", checks, ncases, values, resumed);
  return 0;
}
