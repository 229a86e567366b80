// Evaluation's top-k counting: a class ranks above the label when it scores higher, or equally at
// a lower index (argmax's tie rule). Logits that all tie (a zeroed head) make it observable: only
// label 0 is a top-1 hit and labels 0..4 are top-5 hits; counting ties as hits would give 100 %.
#include <gtest/gtest.h>

#include "io/dataset.h"
#include "models/registry.h"
#include "mokd/config.h"
#include "mokd/evaluate.h"

namespace mokd {
namespace {

TEST(Evaluate, TiedScoresBreakByClassIndexNotInTheLabelsFavour) {
  ModelOverrides o;
  o.seed = 1;
  auto m = create_model("vit_fmnist_micro", o);
  for (auto& [name, p] : m->named_parameters())
    if (name.rfind("head.", 0) == 0) p.fill_(0.0);  // every logit 0: all classes tie
  std::vector<std::string> names;
  std::vector<int64_t> labels;
  for (int c = 0; c < 10; ++c) {
    names.push_back("class" + std::to_string(c));
    labels.push_back(c);
  }
  data::InMemoryDataset ds(28, 28, 1, names, std::vector<uint8_t>(10 * 28 * 28, 100), labels);
  TrainConfig cfg;
  EvalResult r = evaluate(*m, ds, cfg, Device::cpu());
  EXPECT_EQ(r.count, 10);
  EXPECT_DOUBLE_EQ(r.top1, 10.0);
  EXPECT_DOUBLE_EQ(r.top5, 50.0);
}

}  // namespace
}  // namespace mokd
