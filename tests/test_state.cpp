// Checkpoint state of the training components (io/state.h): composing under prefixes, and each
// component's state() / load_state() round trip (FAMO, loader position, EMA, distiller). Also the
// usage example of mokd/distill.h, compiled and run here so that the header cannot drift from
// the class.
#include <cstring>

#include "engine/ops.h"
#include "io/loader.h"
#include "io/state.h"
#include "models/registry.h"
#include "mokd/distill.h"
#include "mokd/ema.h"
#include "mokd/famo.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

bool same_bits(const Tensor& a, const Tensor& b) {
  Tensor x = a.contiguous().to(Device::cpu()), y = b.contiguous().to(Device::cpu());
  return x.shape() == y.shape() && x.dtype() == y.dtype() &&
         std::memcmp(x.raw_data(), y.raw_data(), x.nbytes()) == 0;
}

// A copy of a state whose tensors do not alias the component's (as if read back from a file).
io::State detached(const io::State& s) {
  io::State out = s;
  for (auto& [k, v] : out.tensors) v = v.clone();
  return out;
}

TEST(DistillerExample, HeaderUsageCompilesAndSteps) {
  ModelOverrides o;
  auto student_model = create_model("vit_fmnist_micro_distilled", o);
  auto teacher_model = create_model("resnet_fmnist_small", o);
  Model& student = *student_model;
  Model& teacher = *teacher_model;
  DistillConfig cfg;
  Tensor images = test::randn({8, 28, 28, 1}, 5);
  Tensor labels = Tensor::from_vector_i64({0, 1, 2, 3, 4, 5, 6, 7}, {8});
  // The usage example in the header comment of mokd/distill.h, verbatim:
  Distiller d(student, teacher, cfg);  // builds the projector (and FAMO)
  nn::NamedTensors params = student.named_parameters();
  for (auto& p : d.projector_parameters()) params.push_back(p);
  AdamW opt(decay_groups(params, 1e-3f, 0.05f));  // the optimizer holds both
  StepStats s = d.step(opt, images, labels);      // one full step; soft targets optional
  // (end of the example)
  EXPECT_EQ(s.names, d.objective_names());
  EXPECT_EQ(d.steps(), 1);
  EXPECT_EQ(opt.step_count(), 1);
}

TEST(State, AddAndPartUsePrefixesAndRefuseDuplicates) {
  io::State a;
  a.tensors["w"] = Tensor::scalar(1.f);
  a.counters["step"] = 4;
  io::State s;
  s.add("famo", a);
  s.add("", a);
  EXPECT_TRUE(s.tensors.count("famo.w"));
  EXPECT_EQ(s.counters.at("famo_step"), 4);
  EXPECT_EQ(s.counters.at("step"), 4);
  io::State back = s.part("famo");
  EXPECT_EQ(back.tensors.size(), 1u);
  EXPECT_EQ(back.counter("step", "test"), 4);
  test::expect_error([&] { s.add("famo", a); }, {"famo.w", "twice"});
  test::expect_error([&] { back.tensor("m", "famo"); }, {"famo", "no tensor m"});
  test::expect_error([&] { back.tensor("w", Shape{3}, "famo"); }, {"famo", "w", "[3]"});
}

TEST(State, FamoRoundTripContinuesIdentically) {
  auto losses = [](float a, float b) {
    return std::vector<Tensor>{Tensor::scalar(a), Tensor::scalar(b)};
  };
  Famo f({"a", "b"});
  for (int i = 0; i < 3; ++i) {
    f.weighted_loss(losses(2.f + i, 1.f));
    f.update(losses(1.5f + i, 0.9f));
  }
  io::State st = detached(f.state());
  EXPECT_EQ(st.counter("step", "test"), 3);
  Famo g({"a", "b"});
  g.load_state(st);
  EXPECT_TRUE(same_bits(f.weights(), g.weights()));
  for (Famo* x : {&f, &g}) {
    x->weighted_loss(losses(3.f, 2.f));
    x->update(losses(2.f, 2.5f));
  }
  EXPECT_TRUE(same_bits(f.weights(), g.weights()));
  io::State missing = st;
  missing.tensors.erase("m");
  test::expect_error([&] { g.load_state(missing); }, {"famo", "m"});
}

class TinyDataset final : public data::Dataset {
 public:
  int64_t size() const override { return 10; }
  int64_t height() const override { return 4; }
  int64_t width() const override { return 4; }
  int64_t channels() const override { return 1; }
  int64_t num_classes() const override { return 3; }
  const std::vector<std::string>& class_names() const override { return names_; }
  std::string location() const override { return "tiny"; }
  std::string source(int64_t i) const override { return "tiny[" + std::to_string(i) + "]"; }
  void fetch(int64_t i, data::RawSample* out) const override {
    out->bytes.resize(16);
    for (int k = 0; k < 16; ++k) out->bytes[k] = static_cast<uint8_t>(i * 16 + k);
    out->encoded = false;
    out->height = out->width = 4;
    out->channels = 1;
    out->label = i % 3;
  }

 private:
  std::vector<std::string> names_{"a", "b", "c"};
};

TEST(State, LoaderPositionResumesTheSameBatches) {
  TinyDataset ds;
  data::LoaderOptions o;
  o.batch_size = 3;
  o.shuffle = true;
  o.seed = 7;
  o.num_workers = 0;
  data::Loader a(ds, o), b(ds, o);
  EXPECT_EQ(a.state().counter("epoch", "test"), 0);  // before any start_epoch: the beginning
  a.start_epoch(1);
  data::Batch x, y;
  ASSERT_TRUE(a.next(x));
  ASSERT_TRUE(a.next(x));
  io::State st = a.state();
  EXPECT_EQ(st.counter("epoch", "test"), 1);
  EXPECT_EQ(st.counter("batch_in_epoch", "test"), 2);
  b.load_state(st);
  ASSERT_TRUE(a.next(x));
  ASSERT_TRUE(b.next(y));
  EXPECT_EQ(x.index, y.index);
  EXPECT_TRUE(same_bits(x.images(), y.images()));
  EXPECT_TRUE(same_bits(x.labels, y.labels));
  ASSERT_TRUE(a.next(x));
  EXPECT_FALSE(a.next(x));  // 4 batches of 10 images
  EXPECT_EQ(a.state().counter("batch_in_epoch", "test"), 4);
}

TEST(State, EmaAveragesParametersAndRestoresThem) {
  ModelOverrides o;
  auto m = create_model("resnet_fmnist_small", o);
  Ema ema(*m, 0.5f);
  auto params = m->named_parameters();
  Tensor w0 = params[0].second.detach().clone();
  {
    NoGrad ng;
    Tensor p = params[0].second;
    p.copy_(add_scalar(w0, 1.f));
  }
  ema.update();
  Tensor want = add_scalar(w0, 0.5f);
  ema.with_averages([&] {
    test::expect_close(params[0].second.detach(), want, 1e-6, 1e-7, "averaged parameter");
    return 0;
  });
  test::expect_close(params[0].second.detach(), add_scalar(w0, 1.f), 0, 0,
                     "trained parameter restored");
  io::State st = detached(ema.state());
  EXPECT_EQ(st.tensors.size(), params.size());
  test::expect_close(st.tensor(params[0].first, "test"), want, 1e-6, 1e-7, "saved average");
  Ema other(*m, 0.5f);
  other.load_state(st);
  EXPECT_TRUE(
      same_bits(other.state().tensor(params[0].first, "test"), st.tensor(params[0].first, "test")));
}

TEST(State, DistillerRoundTripRestoresProjectorFamoAndSteps) {
  ModelOverrides o;
  auto student = create_model("vit_fmnist_micro_distilled", o);
  auto teacher = create_model("resnet_fmnist_small", o);
  DistillConfig cfg;
  Distiller d(*student, *teacher, cfg);
  nn::NamedTensors params = student->named_parameters();
  for (auto& p : d.projector_parameters()) params.push_back(p);
  AdamW opt(decay_groups(params, 1e-3f, 0.05f));
  Tensor x = test::randn({4, 28, 28, 1}, 9);
  Tensor y = Tensor::from_vector_i64({0, 1, 2, 3}, {4});
  d.step(opt, x, y);
  io::State st = detached(d.state());
  EXPECT_TRUE(st.tensors.count("projector.weight"));
  EXPECT_TRUE(st.tensors.count("famo.w"));
  EXPECT_EQ(st.counter("famo_step", "test"), 1);
  EXPECT_EQ(st.counter("distill_steps", "test"), 1);
  cfg.seed = 5;  // a different projector initialisation, overwritten by the load
  Distiller e(*student, *teacher, cfg);
  e.load_state(st);
  EXPECT_EQ(e.steps(), 1);
  EXPECT_TRUE(
      same_bits(e.state().tensors.at("projector.weight"), st.tensors.at("projector.weight")));
  EXPECT_TRUE(same_bits(e.famo()->weights(), d.famo()->weights()));
}

}  // namespace
}  // namespace mokd
