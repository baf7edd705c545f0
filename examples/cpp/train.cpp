// Logistic regression trained with VSGD through the C++17 wrapper (vsgd.hpp).
//
// Build against an installed vsgd (scripts/install.sh PREFIX), either way:
//   PKG_CONFIG_PATH=PREFIX/lib/pkgconfig make && ./train
//   cmake -S . -B build -DCMAKE_PREFIX_PATH=PREFIX && cmake --build build && build/train
//
// The weights (a vector of kD) and the bias (a scalar) are two tensors of one vsgd::Optimizer
// (freed by its destructor), with a cosine learning-rate schedule; vsgd::Config and
// vsgd::Schedule are handles set by name and freed by their destructors too. Errors arrive as
// vsgd::Error (code + message). Exits 1 unless it learned: final loss below half the initial
// one, accuracy >= 90%.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include <vsgd.hpp>

namespace {

constexpr int kN = 1024, kD = 8, kBatch = 64, kEpochs = 40;

struct Data {
  std::vector<std::vector<double>> x;
  std::vector<double> y;
};

Data make_data() {
  const double true_w[kD] = {1.5, -2.0, 0.7, 0.0, 3.0, -0.5, 1.0, -1.2};
  std::uint64_t s = 42;
  auto uniform = [&s] {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<double>(s >> 40) / static_cast<double>(1ull << 24) * 2.0 - 1.0;
  };
  Data d;
  for (int i = 0; i < kN; i++) {
    std::vector<double> x(kD);
    double z = 0.3;
    for (int j = 0; j < kD; j++) z += true_w[j] * (x[j] = uniform());
    d.y.push_back((z > 0) != (uniform() > 0.9) ? 1.0 : 0.0);
    d.x.push_back(x);
  }
  return d;
}

double sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }

double predict(const std::vector<double>& w, double b, const std::vector<double>& x) {
  double z = b;
  for (int j = 0; j < kD; j++) z += w[j] * x[j];
  return sigmoid(z);
}

void evaluate(const Data& d, const std::vector<double>& w, double b, double& loss, double& acc) {
  loss = 0;
  int right = 0;
  for (int i = 0; i < kN; i++) {
    const double p = predict(w, b, d.x[i]);
    loss -= d.y[i] > 0.5 ? std::log(p + 1e-12) : std::log(1 - p + 1e-12);
    right += (p > 0.5) == (d.y[i] > 0.5);
  }
  loss /= kN;
  acc = static_cast<double>(right) / kN;
}

}  // namespace

int main() try {
  vsgd::check_abi();
  const Data data = make_data();

  vsgd::Config config(vsgd::Algorithm::Vsgd);
  config.set("lr", 0.1).set("ghattg", 30);
  config.validate();  // (vsgd::Optimizer validates too; this names a bad field earlier)
  vsgd::Optimizer opt(config);
  // Tiny tensors: step them on this thread (0, the default, uses every core; the results
  // are the same bits either way).
  opt.set_threads(1);
  const std::size_t tw = opt.add_tensor({kD}, vsgd::DType::F64, "w");
  const std::size_t tb = opt.add_tensor({}, vsgd::DType::F64, "b");  // a scalar
  opt.set_schedule(0, vsgd::Schedule::cosine(kEpochs * (kN / kBatch), 0.01));

  std::vector<double> w(kD, 0.0), b(1, 0.0), gw(kD), gb(1);
  double loss0, acc0, loss, acc;
  evaluate(data, w, b[0], loss0, acc0);
  for (int epoch = 0; epoch < kEpochs; epoch++) {
    // Halfway, resume from a checkpoint (as a restarted job would): same bits as going on.
    // The checkpoint holds configuration, schedule, shapes and state; the thread count is
    // the process's own choice, set again.
    if (epoch == kEpochs / 2) {
      opt = vsgd::Optimizer::load(opt.save());
      opt.set_threads(1);
    }
    for (int start = 0; start < kN; start += kBatch) {
      gw.assign(kD, 0.0);
      gb[0] = 0;
      for (int i = start; i < start + kBatch; i++) {
        const double e = (predict(w, b[0], data.x[i]) - data.y[i]) / kBatch;
        for (int j = 0; j < kD; j++) gw[j] += e * data.x[i][j];
        gb[0] += e;
      }
      opt.step_tensor(tw, w, gw);
      opt.step_tensor(tb, b, gb);
    }
    if (epoch % 10 == 9) {
      evaluate(data, w, b[0], loss, acc);
      std::printf("epoch %2d: loss %.4f, accuracy %.3f, lr %.4g\n", epoch + 1, loss, acc,
                  opt.lr_at(0, opt.step_count(tw) + 1));
    }
  }
  evaluate(data, w, b[0], loss, acc);
  const auto beta = opt.effective_momentum<double>(tw);
  const vsgd::Schedule schedule = opt.schedule(0);
  std::printf("vsgd %s: %llu steps (cosine over %.0f), loss %.4f -> %.4f, accuracy %.3f -> "
              "%.3f, effective momentum of w[0] %.3f\n",
              vsgd::version().c_str(), static_cast<unsigned long long>(opt.step_count(tw)),
              schedule.get("total"), loss0, loss, acc0, acc, beta[0]);
  return loss < 0.5 * loss0 && acc >= 0.9 ? 0 : 1;
} catch (const vsgd::Error& e) {
  std::fprintf(stderr, "vsgd error %s: %s\n", e.code_name(), e.what());
  return 1;
}
