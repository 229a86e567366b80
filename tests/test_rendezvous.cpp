// The TCP rendezvous (dist/rendezvous.h): ranks as threads of this process on 127.0.0.1 and a port
// that was free a moment before. Every rank receives rank 0's blob whatever the start order; a
// peer of another job, a missing peer and a missing rank 0 each end in an error that names the
// rank, the address and the counts, within the timeout instead of a hang.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "dist/connect.h"
#include "dist/nccl_info.h"
#include "dist/rendezvous.h"
#include "engine/error.h"

namespace mokd::dist {
namespace {

// A port nothing listens on right now: bind port 0 and ask which one the kernel gave.
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

Launch rank_of(int rank, int world, int port) {
  Launch l;
  l.rank = rank;
  l.world = world;
  l.launcher = "torchrun";
  l.master_addr = "127.0.0.1";
  l.master_port = port;
  return l;
}

struct Job {
  Launch launch;
  std::string nonce = "job-1";
  std::string blob;  // rank 0's
  double timeout_s = 1.5;
  double delay_s = 0;  // before this rank starts
};

struct Outcome {
  std::string value, error;
  double seconds = 0;  // from the start of this rank's call to its return
};

// Runs every job on its own thread and waits for all of them.
std::vector<Outcome> run_ranks(const std::vector<Job>& jobs) {
  std::vector<Outcome> out(jobs.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < jobs.size(); ++i) {
    threads.emplace_back([&jobs, &out, i] {
      const Job& j = jobs[i];
      std::this_thread::sleep_for(std::chrono::duration<double>(j.delay_s));
      const auto t0 = std::chrono::steady_clock::now();
      try {
        out[i].value = rendezvous_broadcast(j.launch, j.nonce, j.blob, j.timeout_s);
      } catch (const Error& e) {
        out[i].error = e.what();
      }
      out[i].seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    });
  }
  for (auto& t : threads) t.join();
  return out;
}

void expect_has(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "'" << text << "' lacks '" << part << "'";
}

// 128 bytes with zeros and every high bit, like an ncclUniqueId.
std::string id_like_blob() {
  std::string b(128, '\0');
  for (int i = 0; i < 128; ++i) b[i] = static_cast<char>((i * 37 + 11) % 256);
  b[5] = '\0';
  return b;
}

TEST(Rendezvous, ThreeRanksReceiveRank0sBlob) {
  const int port = free_port();
  const std::string blob = id_like_blob();
  std::vector<Job> jobs(3);
  for (int r = 0; r < 3; ++r) jobs[r].launch = rank_of(r, 3, port);
  jobs[0].blob = blob;
  jobs[1].blob = "ignored on rank 1";
  const auto out = run_ranks(jobs);
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(out[r].error, "") << "rank " << r;
    EXPECT_EQ(out[r].value, blob) << "rank " << r;
  }
}

TEST(Rendezvous, PeerStartedBeforeRank0Retries) {
  const int port = free_port();
  std::vector<Job> jobs(2);
  jobs[0].launch = rank_of(0, 2, port);
  jobs[0].blob = "the id";
  jobs[0].delay_s = 0.3;  // rank 1 finds nothing listening at first
  jobs[1].launch = rank_of(1, 2, port);
  const auto out = run_ranks(jobs);
  EXPECT_EQ(out[0].error, "");
  EXPECT_EQ(out[1].error, "");
  EXPECT_EQ(out[1].value, "the id");
  EXPECT_GT(out[1].seconds, 0.2);  // it did wait for rank 0
}

TEST(Rendezvous, PeerOfAnotherJobIsRefused) {
  const int port = free_port();
  std::vector<Job> jobs(2);
  jobs[0].launch = rank_of(0, 2, port);
  jobs[0].nonce = "job-a";
  jobs[0].blob = "a's id";
  jobs[0].timeout_s = 0.5;
  jobs[1].launch = rank_of(1, 2, port);
  jobs[1].nonce = "job-b";
  jobs[1].timeout_s = 0.5;
  const auto out = run_ranks(jobs);
  // The stranger learns at once why; rank 0 keeps waiting for its own rank 1, then names both.
  expect_has(out[1].error, "dist rendezvous: rank 1 of 2: rank 0 at 127.0.0.1:" +
                               std::to_string(port) + " refused this rank");
  expect_has(out[1].error, "another job");
  EXPECT_LT(out[1].seconds, 0.4);
  expect_has(out[0].error, "rank 0 of 2, listening on port " + std::to_string(port));
  expect_has(out[0].error, "0 of 1 peers connected; missing rank 1");
  expect_has(out[0].error, "refused rank 1 from 127.0.0.1:");
  expect_has(out[0].error, "(another job)");
  EXPECT_EQ(out[0].value, "");
}

TEST(Rendezvous, MissingPeerTimesOut) {
  const int port = free_port();
  const std::string at = "127.0.0.1:" + std::to_string(port);
  std::vector<Job> jobs(2);  // rank 2 of 3 never starts
  jobs[0].launch = rank_of(0, 3, port);
  jobs[0].blob = "id";
  jobs[0].timeout_s = 0.5;
  jobs[1].launch = rank_of(1, 3, port);
  jobs[1].timeout_s = 1.5;
  auto out = run_ranks(jobs);
  const std::string summary = "rank 0 of 3, listening on port " + std::to_string(port) +
                              ", waited 0.5 s: 1 of 2 peers connected (rank 1); missing rank 2";
  expect_has(out[0].error, summary);
  // Rank 1 hears rank 0's reason as soon as rank 0 gives up.
  expect_has(out[1].error, "rank 1 of 3: rank 0 at " + at + " gave up: ");
  expect_has(out[1].error, summary);
  for (const Outcome& o : out) {
    EXPECT_GT(o.seconds, 0.45);
    EXPECT_LT(o.seconds, 1.2);
  }

  // A peer whose own timeout comes first names rank 0's address and its wait.
  jobs[0].timeout_s = 0.6;
  jobs[1].timeout_s = 0.3;
  out = run_ranks(jobs);
  expect_has(out[1].error,
             "rank 1 of 3 is connected to rank 0 at " + at + ", which did not answer within 0.3 s");
  expect_has(out[0].error, "1 of 2 peers connected (rank 1); missing rank 2");
}

TEST(Rendezvous, MissingRank0TimesOutNamingTheAddress) {
  const int port = free_port();
  std::vector<Job> jobs(1);
  jobs[0].launch = rank_of(2, 3, port);
  jobs[0].timeout_s = 0.3;
  const auto out = run_ranks(jobs);
  expect_has(out[0].error, "rank 2 of 3 could not connect to rank 0 at 127.0.0.1:" +
                               std::to_string(port) + " (MASTER_ADDR:MASTER_PORT) within 0.3 s");
  expect_has(out[0].error, "Connection refused");
  EXPECT_LT(out[0].seconds, 1.0);
}

TEST(Rendezvous, WorldMismatchIsRefused) {
  const int port = free_port();
  std::vector<Job> jobs(2);
  jobs[0].launch = rank_of(0, 2, port);
  jobs[0].timeout_s = 0.3;
  jobs[1].launch = rank_of(1, 3, port);
  jobs[1].timeout_s = 0.3;
  const auto out = run_ranks(jobs);
  expect_has(out[1].error,
             "refused this rank: rank 0 runs a world of 2, this rank was started "
             "with 3");
  expect_has(out[0].error, "refused rank 1 from 127.0.0.1:");
  expect_has(out[0].error, "(world 3)");
}

TEST(Rendezvous, StrayConnectionDoesNotStopTheJob) {
  const int port = free_port();
  std::vector<Job> jobs(2);
  jobs[0].launch = rank_of(0, 2, port);
  jobs[0].blob = "id";
  jobs[1].launch = rank_of(1, 2, port);
  jobs[1].delay_s = 0.3;
  // Something that is not a mokd rank connects first and sends a length prefix of 4 GiB.
  std::thread stray([port] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
      const char hello[] = "MOKDRDV1\0\0\0\1\0\0\0\2\xff\xff\xff\xff";
      (void)::send(fd, hello, sizeof hello - 1, MSG_NOSIGNAL);
      char c;
      (void)::recv(fd, &c, 1, 0);  // until rank 0 drops it
    }
    ::close(fd);
  });
  const auto out = run_ranks(jobs);
  stray.join();
  EXPECT_EQ(out[0].error, "");
  EXPECT_EQ(out[1].error, "");
  EXPECT_EQ(out[1].value, "id");
}

TEST(Rendezvous, BadLaunchIsRefusedBeforeTheNetwork) {
  EXPECT_EQ(rendezvous_broadcast(rank_of(0, 1, 0), "n", "alone", 0.1), "alone");
  try {
    rendezvous_broadcast(rank_of(1, 2, 0), "n", "", 0.1);
    ADD_FAILURE() << "port 0 accepted";
  } catch (const Error& e) {
    expect_has(e.what(), "MASTER_PORT (dist.master_port) 0 is not a TCP port");
  }
  Launch l = rank_of(1, 2, 29500);
  l.master_addr.clear();
  try {
    rendezvous_broadcast(l, "n", "", 0.1);
    ADD_FAILURE() << "an empty MASTER_ADDR accepted";
  } catch (const Error& e) {
    expect_has(e.what(), "rank 1 of 2: MASTER_ADDR (dist.master_addr) is empty");
  }
}

// The version the run records: NCCL's three numbers, or that this build has no NCCL.
TEST(Rendezvous, NcclVersionString) {
  const std::string v = nccl_version_string();
  if (!built_with_nccl()) {
    EXPECT_EQ(v, "not built");
    return;
  }
  int major = -1, minor = -1, patch = -1;
  char rest = 0;
  EXPECT_EQ(std::sscanf(v.c_str(), "%d.%d.%d%c", &major, &minor, &patch, &rest), 3) << v;
  EXPECT_GE(major, 2) << v;
}

}  // namespace
}  // namespace mokd::dist
