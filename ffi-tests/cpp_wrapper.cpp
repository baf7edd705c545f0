// The C++17 wrapper (vsgd.hpp): ownership (Optimizer move-only, Config copyable through
// vsgd_config_clone, Schedule copyable through vsgd_schedule_clone; each freed once; moved-from objects throw instead of
// crashing), exceptions carrying code and message, every wrapper method (configurations and
// hyperparameter names, schedules and their read-back, shaped tensors, groups, threads,
// multi-tensor steps, the stateless step with a caller's finite verdict across shards,
// all_finite), and conformance cases through vsgd::Optimizer, vsgd::step and a sharded
// vsgd::step with the same bits as the Rust API.
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
#include <limits>
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
static_assert(std::is_copy_constructible_v<vsgd::Config>, "Config copies (vsgd_config_clone)");
static_assert(std::is_copy_assignable_v<vsgd::Config>, "Config copies (vsgd_config_clone)");
static_assert(std::is_nothrow_move_constructible_v<vsgd::Config>, "noexcept move");
static_assert(std::is_nothrow_move_assignable_v<vsgd::Config>, "noexcept move");
static_assert(std::is_copy_constructible_v<vsgd::Schedule>, "Schedule copies (vsgd_schedule_clone)");
static_assert(std::is_copy_assignable_v<vsgd::Schedule>, "Schedule copies (vsgd_schedule_clone)");
static_assert(std::is_nothrow_move_constructible_v<vsgd::Schedule>, "noexcept move");
static_assert(std::is_nothrow_move_assignable_v<vsgd::Schedule>, "noexcept move");
static_assert(std::is_nothrow_swappable_v<vsgd::Config>, "noexcept swap");
static_assert(VSGD_VERSION_NUMBER ==
                  VSGD_VERSION_MAJOR * 10000 + VSGD_VERSION_MINOR * 100 + VSGD_VERSION_PATCH,
              "VSGD_VERSION_NUMBER");
static_assert(VSGD_ABI_VERSION == 2, "this test is written for ABI 2");

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

template <class T>
static bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// Deterministic gradient of step s, element i (any smooth, sign-changing function will do).
template <class T>
static std::vector<T> grad_at(std::size_t s, std::size_t n, T offset) {
  std::vector<T> g(n);
  for (std::size_t i = 0; i < n; i++)
    g[i] = static_cast<T>(std::sin(0.7 * static_cast<double>(s) + 1.3 * static_cast<double>(i))) + offset;
  return g;
}

constexpr vsgd::Algorithm kAlgorithms[] = {vsgd::Algorithm::Vsgd, vsgd::Algorithm::ConstantVsgd,
                                           vsgd::Algorithm::Adam, vsgd::Algorithm::AdamW,
                                           vsgd::Algorithm::Sgdm};

// ---- configurations, names

static void test_config() {
  vsgd::check_abi();
  CHECK(vsgd::version() == VSGD_VERSION_STRING);

  vsgd::Config config(vsgd::Algorithm::Vsgd);
  CHECK(config && config.algorithm() == vsgd::Algorithm::Vsgd);
  CHECK(config.get("ghattg") == 30.0 && config.get("lr") == 0.1 && config.get("maximize") == 0);
  config.set("lr", 0.05).set("weight_decay", 0.01);
  CHECK(config.get("lr") == 0.05 && config.get("weight_decay") == 0.01);
  config.validate();
  expect_error(VSGD_RESULT_UNKNOWN_HYPERPARAMETER, "vsgd_config_set",
               [&] { config.set("beta1", 0.9); });
  expect_error(VSGD_RESULT_UNKNOWN_HYPERPARAMETER, "vsgd_config_get",
               [&] { (void)config.get("momentum"); });
  expect_error(VSGD_RESULT_INVALID_CONFIG, "vsgd_config_set", [&] { config.set("maximize", 2); });
  CHECK(config.get("maximize") == 0);  // unchanged by the failed set
  config.set("maximize", 1);
  CHECK(config.get("maximize") == 1);
  config.set("maximize", 0);
  expect_error(VSGD_RESULT_INVALID_CONFIG, "vsgd_config_validate", [] {
    vsgd::Config bad(vsgd::Algorithm::Adam);
    bad.set("beta2", 1.0).validate();
  });
  expect_error(VSGD_RESULT_INVALID_CONFIG, "vsgd_optimizer_new", [] {
    vsgd::Config bad(vsgd::Algorithm::Sgdm);
    bad.set("momentum", -1);  // accepted here, rejected where used
    vsgd::Optimizer opt(bad);
  });
  expect_error(VSGD_RESULT_INVALID_ENUM, "vsgd_config_new",
               [] { vsgd::Config bad(static_cast<vsgd::Algorithm>(99)); });

  // Copies are vsgd_config_clone: independent configurations.
  vsgd::Config copy = config;
  CHECK(copy && copy.get() != config.get());
  copy.set("lr", 0.5);
  CHECK(config.get("lr") == 0.05 && copy.get("lr") == 0.5 && copy.get("weight_decay") == 0.01);
  vsgd::Config adam(vsgd::Algorithm::Adam);
  copy = adam;  // copy assignment frees the old configuration (valgrind checks)
  CHECK(copy.algorithm() == vsgd::Algorithm::Adam && copy.get("beta2") == 0.999);
  adam.set("beta2", 0.99);
  CHECK(copy.get("beta2") == 0.999);
  const vsgd::Config& same = copy;
  copy = same;  // self-assignment keeps it
  CHECK(copy && copy.get("beta2") == 0.999);
  // Moves leave the source empty; using it throws, never crashes; copying it gives empty.
  vsgd::Config moved(std::move(copy));
  CHECK(!copy && moved.algorithm() == vsgd::Algorithm::Adam);
  expect_error(VSGD_RESULT_NULL_PARAMETER, "vsgd_config_get", [&] { (void)copy.get("lr"); });
  expect_error(VSGD_RESULT_NULL_PARAMETER, "vsgd_config_set", [&] { copy.set("lr", 1); });
  expect_error(VSGD_RESULT_NULL_PARAMETER, "vsgd_config_algorithm", [&] { (void)copy.algorithm(); });
  expect_error(VSGD_RESULT_NULL_PARAMETER, "vsgd_config_validate", [&] { copy.validate(); });
  expect_error(VSGD_RESULT_NULL_PARAMETER, "vsgd_optimizer_new",
               [&] { vsgd::Optimizer opt(copy); });
  vsgd::Config empty_copy = copy;
  CHECK(!empty_copy);
  moved = config;  // assignment from a live one into a moved-to one
  copy = std::move(moved);
  CHECK(copy && !moved && copy.get("lr") == 0.05);
  swap(copy, adam);
  CHECK(copy.algorithm() == vsgd::Algorithm::Adam && adam.algorithm() == vsgd::Algorithm::Vsgd);
  // release / adopt hand the configuration over exactly once.
  vsgd_config* raw = adam.release();
  CHECK(!adam && raw != nullptr);
  vsgd::Config adopted = vsgd::Config::adopt(raw);
  CHECK(adopted.get() == raw && adopted.get("lr") == 0.05);

  // Hyperparameter names: every one readable and settable, in the documented order.
  const std::vector<std::string> vsgd_names{"lr",  "ghattg",       "ps", "tau1",    "tau2",
                                            "eps", "weight_decay", "l2", "maximize"};
  CHECK(vsgd::hyper_names(vsgd::Algorithm::Vsgd) == vsgd_names);
  CHECK(config.hyper_names() == vsgd_names);
  CHECK(vsgd::hyper_name(vsgd::Algorithm::Sgdm, 3) == "nesterov");
  CHECK(vsgd::hyper_name(vsgd::Algorithm::ConstantVsgd, 3) == "tau");
  expect_error(VSGD_RESULT_UNKNOWN_HYPERPARAMETER, "vsgd_hyper_name",
               [&] { (void)vsgd::hyper_name(vsgd::Algorithm::Vsgd, vsgd_names.size()); });
  expect_error(VSGD_RESULT_INVALID_ENUM, "vsgd_hyper_name",
               [] { (void)vsgd::hyper_names(static_cast<vsgd::Algorithm>(7)); });
  const std::size_t counts[] = {9, 8, 7, 7, 7};
  std::size_t k = 0;
  for (vsgd::Algorithm a : kAlgorithms) {
    vsgd::Config c(a);
    const std::vector<std::string> names = vsgd::hyper_names(a);
    CHECK(names.size() == counts[k++] && names.front() == "lr" && names.back() == "maximize");
    for (const std::string& n : names) {
      const double v = c.get(n.c_str());
      CHECK(std::isfinite(v));
      c.set(n.c_str(), v);
      CHECK(c.get(n.c_str()) == v);
    }
    c.validate();
    // Names round-trip; the name lookup is the C function's.
    CHECK(vsgd::algorithm_from_name(vsgd::algorithm_name(a).c_str()) == a);
    CHECK(vsgd::state_count(a) >= 1 && vsgd::state_count(a) <= 3);
  }
  CHECK(vsgd::Config(vsgd::Algorithm::AdamW).get("weight_decay") == 0.01);
  CHECK(vsgd::Config(vsgd::Algorithm::Adam).get("weight_decay") == 0.0);
  CHECK(vsgd::algorithm_name(vsgd::Algorithm::ConstantVsgd) == "constant_vsgd");
  CHECK(vsgd::algorithm_from_name("sgdm") == vsgd::Algorithm::Sgdm);
  expect_error(VSGD_RESULT_INVALID_ENUM, "vsgd_algorithm_from_name",
               [] { (void)vsgd::algorithm_from_name("lbfgs"); });
  expect_error(VSGD_RESULT_INVALID_ENUM, "vsgd_algorithm_name",
               [] { (void)vsgd::algorithm_name(static_cast<vsgd::Algorithm>(5)); });
  CHECK(vsgd::state_count(vsgd::Algorithm::ConstantVsgd) == 2);
  CHECK(vsgd::state_name(vsgd::Algorithm::Vsgd, 1) == "bg");
  expect_error(VSGD_RESULT_STATE_COUNT, "vsgd_state_name",
               [] { (void)vsgd::state_name(vsgd::Algorithm::Sgdm, 1); });
}

// ---- schedules

static void test_schedules() {
  using Kind = vsgd::ScheduleKind;
  vsgd::Schedule constant;
  CHECK(constant && constant.kind() == Kind::Constant && constant.get("warmup") == 0);
  constant.validate();
  expect_error(VSGD_RESULT_INVALID_SCHEDULE, "vsgd_schedule_get",
               [&] { (void)constant.get("total"); });
  expect_error(VSGD_RESULT_INVALID_ENUM, "vsgd_schedule_new",
               [] { vsgd::Schedule bad(static_cast<Kind>(4)); });

  // Defaults (torch's where it has one); the lengths must be set.
  vsgd::Schedule one_cycle(Kind::OneCycle);
  CHECK(one_cycle.get("total") == 0 && one_cycle.get("pct_start") == 0.3 &&
        one_cycle.get("div_factor") == 25 && one_cycle.get("final_div_factor") == 1e4);
  expect_error(VSGD_RESULT_INVALID_SCHEDULE, "vsgd_schedule_validate", [&] { one_cycle.validate(); });
  one_cycle.set("total", 100).set("pct_start", 0.25);
  one_cycle.validate();
  CHECK(one_cycle.get("total") == 100 && one_cycle.get("pct_start") == 0.25);
  vsgd::Schedule decay_defaults(Kind::StepDecay);
  CHECK(decay_defaults.get("every") == 0 && decay_defaults.get("factor") == 0.1);
  vsgd::Schedule cosine_defaults(Kind::Cosine);
  CHECK(cosine_defaults.get("total") == 0 && cosine_defaults.get("min_factor") == 0);

  // The factories.
  const vsgd::Schedule decay = vsgd::Schedule::step_decay(5, 0.5);
  CHECK(decay.kind() == Kind::StepDecay && decay.get("every") == 5 && decay.get("factor") == 0.5);
  vsgd::Schedule cosine = vsgd::Schedule::cosine(10, 0.1);
  CHECK(cosine.kind() == Kind::Cosine && cosine.get("total") == 10 &&
        cosine.get("min_factor") == 0.1 && cosine.get("warmup") == 0);
  CHECK(vsgd::Schedule::one_cycle(50).kind() == Kind::OneCycle);
  CHECK(vsgd::Schedule::one_cycle(50).get("total") == 50);
  CHECK(vsgd::Schedule::constant().kind() == Kind::Constant);
  expect_error(VSGD_RESULT_INVALID_SCHEDULE, "vsgd_schedule_set",
               [&] { cosine.set("every", 3); });  // not a cosine field
  expect_error(VSGD_RESULT_INVALID_SCHEDULE, "vsgd_schedule_set",
               [&] { cosine.set("total", 2.5); });  // not a whole step count
  CHECK(cosine.get("total") == 10);                  // unchanged by the failed set

  // On a handle: copied in, read back as a new schedule the caller owns.
  vsgd::Optimizer adam(vsgd::Config(vsgd::Algorithm::Adam));
  const std::size_t plain = adam.add_group(vsgd::Config(vsgd::Algorithm::Adam));
  CHECK(adam.schedule(0).kind() == Kind::Constant && adam.schedule(plain).kind() == Kind::Constant);
  CHECK(adam.lr_at(0, 7) == 1e-3);
  {
    vsgd::Schedule warm = vsgd::Schedule::cosine(10, 0.1);
    warm.set("warmup", 2);
    adam.set_schedule(0, warm);
  }  // freed here: the handle keeps its own copy
  adam.set_schedule(plain, cosine);
  vsgd::Schedule back = adam.schedule(0);
  CHECK(back.kind() == Kind::Cosine && back.get("total") == 10 && back.get("min_factor") == 0.1 &&
        back.get("warmup") == 2);
  CHECK(std::fabs(adam.lr_at(0, 11) - 1e-4) < 1e-15);
  CHECK(adam.lr_at(0, 1) == 0.5 * adam.lr_at(plain, 1));  // warm-up: min(1, t / 2)
  CHECK(adam.lr_at(0, 2) == adam.lr_at(plain, 2) && adam.lr_at(0, 2) < 1e-3);
  back.set("total", 20);  // the caller's copy: the handle is unaffected until set again
  CHECK(std::fabs(adam.lr_at(0, 11) - 1e-4) < 1e-15);
  adam.set_schedule(0, back);
  CHECK(adam.lr_at(0, 11) > 2e-4 && adam.schedule(0).get("total") == 20);
  adam.set_schedule(plain, decay);
  CHECK(adam.lr_at(plain, 5) == 1e-3 && adam.lr_at(plain, 6) == 0.5e-3);
  adam.set_schedule(plain, one_cycle);
  CHECK(adam.schedule(plain).get("pct_start") == 0.25);
  expect_error(VSGD_RESULT_INVALID_SCHEDULE, "vsgd_optimizer_set_schedule",
               [&] { adam.set_schedule(0, cosine_defaults); });  // total 0
  CHECK(adam.schedule(0).get("total") == 20);                     // unchanged
  expect_error(VSGD_RESULT_UNKNOWN_GROUP, "vsgd_optimizer_schedule",
               [&] { (void)adam.schedule(2); });
  expect_error(VSGD_RESULT_UNKNOWN_GROUP, "vsgd_optimizer_set_schedule",
               [&] { adam.set_schedule(2, decay); });

  // Copies are independent (vsgd_schedule_clone); the copy of an empty one is empty.
  {
    vsgd::Schedule copy(back);
    copy.set("total", 99);
    CHECK(back.get("total") == 20 && copy.get("total") == 99);
    copy = one_cycle;
    CHECK(copy.kind() == Kind::OneCycle && one_cycle.get("pct_start") == 0.25);
    vsgd::Schedule none = vsgd::Schedule::adopt(nullptr);
    vsgd::Schedule none_copy(none);
    CHECK(!none_copy);
  }

  // Moves leave the source empty; using it throws.
  vsgd::Schedule moved(std::move(back));
  CHECK(!back && moved.get("total") == 20);
  expect_error(VSGD_RESULT_NULL_PARAMETER, "vsgd_schedule_kind_of", [&] { (void)back.kind(); });
  expect_error(VSGD_RESULT_NULL_PARAMETER, "vsgd_schedule_set", [&] { back.set("total", 3); });
  expect_error(VSGD_RESULT_NULL_PARAMETER, "vsgd_schedule_get", [&] { (void)back.get("total"); });
  expect_error(VSGD_RESULT_NULL_PARAMETER, "vsgd_schedule_validate", [&] { back.validate(); });
  expect_error(VSGD_RESULT_NULL_PARAMETER, "vsgd_optimizer_set_schedule",
               [&] { adam.set_schedule(0, back); });
  back = std::move(moved);
  CHECK(back && !moved && back.kind() == Kind::Cosine);
  swap(back, one_cycle);
  CHECK(back.kind() == Kind::OneCycle && one_cycle.kind() == Kind::Cosine);
  vsgd_schedule* raw = back.release();
  CHECK(!back && raw != nullptr);
  vsgd::Schedule adopted = vsgd::Schedule::adopt(raw);
  CHECK(adopted.get() == raw && adopted.get("total") == 100);
}

// ---- handles: ownership, groups, shaped tensors, threads, steps

static void test_optimizer() {
  vsgd::Config config(vsgd::Algorithm::Vsgd);
  config.set("lr", 0.05);
  vsgd::Optimizer opt(config);
  CHECK(opt.algorithm() == vsgd::Algorithm::Vsgd && opt.num_groups() == 1);

  // Groups.
  vsgd::Config second = config;
  second.set("lr", 0.2).set("weight_decay", 0.1);
  const std::size_t g1 = opt.add_group(second);
  CHECK(g1 == 1 && opt.num_groups() == 2);
  CHECK(opt.config(0).get("lr") == 0.05 && opt.config(g1).get("lr") == 0.2 &&
        opt.config(g1).get("weight_decay") == 0.1);
  second.set("lr", 0.3);  // copied in: the group keeps 0.2
  CHECK(opt.config(g1).get("lr") == 0.2);
  opt.set_config(g1, second);
  CHECK(opt.config(g1).get("lr") == 0.3);
  opt.set_lr(g1, 0.25);
  CHECK(opt.config(g1).get("lr") == 0.25 && opt.lr_at(g1, 1) == 0.25 && opt.lr_at(0, 1) == 0.05);
  vsgd::Config mine = opt.config();  // a new configuration, the caller's
  CHECK(mine.algorithm() == vsgd::Algorithm::Vsgd);
  mine.set("lr", 9);
  CHECK(opt.config().get("lr") == 0.05);
  expect_error(VSGD_RESULT_UNKNOWN_GROUP, "vsgd_optimizer_config", [&] { (void)opt.config(2); });
  expect_error(VSGD_RESULT_UNKNOWN_GROUP, "vsgd_optimizer_set_lr", [&] { opt.set_lr(2, 0.1); });
  expect_error(VSGD_RESULT_UNKNOWN_GROUP, "vsgd_optimizer_set_config",
               [&] { opt.set_config(2, config); });
  expect_error(VSGD_RESULT_INVALID_CONFIG, "vsgd_optimizer_set_config", [&] {
    vsgd::Config bad = config;
    bad.set("tau1", 2);
    opt.set_config(0, bad);
  });
  expect_error(VSGD_RESULT_ALGORITHM_MISMATCH, "vsgd_optimizer_set_config",
               [&] { opt.set_config(0, vsgd::Config(vsgd::Algorithm::Adam)); });
  expect_error(VSGD_RESULT_ALGORITHM_MISMATCH, "vsgd_optimizer_add_group",
               [&] { opt.add_group(vsgd::Config(vsgd::Algorithm::Adam)); });
  expect_error(VSGD_RESULT_INVALID_LEARNING_RATE, "vsgd_optimizer_set_lr",
               [&] { opt.set_lr(0, -1.0); });
  CHECK(opt.num_groups() == 2 && opt.config(0).get("lr") == 0.05);

  // Shaped tensors: a matrix, a vector in group 1, a scalar, and an unnamed 3-D one given by
  // pointer and rank.
  const std::size_t w = opt.add_tensor({2, 3}, vsgd::DType::F32, "w");
  const std::size_t b = opt.add_tensor({3}, vsgd::DType::F64, "b", g1);
  const std::size_t s = opt.add_tensor({}, vsgd::DType::F32, "scale");
  const std::size_t dims[] = {2, 1, 2};
  const std::size_t x = opt.add_tensor(dims, 3, vsgd::DType::F64);
  CHECK(w == 0 && b == 1 && s == 2 && x == 3 && opt.num_tensors() == 4);
  CHECK((opt.shape(w) == std::vector<std::size_t>{2, 3}));
  CHECK((opt.shape(b) == std::vector<std::size_t>{3}));
  CHECK(opt.shape(s).empty());
  CHECK((opt.shape(x) == std::vector<std::size_t>{2, 1, 2}));
  const vsgd_tensor_info iw = opt.info(w);
  CHECK(iw.struct_size == sizeof(vsgd_tensor_info) && iw.len == 6 && iw.rank == 2 &&
        iw.dtype == VSGD_DTYPE_F32 && iw.group == 0 && iw.step == 0);
  const vsgd_tensor_info ib = opt.info(b);
  CHECK(ib.len == 3 && ib.rank == 1 && ib.group == g1 && ib.dtype == VSGD_DTYPE_F64);
  const vsgd_tensor_info is = opt.info(s);
  CHECK(is.len == 1 && is.rank == 0 && is.group == 0);
  CHECK(opt.info(x).len == 4 && opt.info(x).rank == 3);
  CHECK(opt.tensor_name(w) == "w" && opt.tensor_name(x).empty());
  CHECK(opt.find("scale") == s && opt.find("b") == b);
  expect_error(VSGD_RESULT_UNKNOWN_TENSOR, "vsgd_optimizer_find", [&] { (void)opt.find("nope"); });
  expect_error(VSGD_RESULT_UNKNOWN_TENSOR, "vsgd_optimizer_tensor_shape",
               [&] { (void)opt.shape(4); });
  expect_error(VSGD_RESULT_UNKNOWN_TENSOR, "vsgd_optimizer_tensor_info", [&] { (void)opt.info(4); });
  expect_error(VSGD_RESULT_UNKNOWN_TENSOR, "vsgd_optimizer_tensor_name",
               [&] { (void)opt.tensor_name(4); });
  expect_error(VSGD_RESULT_UNKNOWN_GROUP, "vsgd_optimizer_add_tensor",
               [&] { opt.add_tensor({2}, vsgd::DType::F32, "g2", 2); });
  expect_error(VSGD_RESULT_SHAPE_OVERFLOW, "vsgd_optimizer_add_tensor",
               [&] { opt.add_tensor({std::numeric_limits<std::size_t>::max(), 3}); });
  expect_error(VSGD_RESULT_INVALID_ENUM, "vsgd_optimizer_add_tensor",
               [&] { opt.add_tensor({2}, static_cast<vsgd::DType>(4)); });
  CHECK(opt.num_tensors() == 4);  // failed registrations add nothing

  // Steps see the flat element count; the groups' rates differ.
  std::vector<float> pw(6, 0.5f), ps{1.0f}, gs{0.25f};
  std::vector<double> pb(3, 0.0);
  CHECK(opt.step_tensor(w, pw, grad_at<float>(0, 6, 0.1f)) == vsgd::StepOutcome::Applied);
  CHECK(opt.step_tensor(s, ps, gs) == vsgd::StepOutcome::Applied && ps[0] < 1.0f);
  CHECK(opt.step_tensor(b, pb, grad_at<double>(0, 3, 0.0)) == vsgd::StepOutcome::Applied);
  CHECK(opt.step_count(w) == 1 && opt.info(s).step == 1 && opt.step_count(x) == 0);
  CHECK(opt.state<float>(w, "mug").size() == 6 && opt.state<double>(x, "bhg").size() == 4);
  expect_error(VSGD_RESULT_LENGTH_MISMATCH, "vsgd_optimizer_step_tensor_f32", [&] {
    std::vector<float> p2(2), g2(2);
    opt.step_tensor(s, p2, g2);
  });
  expect_error(VSGD_RESULT_LENGTH_MISMATCH, "vsgd::Optimizer::step_tensor",
               [&] { opt.step_tensor(w, pw, std::vector<float>(5)); });

  // Threads.
  opt.set_threads(1);
  CHECK(opt.threads() == 1);
  opt.set_threads(3);
  CHECK(opt.threads() == 3);
  opt.set_threads(0);
  CHECK(opt.threads() >= 1);
  CHECK(opt.schedule_clock() == vsgd::ScheduleClock::PerTensor && opt.global_step() == 0);
  opt.set_schedule_clock(vsgd::ScheduleClock::Global);
  opt.set_global_step(7);
  CHECK(opt.schedule_clock() == vsgd::ScheduleClock::Global && opt.global_step() == 7);
  opt.set_schedule_clock(vsgd::ScheduleClock::PerTensor);
  opt.set_global_step(0);
  CHECK(opt.clip_norm() == 0.0 && std::isnan(opt.last_grad_norm()));
  opt.set_clip_norm(2.5);
  CHECK(opt.clip_norm() == 2.5);
  expect_error(VSGD_RESULT_INVALID_CLIP_NORM, "vsgd_optimizer_set_clip_norm",
               [&] { opt.set_clip_norm(-1.0); });
  CHECK(opt.clip_norm() == 2.5);
  opt.set_clip_norm(0.0);

  // Move construction leaves the source empty; using it throws, never crashes.
  vsgd::Optimizer moved(std::move(opt));
  CHECK(!opt && moved);
  expect_error(VSGD_RESULT_NULL_PARAMETER, "vsgd_optimizer_num_tensors", [&] { (void)opt.num_tensors(); });
  expect_error(VSGD_RESULT_NULL_PARAMETER, "vsgd_optimizer_num_groups", [&] { (void)opt.num_groups(); });
  expect_error(VSGD_RESULT_NULL_PARAMETER, "vsgd_optimizer_threads", [&] { (void)opt.threads(); });
  expect_error(VSGD_RESULT_NULL_PARAMETER, "vsgd_optimizer_set_threads", [&] { opt.set_threads(1); });
  expect_error(VSGD_RESULT_NULL_PARAMETER, "vsgd_optimizer_schedule", [&] { (void)opt.schedule(); });
  expect_error(VSGD_RESULT_NULL_PARAMETER, "vsgd_optimizer_config", [&] { (void)opt.config(); });
  expect_error(VSGD_RESULT_NULL_PARAMETER, "vsgd_optimizer_tensor_shape", [&] { (void)opt.shape(0); });
  expect_error(VSGD_RESULT_NULL_PARAMETER, "vsgd_optimizer_add_tensor", [&] { opt.add_tensor({1}); });
  CHECK(moved.num_tensors() == 4);
  // Move assignment frees the target's old handle (valgrind checks nothing leaks).
  vsgd::Optimizer other(vsgd::Config(vsgd::Algorithm::Vsgd));
  other.add_tensor({5});
  other = std::move(moved);
  CHECK(other.num_tensors() == 4 && !moved);
  vsgd::Optimizer& self = other;
  other = std::move(self);  // self-move keeps the handle
  CHECK(other && other.num_tensors() == 4);
  swap(other, moved);
  CHECK(!other && moved.num_tensors() == 4);
  // release / adopt hand the handle over exactly once.
  vsgd_optimizer* raw = moved.release();
  CHECK(!moved && raw != nullptr);
  vsgd::Optimizer adopted = vsgd::Optimizer::adopt(raw);
  CHECK(adopted.get() == raw && adopted.num_tensors() == 4 && adopted.num_groups() == 2);

  std::vector<double> pd{1.0, 2.0}, gd{0.5, 0.5};
  expect_error(VSGD_RESULT_DTYPE_MISMATCH, "vsgd_optimizer_step_tensor_f64",
               [&] { adopted.step_tensor(w, pd.data(), gd.data(), 2); });
  expect_error(VSGD_RESULT_UNKNOWN_STATE_ARRAY, "vsgd_optimizer_state_f32",
               [&] { (void)adopted.state<float>(w, "m"); });
  expect_error(VSGD_RESULT_DTYPE_MISMATCH, "vsgd_optimizer_state_f64",
               [&] { (void)adopted.state<double>(w, "mug"); });
  auto beta = adopted.effective_momentum<double>(b);
  CHECK(beta.size() == 3 && beta[0] > 0 && beta[0] < 1);
  const std::vector<float> beta_w = adopted.effective_momentum<float>(w);
  CHECK(beta_w.size() == 6 && beta_w[5] > 0 && beta_w[5] < 1);
  auto beta_x = adopted.effective_momentum<double>(x);  // no step yet: 0/0
  CHECK(beta_x.size() == 4 && std::isnan(beta_x[0]));

  // Non-finite gradients: skipped and reported by default, an exception under Policy::Error.
  std::vector<float> bad_g = grad_at<float>(1, 6, 0.0f);
  bad_g[4] = NAN;
  const std::vector<float> before = pw;
  CHECK(adopted.policy() == vsgd::Policy::Skip);
  CHECK(adopted.step_tensor(w, pw, bad_g) == vsgd::StepOutcome::Skipped);
  CHECK(adopted.last_skipped() == std::vector<std::size_t>{w});
  CHECK(same_bits(pw, before) && adopted.step_count(w) == 1);
  adopted.set_policy(vsgd::Policy::Error);
  CHECK(adopted.policy() == vsgd::Policy::Error);
  expect_error(VSGD_RESULT_NON_FINITE_GRADIENT, "vsgd_optimizer_step_tensor_f32",
               [&] { adopted.step_tensor(w, pw, bad_g); });
  CHECK(adopted.step_count(w) == 1);
  adopted.set_policy(vsgd::Policy::Propagate);
  CHECK(adopted.step_tensor(w, pw, bad_g) == vsgd::StepOutcome::Applied);
  CHECK(std::isnan(pw[4]) && !std::isnan(pw[0]) && adopted.step_count(w) == 2);
  expect_error(VSGD_RESULT_INVALID_ENUM, "vsgd_optimizer_set_policy",
               [&] { adopted.set_policy(static_cast<vsgd::Policy>(3)); });

  // Wrong algorithm.
  vsgd::Optimizer adam(vsgd::Config(vsgd::Algorithm::Adam));
  adam.add_tensor({2}, vsgd::DType::F64);
  expect_error(VSGD_RESULT_ALGORITHM_MISMATCH, "vsgd_optimizer_effective_momentum_f64",
               [&] { (void)adam.effective_momentum<double>(0); });
  expect_error(VSGD_RESULT_ALGORITHM_MISMATCH, "vsgd_optimizer_add_group",
               [&] { adam.add_group(config); });
}

// Multi-tensor steps (vector and pointer forms), their report and last_skipped.
static void test_multi_step() {
  vsgd::Optimizer opt(vsgd::Config(vsgd::Algorithm::Adam));
  opt.add_tensor({4});
  opt.add_tensor({2, 2});
  opt.add_tensor({3});
  std::vector<std::vector<float>> params{std::vector<float>(4, 1.0f), std::vector<float>(4, 2.0f),
                                         std::vector<float>(3, 3.0f)};
  std::vector<std::vector<float>> grads{grad_at<float>(0, 4, 0.1f), grad_at<float>(1, 4, 0.1f),
                                        grad_at<float>(2, 3, 0.1f)};
  grads[1][2] = std::numeric_limits<float>::infinity();
  const std::vector<float> p1 = params[1];
  vsgd_step_report r = opt.step(params, grads);
  CHECK(r.struct_size == sizeof(vsgd_step_report) && r.applied == 2 && r.skipped == 1);
  CHECK(opt.last_skipped() == std::vector<std::size_t>{1});
  CHECK(same_bits(params[1], p1) && params[0][0] != 1.0f && params[2][0] != 3.0f);
  CHECK(opt.step_count(0) == 1 && opt.step_count(1) == 0 && opt.step_count(2) == 1);
  grads[1][2] = 0.5f;
  r = opt.step(params, grads);
  CHECK(r.applied == 3 && r.skipped == 0 && opt.last_skipped().empty());
  CHECK(opt.step_count(1) == 1 && opt.step_count(0) == 2);
  // Every tensor must be given, in order; nothing changes on error.
  std::vector<std::vector<float>> two_p(params.begin(), params.begin() + 2),
      two_g(grads.begin(), grads.begin() + 2);
  expect_error(VSGD_RESULT_LENGTH_MISMATCH, "vsgd_optimizer_step_f32",
               [&] { opt.step(two_p, two_g); });
  expect_error(VSGD_RESULT_LENGTH_MISMATCH, "vsgd::Optimizer::step",
               [&] { opt.step(params, two_g); });
  grads[2].pop_back();
  expect_error(VSGD_RESULT_LENGTH_MISMATCH, "vsgd::Optimizer::step", [&] { opt.step(params, grads); });
  CHECK(opt.step_count(0) == 2);
  std::vector<std::vector<double>> dp{std::vector<double>(4), std::vector<double>(4),
                                      std::vector<double>(3)};
  const std::vector<std::vector<double>> dg = dp;
  expect_error(VSGD_RESULT_DTYPE_MISMATCH, "vsgd_optimizer_step_f64", [&] { opt.step(dp, dg); });

  // The pointer form, f64.
  vsgd::Optimizer opt64(vsgd::Config(vsgd::Algorithm::Sgdm));
  opt64.add_tensor({3}, vsgd::DType::F64);
  opt64.add_tensor({}, vsgd::DType::F64);
  std::vector<double> a{1, 2, 3}, ga{0.5, -0.5, 1.0}, c{4}, gc{NAN};
  double* ps[] = {a.data(), c.data()};
  const double* gs[] = {ga.data(), gc.data()};
  const std::size_t lens[] = {3, 1};
  r = opt64.step(ps, gs, lens, 2);
  CHECK(r.applied == 1 && r.skipped == 1 && opt64.last_skipped() == std::vector<std::size_t>{1});
  CHECK(std::fabs(a[0] - (1 - 0.01 * 0.5)) < 1e-15 && c[0] == 4);
  gc[0] = 2;
  r = opt64.step(ps, gs, lens, 2);
  CHECK(r.applied == 2 && r.skipped == 0 && std::fabs(c[0] - (4 - 0.01 * 2)) < 1e-15);
}

// The same bits for every thread count, over a step of several tensors large enough to split.
template <class T>
static void test_threads_same_bits() {
  const std::size_t lens[] = {(std::size_t{1} << 16) + 123, 7, 4096};
  std::vector<std::vector<T>> want;
  std::vector<std::vector<T>> want_state;
  for (std::size_t threads : {std::size_t{1}, std::size_t{4}, std::size_t{0}}) {
    vsgd::Optimizer opt(vsgd::Config(vsgd::Algorithm::Vsgd));
    opt.set_threads(threads);
    std::vector<std::vector<T>> params, grads(3);
    for (std::size_t k = 0; k < 3; k++) {
      opt.add_tensor({lens[k]}, sizeof(T) == 4 ? vsgd::DType::F32 : vsgd::DType::F64);
      params.push_back(grad_at<T>(100 + k, lens[k], static_cast<T>(0.5)));
    }
    for (std::size_t s = 0; s < 3; s++) {
      for (std::size_t k = 0; k < 3; k++) grads[k] = grad_at<T>(s * 3 + k, lens[k], static_cast<T>(0.1));
      CHECK(opt.step(params, grads).applied == 3);
    }
    std::vector<std::vector<T>> state;
    for (std::size_t k = 0; k < 3; k++) state.push_back(opt.state<T>(k, "bhg"));
    if (want.empty()) {
      want = params;
      want_state = state;
    } else {
      for (std::size_t k = 0; k < 3; k++) CHECK(same_bits(params[k], want[k]) && same_bits(state[k], want_state[k]));
    }
  }
}

// ---- stateless steps: all_finite and the caller's verdict across shards

static void test_all_finite() {
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(vsgd::all_finite(std::vector<float>{1.0f, -2.0f, 3e38f}));
  CHECK(!vsgd::all_finite(std::vector<float>{1.0f, inf, 0.0f}));
  CHECK(!vsgd::all_finite(std::vector<float>{-inf}));
  CHECK(!vsgd::all_finite(std::vector<double>{0.0, std::nan("")}));
  CHECK(vsgd::all_finite(std::vector<double>{}));
  CHECK(vsgd::all_finite(static_cast<const float*>(nullptr), 0));
  CHECK(vsgd::all_finite(std::vector<double>{std::numeric_limits<double>::max(),
                                             std::numeric_limits<double>::denorm_min()}));
  // A NaN at every position of a buffer longer than a vector lane, tail included.
  std::vector<double> v(37, 1.0);
  std::vector<float> f(37, 1.0f);
  for (std::size_t i = 0; i < v.size(); i++) {
    v[i] = -std::nan("");
    f[i] = inf;
    CHECK(!vsgd::all_finite(v) && !vsgd::all_finite(f));
    CHECK(vsgd::all_finite(v.data(), i) && vsgd::all_finite(f.data(), i));  // the prefix
    v[i] = 1.0;
    f[i] = 1.0f;
  }
  CHECK(vsgd::all_finite(v) && vsgd::all_finite(f));
  expect_error(VSGD_RESULT_NULL_PARAMETER, "vsgd_all_finite_f32",
               [] { (void)vsgd::all_finite(static_cast<const float*>(nullptr), 3); });
  expect_error(VSGD_RESULT_NULL_PARAMETER, "vsgd_all_finite_f64",
               [] { (void)vsgd::all_finite(static_cast<const double*>(nullptr), 3); });
}

// A tensor of 10 elements held as 3 shards ([0,3), [3,7), [7,10)), each stepped on its own
// (as on 3 devices) with the verdict of all shards: the same bits as the unsharded step, also
// when one shard holds a NaN (every shard skips). Checking each shard alone would not be.
template <class T>
static void test_sharded(vsgd::Algorithm a) {
  const char* fn = sizeof(T) == 4 ? "vsgd_step_f32" : "vsgd_step_f64";
  const std::size_t n = 10, cuts[] = {0, 3, 7, 10};
  vsgd::Config config(a);
  const double lr = config.get("lr");
  const std::size_t ns = vsgd::state_count(a);
  std::vector<T> whole = grad_at<T>(50, n, static_cast<T>(0.3)), sharded = whole;
  std::vector<std::vector<T>> whole_state(ns, std::vector<T>(n)), sharded_state = whole_state;
  std::uint64_t t_whole = 0, t_sharded = 0;
  auto ptrs = [&](std::vector<std::vector<T>>& st, std::size_t offset) {
    std::vector<T*> p;
    for (auto& s : st) p.push_back(s.data() + offset);
    return p;
  };
  for (std::size_t s = 0; s < 6; s++) {
    std::vector<T> g = grad_at<T>(s, n, static_cast<T>(-0.1));
    const bool has_nan = s % 2 == 1;
    if (has_nan) g[5] = static_cast<T>(NAN);  // in shard 1 only
    const vsgd::StepOutcome o = vsgd::step(config, t_whole + 1, lr, whole.data(), g.data(), n,
                                           ptrs(whole_state, 0).data(), ns);
    CHECK(o == (has_nan ? vsgd::StepOutcome::Skipped : vsgd::StepOutcome::Applied));
    if (o == vsgd::StepOutcome::Applied) t_whole++;
    // Each shard's verdict, then their AND (an all-reduce across devices).
    bool verdict = true;
    for (std::size_t k = 0; k < 3; k++) {
      const bool local = vsgd::all_finite(g.data() + cuts[k], cuts[k + 1] - cuts[k]);
      CHECK(local == !(has_nan && k == 1));
      verdict = verdict && local;
    }
    CHECK(verdict == !has_nan);
    if (has_nan) {
      // The wrong way: shard 0 checking only itself would apply while shard 1 skips.
      std::vector<T> p0(sharded.begin(), sharded.begin() + 3);
      std::vector<std::vector<T>> st0;
      for (auto& st : sharded_state) st0.emplace_back(st.begin(), st.begin() + 3);
      CHECK(vsgd::step(config, t_sharded + 1, lr, p0.data(), g.data(), 3, ptrs(st0, 0).data(),
                       ns) == vsgd::StepOutcome::Applied);
    }
    for (std::size_t k = 0; k < 3; k++) {
      const std::size_t off = cuts[k], len = cuts[k + 1] - cuts[k];
      CHECK(vsgd::step(config, t_sharded + 1, lr, sharded.data() + off, g.data() + off, len,
                       ptrs(sharded_state, off).data(), ns, vsgd::Policy::Skip,
                       verdict ? vsgd::Finite::Yes : vsgd::Finite::No) == o);
    }
    if (verdict) t_sharded++;
    CHECK(same_bits(sharded, whole) && t_sharded == t_whole);
    for (std::size_t j = 0; j < ns; j++) CHECK(same_bits(sharded_state[j], whole_state[j]));
  }
  CHECK(t_whole == 3);

  // The verdict under the other policies, on a finite gradient: No + Error fails changing
  // nothing, No + Propagate and Yes apply (Yes without a scan, so a NaN gets through).
  std::vector<T> g = grad_at<T>(9, n, static_cast<T>(0.2));
  const std::vector<T> p_before = sharded;
  expect_error(VSGD_RESULT_NON_FINITE_GRADIENT, fn, [&] {
    vsgd::step(config, t_sharded + 1, lr, sharded.data(), g.data(), n,
               ptrs(sharded_state, 0).data(), ns, vsgd::Policy::Error, vsgd::Finite::No);
  });
  CHECK(same_bits(sharded, p_before));
  CHECK(vsgd::step(config, t_sharded + 1, lr, sharded.data(), g.data(), n,
                   ptrs(sharded_state, 0).data(), ns, vsgd::Policy::Propagate,
                   vsgd::Finite::No) == vsgd::StepOutcome::Applied);
  CHECK(vsgd::step(config, t_whole + 1, lr, whole.data(), g.data(), n, ptrs(whole_state, 0).data(),
                   ns, vsgd::Policy::Skip, vsgd::Finite::Yes) == vsgd::StepOutcome::Applied);
  CHECK(same_bits(sharded, whole));
  g[2] = static_cast<T>(NAN);
  CHECK(vsgd::step(config, t_whole + 2, lr, whole.data(), g.data(), n, ptrs(whole_state, 0).data(),
                   ns, vsgd::Policy::Skip, vsgd::Finite::Yes) == vsgd::StepOutcome::Applied);
  CHECK(std::isnan(whole[2]) && !std::isnan(whole[1]));
  expect_error(VSGD_RESULT_INVALID_ENUM, fn, [&] {
    vsgd::step(config, 1, lr, sharded.data(), g.data(), n, ptrs(sharded_state, 0).data(), ns,
               vsgd::Policy::Skip, static_cast<vsgd::Finite>(3));
  });
  expect_error(VSGD_RESULT_INVALID_STEP, fn, [&] {
    vsgd::step(config, 0, lr, sharded.data(), g.data(), n, ptrs(sharded_state, 0).data(), ns);
  });
  expect_error(VSGD_RESULT_STATE_COUNT, fn, [&] {
    vsgd::step(config, 1, lr, sharded.data(), g.data(), n, ptrs(sharded_state, 0).data(), ns - 1);
  });
  vsgd::Config gone(std::move(config));
  expect_error(VSGD_RESULT_NULL_PARAMETER, fn, [&] {
    vsgd::step(config, 1, lr, sharded.data(), g.data(), n, ptrs(sharded_state, 0).data(), ns);
  });
}

// ---- checkpoints through the wrapper

// w is a 2 × 3 matrix, b a vector of 2; the checkpoint records the shapes.
struct Model {
  std::vector<float> w{0.5f, -1.0f, 2.0f, 1.5f, -0.25f, 0.0f};
  std::vector<double> b{0.25, -0.75};
};

static vsgd::Optimizer fresh_optimizer(vsgd::Algorithm a) {
  vsgd::Optimizer opt{vsgd::Config(a)};
  opt.set_schedule(0, vsgd::Schedule::cosine(20, 0.1));
  opt.add_tensor({2, 3}, vsgd::DType::F32, "w");
  opt.add_tensor({2}, vsgd::DType::F64, "b");
  return opt;
}

static void train(vsgd::Optimizer& opt, Model& m, std::size_t from, std::size_t to) {
  for (std::size_t s = from; s < to; s++) {
    CHECK(opt.step_tensor(0, m.w, grad_at<float>(s, 6, 0.1f)) == vsgd::StepOutcome::Applied);
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
        case 0: opt = vsgd::Optimizer::load(bytes.data(), bytes.size()); break;
        case 1: opt = fresh_optimizer(a); opt.set_lr(0, 1e-6); opt.restore(bytes); break;
        case 2: opt = vsgd::Optimizer::load_file(path); break;
        default: opt = fresh_optimizer(a); opt.set_lr(0, 1e-6); opt.restore_file(path);
      }
      CHECK(opt.algorithm() == a && opt.step_count(0) == cut && opt.tensor_name(1) == "b");
      CHECK((opt.shape(0) == std::vector<std::size_t>{2, 3}) && opt.info(0).rank == 2);
      CHECK(opt.num_groups() == 1 && opt.config().algorithm() == a);
      const vsgd::Schedule s = opt.schedule(0);
      CHECK(s.kind() == vsgd::ScheduleKind::Cosine && s.get("total") == 20 &&
            s.get("min_factor") == 0.1);
      opt.set_threads(way % 2 == 0 ? 1 : 0);  // any thread count: the same bits
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
  other.add_tensor({2, 3}, vsgd::DType::F32, "w");
  other.add_tensor({2}, vsgd::DType::F64, "bias");
  try {
    other.restore(bytes);
    CHECK(false);
  } catch (const vsgd::Error& e) {
    CHECK(e.code() == VSGD_RESULT_CHECKPOINT_MISMATCH);
    CHECK(std::strstr(e.what(), "tensor 1 (\"bias\")") != nullptr);
  }
  CHECK(other.step_count(0) == 0);  // unchanged
  // Same lengths, another shape: a mismatch too.
  vsgd::Optimizer transposed{vsgd::Config(vsgd::Algorithm::Vsgd)};
  transposed.add_tensor({3, 2}, vsgd::DType::F32, "w");
  transposed.add_tensor({2}, vsgd::DType::F64, "b");
  try {
    transposed.restore(bytes);
    CHECK(false);
  } catch (const vsgd::Error& e) {
    CHECK(e.code() == VSGD_RESULT_CHECKPOINT_MISMATCH);
    CHECK(std::strstr(e.what(), "tensor 0 (\"w\")") != nullptr);
    CHECK(std::strstr(e.what(), "shape") != nullptr);
  }
  CHECK(transposed.step_count(0) == 0);
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

// How a case is run: through a handle (its default threads, or one), through vsgd::step,
// or through vsgd::step on each tensor split into 3 shards with the shards' common verdict.
enum class Mode { Handle, HandleOneThread, Stateless, Sharded };

// Runs a case one way, comparing every value.
template <class T>
static std::size_t run(const Case& c, Mode mode) {
  const bool stateless = mode == Mode::Stateless || mode == Mode::Sharded;
  const int d = sizeof(T) == 4 ? 0 : 1;
  vsgd::Config config(vsgd::algorithm_from_name(c.algorithm.c_str()));
  for (const auto& [k, v] : c.hyper) config.set(k.c_str(), v);
  const std::size_t nstate = vsgd::state_count(config.algorithm());
  vsgd::Optimizer opt(config);
  if (mode == Mode::HandleOneThread) opt.set_threads(1);
  std::vector<std::vector<T>> params, grads(c.lens.size());
  std::vector<std::vector<std::vector<T>>> state(c.lens.size());
  for (std::size_t k = 0; k < c.lens.size(); k++) {
    opt.add_tensor({c.lens[k]}, sizeof(T) == 4 ? vsgd::DType::F32 : vsgd::DType::F64);
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
      if (mode == Mode::Stateless) {
        std::vector<T*> ptrs;
        for (auto& v : state[k]) ptrs.push_back(v.data());
        CHECK(vsgd::step(config, s + 1, lr, params[k].data(), grads[k].data(), c.lens[k],
                         ptrs.data(), nstate) == vsgd::StepOutcome::Applied);
      } else if (mode == Mode::Sharded) {
        const std::size_t n = c.lens[k], cuts[] = {0, n / 3, 2 * n / 3, n};
        bool verdict = true;
        for (std::size_t i = 0; i < 3; i++)
          verdict = vsgd::all_finite(grads[k].data() + cuts[i], cuts[i + 1] - cuts[i]) && verdict;
        CHECK(verdict);
        for (std::size_t i = 0; i < 3; i++) {
          std::vector<T*> ptrs;
          for (auto& v : state[k]) ptrs.push_back(v.data() + cuts[i]);
          CHECK(vsgd::step(config, s + 1, lr, params[k].data() + cuts[i],
                           grads[k].data() + cuts[i], cuts[i + 1] - cuts[i], ptrs.data(), nstate,
                           vsgd::Policy::Skip, vsgd::Finite::Yes) == vsgd::StepOutcome::Applied);
        }
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

// ---- CUDA: argument errors anywhere; without a GPU, a clean "no device"
static void test_cuda() {
  vsgd::Config adam(vsgd::Algorithm::Adam);
  vsgd_cuda_tensor t = {0x1000, 0x2000, {0x3000, 0x4000, 0}, 16, 1, 1e-3, VSGD_DTYPE_F32, 0};
  expect_error(VSGD_RESULT_NULL_PARAMETER, "vsgd_cuda_step",
               [&] { vsgd::cuda_step(adam, vsgd::Policy::Skip, &t, 1, 0); });  // no verdict
  vsgd_cuda_tensor bad = t;
  bad.t = 0;
  expect_error(VSGD_RESULT_INVALID_STEP, "vsgd_cuda_step",
               [&] { vsgd::cuda_step(adam, vsgd::Policy::Skip, &bad, 1, 64); });
  std::string reason;
  if (vsgd::cuda_available(&reason)) {
    std::printf("cpp_wrapper: a GPU is present (device steps: scripts/gpu-check.sh)\n");
    return;
  }
  CHECK(reason.rfind("vsgd_cuda_available: ", 0) == 0);
  expect_error(VSGD_RESULT_NO_DEVICE, "vsgd_cuda_step",
               [&] { vsgd::cuda_step(adam, vsgd::Policy::Skip, &t, 1, 64); });
}

// Mixed precision through the wrapper: bfloat16 parameters with bfloat16 state (stochastic
// rounding), one whole tensor against three shards with their offsets: the same bits, because
// the rounding follows the whole-tensor index. Then bf16/f16 with float state move the
// parameter, and a NaN is seen by the 16-bit scans.
/* The handle's mixed-precision tensors against the stateless steps: a bf16 tensor with float
 * state and one with bf16 state (seed 77), 4 steps with vsgd::Optimizer::step_bf16 (one pass,
 * 2 threads), the same 4 with vsgd::step_bf16 / vsgd::step_bf16_sr; then through a checkpoint. */
static void test_mixed_handle(vsgd::Algorithm a) {
  const std::size_t n = 700;
  vsgd::Config config(a);
  const double lr = config.get("lr");
  const std::size_t ns = vsgd::state_count(a);
  vsgd::Optimizer opt(config);
  opt.set_threads(2);
  CHECK(opt.add_tensor({n}, vsgd::DType::BF16, "w") == 0);
  CHECK(opt.add_tensor_mixed({n}, vsgd::DType::BF16, vsgd::DType::BF16, 77, "b") == 1);
  const vsgd_tensor_info i1 = opt.info(1);
  CHECK(i1.dtype == VSGD_DTYPE_BF16 && i1.state_dtype == VSGD_DTYPE_BF16 && i1.seed == 77);
  CHECK(opt.info(0).state_dtype == VSGD_DTYPE_F32 && opt.info(0).seed == 0);
  std::vector<std::uint16_t> w(n), b(n);
  for (std::size_t i = 0; i < n; i++) {
    w[i] = static_cast<std::uint16_t>(0x3f80 + i % 97);
    b[i] = static_cast<std::uint16_t>(0xbf00 + i % 89);
  }
  std::vector<std::uint16_t> rw = w, rb = b;
  std::vector<float> fs(n * ns, 0.0f);
  std::vector<std::vector<std::uint16_t>> bs(ns, std::vector<std::uint16_t>(n));
  std::vector<float*> fp;
  std::vector<std::uint16_t*> bp;
  for (std::size_t j = 0; j < ns; j++) {
    fp.push_back(fs.data() + j * n);
    bp.push_back(bs[j].data());
  }
  for (std::uint64_t t = 1; t <= 4; t++) {
    std::vector<std::uint16_t> g(n);
    for (std::size_t i = 0; i < n; i++) g[i] = static_cast<std::uint16_t>(0x3d00 + (7 * i + t) % 300);
    std::uint16_t* ps[2] = {w.data(), b.data()};
    const std::uint16_t* gs[2] = {g.data(), g.data()};
    const std::size_t lens[2] = {n, n};
    CHECK(opt.step_bf16(ps, gs, lens, 2).applied == 2);
    CHECK(vsgd::step_bf16(config, t, lr, rw.data(), g.data(), n, fp.data(), ns) ==
          vsgd::StepOutcome::Applied);
    CHECK(vsgd::step_bf16_sr(config, t, lr, rb.data(), g.data(), n, bp.data(), ns, 77) ==
          vsgd::StepOutcome::Applied);
  }
  CHECK(w == rw && b == rb && w != b);
  const std::string first = vsgd::state_name(a, 0);
  std::vector<float> s0 = opt.state<float>(0, first.c_str());
  CHECK(std::equal(s0.begin(), s0.end(), fs.begin()));
  CHECK(opt.state_bf16(1, first.c_str()) == bs[0]);
  // The float step refuses 16-bit parameters; the bf16 step refuses float ones.
  float* fps[2] = {nullptr, nullptr};
  const float* fgs[2] = {nullptr, nullptr};
  const std::size_t zero[2] = {0, 0};
  expect_error(VSGD_RESULT_DTYPE_MISMATCH, "vsgd_optimizer_step_f32",
               [&] { (void)opt.step(fps, fgs, zero, 2); });
  // Through a checkpoint: the same dtypes, seed and state bits.
  vsgd::Optimizer back = vsgd::Optimizer::load(opt.save());
  CHECK(back.info(1).seed == 77 && back.info(1).state_dtype == VSGD_DTYPE_BF16);
  CHECK(back.state_bf16(1, first.c_str()) == bs[0]);
  CHECK(back.save() == opt.save());
  // step_any over a bfloat16 tensor and float parameters with bfloat16 state gives each the
  // bits of its single-tensor step (step_tensor_any; the float step_tensor for the second).
  vsgd::Optimizer mix(config), solo(config);
  for (vsgd::Optimizer* o : {&mix, &solo}) {
    CHECK(o->add_tensor({n}, vsgd::DType::BF16) == 0);
    CHECK(o->add_tensor_mixed({n}, vsgd::DType::F32, vsgd::DType::BF16, 5, "fb") == 1);
  }
  std::vector<std::uint16_t> mw = w, sw = w;
  std::vector<float> mf(n, 0.5f), sf(n, 0.5f), gf(n);
  for (std::size_t i = 0; i < n; i++) gf[i] = 0.001f * static_cast<float>(i % 13) - 0.005f;
  for (int t = 0; t < 2; t++) {
    void* ps[2] = {mw.data(), mf.data()};
    const void* gs[2] = {w.data(), gf.data()};
    const std::size_t lens[2] = {n, n};
    const vsgd_step_report r = mix.step_any(ps, gs, lens, 2);
    CHECK(r.applied == 2 && r.skipped == 0);
    CHECK(solo.step_tensor_any(0, sw.data(), w.data(), n) == vsgd::StepOutcome::Applied);
    CHECK(solo.step_tensor(1, sf.data(), gf.data(), n) == vsgd::StepOutcome::Applied);
  }
  CHECK(mw == sw && same_bits(mf, sf) && mf[1] != 0.5f);
  CHECK(mix.state_bf16(1, first.c_str()) == solo.state_bf16(1, first.c_str()));
}

static void test_mixed(vsgd::Algorithm a) {
  const std::size_t n = 10, cuts[] = {0, 3, 7, 10};
  vsgd::Config config(a);
  const double lr = config.get("lr");
  const std::size_t ns = vsgd::state_count(a);
  std::vector<std::uint16_t> whole(n), sharded;
  for (std::size_t i = 0; i < n; i++) whole[i] = static_cast<std::uint16_t>(0x3f80 + 3 * i);
  sharded = whole;
  std::vector<std::vector<std::uint16_t>> ws(ns, std::vector<std::uint16_t>(n)), ss = ws;
  for (std::uint64_t t = 1; t <= 4; t++) {
    std::vector<std::uint16_t> g(n);
    for (std::size_t i = 0; i < n; i++) g[i] = static_cast<std::uint16_t>(0x3d00 + 7 * i + t);
    std::vector<std::uint16_t*> wp;
    for (auto& s : ws) wp.push_back(s.data());
    CHECK(vsgd::step_bf16_sr(config, t, lr, whole.data(), g.data(), n, wp.data(), ns, 99) ==
          vsgd::StepOutcome::Applied);
    for (std::size_t k = 0; k < 3; k++) {
      std::vector<std::uint16_t*> sp;
      for (auto& s : ss) sp.push_back(s.data() + cuts[k]);
      vsgd::step_bf16_sr(config, t, lr, sharded.data() + cuts[k], g.data() + cuts[k],
                         cuts[k + 1] - cuts[k], sp.data(), ns, 99, cuts[k], vsgd::Policy::Skip,
                         vsgd::Finite::Yes);
    }
    CHECK(whole == sharded && ws == ss);
  }
  std::vector<float> st(n * ns);
  std::vector<float*> sp;
  for (std::size_t j = 0; j < ns; j++) sp.push_back(st.data() + j * n);
  std::vector<std::uint16_t> p(n, 0x3f80), g(n, 0x3f00);  // bf16 1.0 and 0.5
  // lr 0.1: Adam's default 1e-3 is below half a bfloat16 ulp of 1.0 (the update rounds away).
  CHECK(vsgd::step_bf16(config, 1, 0.1, p.data(), g.data(), n, sp.data(), ns) ==
        vsgd::StepOutcome::Applied);
  CHECK(p[0] != 0x3f80 && vsgd::all_finite_bf16(g.data(), n));
  std::fill(st.begin(), st.end(), 0.0f);
  std::vector<std::uint16_t> h(n, 0x3c00), hg(n, 0x3800);  // binary16 1.0 and 0.5
  CHECK(vsgd::step_f16(config, 1, 0.1, h.data(), hg.data(), n, sp.data(), ns) ==
        vsgd::StepOutcome::Applied);
  CHECK(h[0] != 0x3c00 && vsgd::all_finite_f16(hg.data(), n));
  hg[4] = 0x7e00;  // NaN
  CHECK(!vsgd::all_finite_f16(hg.data(), n));
  expect_error(VSGD_RESULT_NULL_PARAMETER, "vsgd_step_bf16", [&] {
    (void)vsgd::step_bf16(config, 1, lr, nullptr, g.data(), n, sp.data(), ns);
  });
  test_mixed_handle(a);
}

int main(int argc, char** argv) {
  CHECK(argc == 3);
  test_cuda();
  test_config();
  test_schedules();
  test_optimizer();
  test_multi_step();
  test_threads_same_bits<float>();
  test_threads_same_bits<double>();
  test_all_finite();
  for (vsgd::Algorithm a : kAlgorithms) {
    test_sharded<float>(a);
    test_sharded<double>(a);
    test_mixed(a);
  }
  const std::size_t resumed = test_checkpoints(argv[2]);
  std::ifstream f(argv[1]);
  CHECK(f.good());
  word(f, "vsgd-ffi-fixture");
  word(f, "2");
  std::size_t ncases = 0, values = 0;
  f >> ncases;
  for (std::size_t i = 0; i < ncases; i++) {
    Case c = parse(f);
    for (Mode mode : {Mode::Handle, Mode::HandleOneThread, Mode::Stateless, Mode::Sharded})
      values += run<float>(c, mode) + run<double>(c, mode);
  }
  CHECK(ncases > 0 && values > 0);
  std::printf("cpp_wrapper: %d checks; %zu cases through vsgd::Optimizer (default and one "
              "thread), vsgd::step and sharded vsgd::step, %zu values bit-identical to Rust; "
              "%zu resumed runs bit-identical to uninterrupted ones\n",
              checks, ncases, values, resumed);
  return 0;
}
