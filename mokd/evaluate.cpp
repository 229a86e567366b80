#include "mokd/evaluate.h"

#include <cstring>

#include "engine/ops.h"
#include "io/loader.h"
#include "mokd/setup.h"

namespace mokd {

EvalResult evaluate(Model& model, const data::Dataset& ds, const TrainConfig& cfg, Device dev,
                    dist::Communicator* comm) {
  NoGrad ng;
  bool was_training = model.is_training();
  model.eval();
  const int world = comm ? comm->world() : 1, rank = comm ? comm->rank() : 0;
  std::unique_ptr<data::Dataset> share;
  if (world > 1) {
    const int64_t n = ds.size(), begin = n * rank / world, end = n * (rank + 1) / world;
    share = dataset_slice(ds, begin, end - begin);
  }
  const data::Dataset& mine = share ? *share : ds;
  EvalResult r;
  double loss_sum = 0;
  int64_t c1 = 0, c5 = 0;
  data::Batch b;
  std::unique_ptr<data::Loader> loader;
  if (mine.size() > 0) {
    loader = std::make_unique<data::Loader>(mine, loader_options(cfg, mine, false, 0));
    loader->start_epoch(0);
  }
  while (loader && loader->next(b)) {
    Tensor logits = model.forward(b.images(dev));
    int64_t n = b.labels.numel();
    loss_sum += cross_entropy(logits, b.labels.to(dev), 0.f).item() * n;
    auto lv = logits.to_vector();
    auto yv = b.labels.to_vector_i64();
    int64_t classes = logits.size(1);
    for (int64_t i = 0; i < n; ++i) {
      // Checked here too: the device's own label check may be deferred (a training run's).
      MOKD_CHECK(yv[i] >= 0 && yv[i] < classes, "evaluate: label ", yv[i], " of ", ds.location(),
                 " is outside [0, ", classes, ")");
      const float* row = lv.data() + i * classes;
      float target = row[yv[i]];
      // Classes ranked above the true one: higher scores, and equal scores at a lower index (ties
      // break by index, as argmax does: bf16 logits tie more often, and a tie is not a hit).
      int64_t above = 0;
      for (int64_t c = 0; c < classes; ++c)
        above += row[c] > target || (row[c] == target && c < yv[i]);
      c1 += above < 1;
      c5 += above < 5;
    }
    r.count += n;
  }
  model.train(was_training);
  if (world > 1) {
    c1 = comm->sum_i64(c1);
    c5 = comm->sum_i64(c5);
    r.count = comm->sum_i64(r.count);
    std::string bytes(sizeof(double), '\0');
    std::memcpy(bytes.data(), &loss_sum, sizeof(double));
    loss_sum = 0;
    for (const std::string& part : comm->all_gather(bytes)) {
      double v = 0;
      std::memcpy(&v, part.data(), sizeof(double));
      loss_sum += v;
    }
  }
  MOKD_CHECK(r.count > 0, "evaluate: the evaluation set is empty");
  r.top1 = 100.0 * c1 / r.count;
  r.top5 = 100.0 * c5 / r.count;
  r.loss = loss_sum / r.count;
  return r;
}

}  // namespace mokd
