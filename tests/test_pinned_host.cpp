// Pinned host memory (engine/pinned_host.h): the block bookkeeping with a fake source and fake
// fences on the CPU (reuse only after a block's uploads have finished, the wait or the heap when
// nothing more can be pinned, the cache limit, concurrent use), the loader writing its batches
// into recycled blocks, and on a GPU the direct upload against the staged one.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "engine/pinned_host.h"
#include "io/loader.h"
#include "tests/cuda_test_util.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

// Heap memory standing in for page-locked memory; refuses once `limit` blocks are out.
class FakeSource final : public PinnedMemorySource {
 public:
  explicit FakeSource(int64_t limit = 1 << 20) : limit_(limit) {}
  ~FakeSource() override { EXPECT_EQ(live_.size(), 0u) << "blocks the allocator never returned"; }
  void* allocate(size_t nbytes) override {
    if (static_cast<int64_t>(live_.size()) >= limit_) return nullptr;
    void* p = std::aligned_alloc(64, (nbytes + 63) / 64 * 64);
    live_.insert(p);
    ++allocations;
    return p;
  }
  void deallocate(void* p) override {
    EXPECT_EQ(live_.erase(p), 1u) << "a block returned twice or never handed out";
    std::free(p);
    ++frees;
  }
  int64_t allocations = 0, frees = 0;

 private:
  int64_t limit_;
  std::set<void*> live_;
};

// An upload that finishes when the test says so (or when waited for).
class FakeFence final : public HostFence {
 public:
  bool done() noexcept override { return finished; }
  void wait() noexcept override {
    ++waits;
    finished = true;
  }
  std::atomic<bool> finished{false};  // set by the test while loader workers poll it
  std::atomic<int> waits{0};
};

TEST(PinnedHost, AFreedBlockIsReusedOnlyOnceItsUploadsHaveFinished) {
  FakeSource src;
  {
    PinnedHostAllocator a(src);
    void* p = a.allocate(1000);
    ASSERT_NE(p, nullptr);
    EXPECT_TRUE(a.is_pinned(p, 1000));
    a.deallocate(p, 1000);
    EXPECT_FALSE(a.is_pinned(p, 1000)) << "a free block is not an upload source";
    EXPECT_EQ(a.allocate(900), p) << "an idle free block that fits is reused";

    auto fence = std::make_shared<FakeFence>();
    a.add_fence(p, fence);
    a.deallocate(p, 900);
    void* q = a.allocate(1000);
    EXPECT_NE(q, p) << "a block whose upload is still queued must not be handed out";
    EXPECT_EQ(fence->waits, 0) << "the source could pin more: no need to wait";
    fence->finished = true;
    void* r = a.allocate(1000);
    EXPECT_EQ(r, p) << "its upload finished: the block is reused";
    EXPECT_EQ(src.allocations, 2);
    const PinnedHostAllocator::Stats s = a.stats();
    EXPECT_EQ(s.pinned_blocks, 2);
    EXPECT_EQ(s.reuses, 2);
    EXPECT_EQ(s.fence_waits, 0);
    EXPECT_EQ(a.bytes_in_use(), size_t(2000));
    a.deallocate(q, 1000);
    a.deallocate(r, 1000);
    EXPECT_EQ(a.bytes_in_use(), size_t(0));
  }
  EXPECT_EQ(src.frees, 2) << "the allocator returns its blocks when destroyed";
}

TEST(PinnedHost, TheSmallestIdleBlockThatFitsIsTaken) {
  FakeSource src;
  PinnedHostAllocator a(src);
  void* big = a.allocate(4096);
  void* small = a.allocate(1024);
  a.deallocate(big, 4096);
  a.deallocate(small, 1024);
  EXPECT_EQ(a.allocate(1000), small);
  EXPECT_EQ(a.allocate(1000), big) << "the only free block left fits";
  void* c = a.allocate(5000);
  EXPECT_NE(c, big);
  EXPECT_NE(c, small);
  a.deallocate(small, 1000);
  a.deallocate(big, 1000);
  a.deallocate(c, 5000);
}

TEST(PinnedHost, WhenNothingMoreCanBePinnedItWaitsForABusyBlockOrUsesTheHeap) {
  FakeSource src(/*limit=*/1);
  PinnedHostAllocator a(src);
  void* p = a.allocate(256);
  auto fence = std::make_shared<FakeFence>();
  a.add_fence(p, fence);
  a.deallocate(p, 256);
  EXPECT_EQ(a.allocate(256), p) << "the source refuses: the busy block is waited for";
  EXPECT_EQ(fence->waits, 1);
  EXPECT_EQ(a.stats().fence_waits, 1);

  // No free block at all: heap memory, usable but not pinned.
  void* h = a.allocate(512);
  ASSERT_NE(h, nullptr);
  std::memset(h, 7, 512);
  EXPECT_FALSE(a.is_pinned(h, 512));
  EXPECT_EQ(a.stats().heap_fallbacks, 1);
  EXPECT_EQ(a.stats().pinned_blocks, 1);
  a.deallocate(h, 512);
  a.deallocate(p, 256);
  EXPECT_EQ(a.bytes_in_use(), size_t(0));
}

TEST(PinnedHost, IsPinnedCoversExactlyTheBlocksInUse) {
  FakeSource src;
  PinnedHostAllocator a(src);
  char* p = static_cast<char*>(a.allocate(1000));
  EXPECT_TRUE(a.is_pinned(p, 1000));
  EXPECT_TRUE(a.is_pinned(p + 10, 990));
  EXPECT_FALSE(a.is_pinned(p + 10, 991)) << "past the block's end";
  EXPECT_FALSE(a.is_pinned(p - 1, 1));
  int on_stack = 0;
  EXPECT_FALSE(a.is_pinned(&on_stack, sizeof on_stack));
  test::expect_error([&] { a.add_fence(&on_stack, std::make_shared<FakeFence>()); },
                     {"does not hold"});
  a.deallocate(p, 1000);
}

TEST(PinnedHost, IdleFreeBlocksBeyondTheCacheLimitGoBackToTheSource) {
  FakeSource src;
  PinnedHostAllocator a(src, /*max_cached_bytes=*/2500);
  std::vector<void*> ps;
  for (int i = 0; i < 4; ++i) ps.push_back(a.allocate(1000));
  auto fence = std::make_shared<FakeFence>();
  a.add_fence(ps[3], fence);
  for (void* p : ps) a.deallocate(p, 1000);
  // 4000 free bytes over a limit of 2500: two idle blocks go, the busy one may not.
  EXPECT_EQ(src.frees, 2);
  EXPECT_EQ(a.stats().pinned_blocks, 2);
  void* next = a.allocate(1000);
  EXPECT_TRUE(a.is_pinned(next, 1000)) << "a cached block serves the next batch";
  EXPECT_EQ(src.allocations, 4);
  a.deallocate(next, 1000);
}

TEST(PinnedHost, ConcurrentUsersNeverShareABlock) {
  FakeSource src(/*limit=*/6);
  PinnedHostAllocator a(src);
  constexpr int kThreads = 4, kRounds = 400;
  std::vector<std::thread> threads;
  std::atomic<int> corrupt{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 gen(static_cast<unsigned>(t));
      for (int i = 0; i < kRounds; ++i) {
        const size_t n = 64 + gen() % 2048;
        auto* p = static_cast<uint8_t*>(a.allocate(n));
        std::memset(p, t + 1, n);
        auto fence = std::make_shared<FakeFence>();
        fence->finished = gen() % 2 == 0;
        if (a.is_pinned(p, n)) a.add_fence(p, fence);
        std::this_thread::yield();
        for (size_t k = 0; k < n; ++k) corrupt += p[k] != t + 1;
        a.deallocate(p, n);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(corrupt.load(), 0) << "two threads wrote one block";
  EXPECT_EQ(a.bytes_in_use(), size_t(0));
  EXPECT_LE(a.stats().pinned_blocks, 6);
}

// Pixels 0..255 in a pattern, four classes.
data::InMemoryDataset pattern_dataset(int64_t n) {
  const int64_t h = 12, w = 10, c = 3;
  std::vector<uint8_t> pix(static_cast<size_t>(n * h * w * c));
  for (size_t k = 0; k < pix.size(); ++k) pix[k] = static_cast<uint8_t>((k * 31 + 5) % 256);
  std::vector<int64_t> labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) labels[static_cast<size_t>(i)] = i % 4;
  return data::InMemoryDataset(h, w, c, {"a", "b", "c", "d"}, pix, labels);
}

data::LoaderOptions pattern_options() {
  data::LoaderOptions o;
  o.batch_size = 8;
  o.seed = 11;
  o.num_workers = 2;
  o.prefetch = 3;
  o.transform.train = true;
  o.transform.augment.hflip = true;
  o.normalize = {{0.5f, 0.4f, 0.3f}, {0.2f, 0.3f, 0.25f}};
  o.random_erasing = true;
  o.erasing.probability = 0.5;
  o.mixup.mixup_alpha = 0.8;
  o.mixup.cutmix_alpha = 1.0;
  return o;
}

std::vector<uint8_t> bytes_of(const Tensor& t) {
  const auto* p = static_cast<const uint8_t*>(t.raw_data());
  return {p, p + t.nbytes()};
}

// Swaps the process's pinned allocator for a test's own while it lives.
struct ScopedPinnedAllocator {
  explicit ScopedPinnedAllocator(PinnedHostAllocator* a) : saved(pinned_host_allocator()) {
    register_pinned_host_allocator(a);
  }
  ~ScopedPinnedAllocator() { register_pinned_host_allocator(saved); }
  PinnedHostAllocator* saved;
};

TEST(PinnedHost, ALoaderWritesItsBatchesIntoRecycledPinnedBlocks) {
  const data::InMemoryDataset ds = pattern_dataset(83);
  FakeSource src;
  PinnedHostAllocator pinned(src);
  ScopedPinnedAllocator scope(&pinned);
  data::LoaderOptions plain = pattern_options(), pin = pattern_options();
  pin.device = Device::cuda();  // only chooses the host allocator: nothing runs on a GPU here
  pin.pin_memory = true;
  data::Loader a(ds, plain), b(ds, pin);
  int64_t batches = 0;
  std::shared_ptr<FakeFence> queued;
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    a.start_epoch(epoch);
    b.start_epoch(epoch);
    data::Batch x, y;
    while (a.next(x)) {
      ASSERT_TRUE(b.next(y));
      ++batches;
      EXPECT_FALSE(pinned.is_pinned(x.pixels.raw_data(), x.pixels.nbytes()));
      EXPECT_TRUE(pinned.is_pinned(y.pixels.raw_data(), y.pixels.nbytes()));
      EXPECT_EQ(bytes_of(x.pixels), bytes_of(y.pixels))
          << "epoch " << epoch << " batch " << x.index;
      EXPECT_EQ(x.labels.to_vector(), y.labels.to_vector());
      const Tensor ix = x.images(), iy = y.images();
      EXPECT_EQ(std::memcmp(ix.data<float>(), iy.data<float>(), ix.nbytes()), 0);
      // An upload of the batch, queued when the batch is dropped and finished one batch later.
      if (queued) queued->finished = true;
      queued = std::make_shared<FakeFence>();
      pinned.add_fence(y.pixels.raw_data(), queued);
    }
    EXPECT_FALSE(b.next(y));
  }
  EXPECT_EQ(batches, 33);  // 11 a epoch, the last one short
  // Blocks alive at once: the prefetched batches, one per worker being built, the consumer's and
  // the one whose upload is still queued.
  const PinnedHostAllocator::Stats s = pinned.stats();
  EXPECT_LE(s.source_allocations, pin.prefetch + pin.num_workers + 4);
  EXPECT_GE(s.reuses, batches - s.source_allocations);
  EXPECT_EQ(s.heap_fallbacks, 0);
  // Without a GPU as the destination, or with pin_memory off, nothing is pinned.
  EXPECT_EQ(&host_staging_allocator(Device::cpu(), true), &cpu_allocator());
  EXPECT_EQ(&host_staging_allocator(Device::cuda(), false), &cpu_allocator());
  EXPECT_EQ(&host_staging_allocator(Device::cuda(), true), &pinned);
}

// A source that fails outright (as an allocation that throws would).
class FailingSource final : public PinnedMemorySource {
 public:
  void* allocate(size_t) override { MOKD_FAIL("test source: cannot allocate"); }
  void deallocate(void*) override {}
};

TEST(PinnedHost, ABatchWhoseBufferCannotBeAllocatedFailsAtNext) {
  const data::InMemoryDataset ds = pattern_dataset(40);
  FailingSource src;
  PinnedHostAllocator pinned(src);
  ScopedPinnedAllocator scope(&pinned);
  for (int workers : {0, 2}) {
    data::LoaderOptions o = pattern_options();
    o.device = Device::cuda();
    o.pin_memory = true;
    o.num_workers = workers;
    data::Loader loader(ds, o);
    data::Batch b;
    // The worker threads live on; the consumer sees the error at the batch, every time.
    test::expect_error([&] { loader.next(b); }, {"cannot allocate"});
    test::expect_error([&] { loader.next(b); }, {"cannot allocate"});
  }
}

TEST(CudaPinnedHost, APinnedBatchUploadsAsAStagedOneDoes) {
  SKIP_WITHOUT_CUDA();
  ASSERT_NE(pinned_host_allocator(), nullptr) << "the CUDA backend registers one at start-up";
  const data::InMemoryDataset ds = pattern_dataset(83);
  data::LoaderOptions plain = pattern_options(), pin = pattern_options();
  plain.device = pin.device = Device::cuda();
  pin.pin_memory = true;
  data::Loader a(ds, plain), b(ds, pin);
  const PinnedHostAllocator::Stats before = pinned_host_allocator()->stats();
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    a.start_epoch(epoch);
    b.start_epoch(epoch);
    data::Batch x, y;
    while (a.next(x)) {
      ASSERT_TRUE(b.next(y));
      EXPECT_TRUE(pinned_host_allocator()->is_pinned(y.pixels.raw_data(), y.pixels.nbytes()));
      const Tensor gx = x.images(Device::cuda()), gy = y.images(Device::cuda());
      y = data::Batch();  // dropped while its upload may still be queued
      EXPECT_EQ(gx.to(Device::cpu()).to_vector(), gy.to(Device::cpu()).to_vector())
          << "epoch " << epoch << " batch " << x.index;
    }
  }
  const PinnedHostAllocator::Stats after = pinned_host_allocator()->stats();
  EXPECT_GT(after.reuses, before.reuses) << "blocks are recycled across batches";
  EXPECT_LE(after.source_allocations - before.source_allocations,
            pin.prefetch + pin.num_workers + 4);
}

}  // namespace
}  // namespace mokd
