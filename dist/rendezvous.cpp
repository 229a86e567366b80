// The TCP rendezvous of dist/rendezvous.h on POSIX sockets. Every socket is non-blocking and
// every wait is a poll() bounded by the deadline, so no call can block past timeout_s (except a
// name look-up, which getaddrinfo bounds itself). Wire format, integers big-endian:
//
//   hello   peer -> rank 0   "MOKDRDV1", u32 rank, u32 world, u32 nonce length, nonce
//   answer  rank 0 -> peer   'B', u32 length, blob        the rendezvous succeeded
//                            'R', u32 length, reason      this peer was refused
//                            'G', u32 length, rank 0's error: it gave up waiting for the others
#include "dist/rendezvous.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "engine/error.h"

namespace mokd::dist {

namespace {

using Clock = std::chrono::steady_clock;

constexpr char kMagic[8] = {'M', 'O', 'K', 'D', 'R', 'D', 'V', '1'};
constexpr char kBlob = 'B', kRefused = 'R', kGaveUp = 'G';
// A peer sends its hello right after connecting: one that stays silent longer is not a mokd rank
// and must not hold up the others queued behind it.
constexpr double kHelloSeconds = 5;
// One connection attempt to one address: an unreachable address must leave time for the others.
constexpr double kConnectAttemptSeconds = 2;
constexpr const char* kConnectTimedOut = "connecting timed out";

std::string errno_str(int e) {
  char buf[256];
  return strerror_r(e, buf, sizeof buf);  // the GNU form returns the message
}

// A socket closed when it goes out of scope.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// A point in time; timeout_s <= 0 means none.
class Deadline {
 public:
  explicit Deadline(double seconds) : unlimited_(!(seconds > 0)) {
    if (!unlimited_)
      end_ = Clock::now() +
             std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  }
  // This deadline or `seconds` from now, whichever comes first.
  Deadline capped(double seconds) const {
    Deadline d(seconds);
    if (!unlimited_ && end_ < d.end_) d.end_ = end_;
    return d;
  }
  bool passed() const { return !unlimited_ && Clock::now() >= end_; }
  // A poll() timeout: what is left, at most a second (the callers loop).
  int poll_ms() const {
    if (unlimited_) return 1000;
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(end_ - Clock::now()).count();
    return static_cast<int>(std::clamp<int64_t>(left, 0, 1000));
  }

 private:
  bool unlimited_;
  Clock::time_point end_{};
};

// Waits until fd is ready for `events` (or has an error the next call reports); false once the
// deadline passes.
bool wait_ready(int fd, short events, const Deadline& d) {
  for (;;) {  // polls at least once, also past the deadline
    pollfd p{fd, events, 0};
    const int rc = ::poll(&p, 1, d.poll_ms());
    if (rc > 0 || (rc < 0 && errno != EINTR)) return true;  // the read or write reports an error
    if (d.passed()) return false;
  }
}

// The I/O helpers return "" on success, else what went wrong (the callers add who and where).
std::string read_exact(int fd, void* buf, size_t n, const Deadline& d) {
  char* p = static_cast<char*>(buf);
  while (n > 0) {
    const ssize_t got = ::recv(fd, p, n, 0);
    if (got > 0) {
      p += got;
      n -= static_cast<size_t>(got);
    } else if (got == 0) {
      return "the connection was closed";
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_ready(fd, POLLIN, d)) return "timed out";
    } else if (errno != EINTR) {
      return "recv: " + errno_str(errno);
    }
  }
  return "";
}

std::string write_all(int fd, const std::string& bytes, const Deadline& d) {
  const char* p = bytes.data();
  size_t n = bytes.size();
  while (n > 0) {
    const ssize_t put = ::send(fd, p, n, MSG_NOSIGNAL);  // a closed peer is an error, not SIGPIPE
    if (put >= 0) {
      p += put;
      n -= static_cast<size_t>(put);
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_ready(fd, POLLOUT, d)) return "timed out";
    } else if (errno != EINTR) {
      return "send: " + errno_str(errno);
    }
  }
  return "";
}

void put_u32(std::string& s, uint32_t v) {
  const uint32_t be = htonl(v);
  s.append(reinterpret_cast<const char*>(&be), 4);
}

uint32_t get_u32(const char* p) {
  uint32_t be;
  std::memcpy(&be, p, 4);
  return ntohl(be);
}

// A u32 length and that many bytes, refusing a length above `limit`.
std::string read_frame(int fd, size_t limit, const Deadline& d, std::string& out) {
  char len[4];
  if (std::string e = read_exact(fd, len, 4, d); !e.empty()) return e;
  const uint32_t n = get_u32(len);
  if (n > limit)
    return detail::concat("a length of ", n, " bytes (more than ", limit,
                          "): not a mokd rendezvous message");
  out.resize(n);
  return read_exact(fd, out.data(), n, d);
}

std::string answer(char kind, const std::string& payload) {
  std::string s(1, kind);
  put_u32(s, static_cast<uint32_t>(payload.size()));
  return s + payload;
}

// "host:port", with brackets around an IPv6 address.
std::string host_port(const std::string& host, int port) {
  const bool v6 = host.find(':') != std::string::npos;
  return detail::concat(v6 ? "[" : "", host, v6 ? "]" : "", ":", port);
}

std::string peer_address(const sockaddr_storage& ss, socklen_t len) {
  char host[NI_MAXHOST], serv[NI_MAXSERV];
  if (::getnameinfo(reinterpret_cast<const sockaddr*>(&ss), len, host, sizeof host, serv,
                    sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return "an unknown address";
  std::string h = host;
  if (h.rfind("::ffff:", 0) == 0) h = h.substr(7);  // an IPv4 peer on the dual-stack socket
  return host_port(h, std::atoi(serv));
}

// True when the peer behind fd has closed its end (or the socket failed).
bool peer_gone(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  char c;
  const ssize_t got = ::recv(fd, &c, 1, MSG_PEEK);
  return got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

std::string who(const Launch& l) {
  return detail::concat("dist rendezvous: rank ", l.rank, " of ", l.world);
}

// "ranks 2, 5 and 7" (at most 16 named).
std::string rank_list(const std::vector<int>& ranks) {
  std::string s = ranks.size() == 1 ? "rank " : "ranks ";
  const size_t shown = std::min<size_t>(ranks.size(), 16);
  for (size_t i = 0; i < shown; ++i) {
    if (i > 0) s += i + 1 == ranks.size() ? " and " : ", ";
    s += std::to_string(ranks[i]);
  }
  if (shown < ranks.size()) s += detail::concat(" and ", ranks.size() - shown, " more");
  return s;
}

// ---- rank 0 ----

// A socket listening on `port` on every interface: IPv6 accepting IPv4 too, or IPv4 alone where
// the host has no IPv6.
Fd listen_on(const Launch& l, int backlog) {
  std::string err;
  for (int family : {AF_INET6, AF_INET}) {
    Fd fd(::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) {
      err = "socket: " + errno_str(errno);
      continue;
    }
    const int one = 1, zero = 0;
    // A port left in TIME_WAIT by the previous run may be bound again at once.
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc;
    if (family == AF_INET6) {
      ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
      sockaddr_in6 a{};
      a.sin6_family = AF_INET6;
      a.sin6_addr = in6addr_any;
      a.sin6_port = htons(static_cast<uint16_t>(l.master_port));
      rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
    } else {
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_ANY);
      a.sin_port = htons(static_cast<uint16_t>(l.master_port));
      rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
    }
    if (rc != 0) {
      const int e = errno;
      err = "bind: " + errno_str(e);
      // The port itself is unusable: IPv4 would fail the same way.
      if (e == EADDRINUSE || e == EACCES) break;
      continue;
    }
    if (::listen(fd.get(), backlog) != 0) {
      err = "listen: " + errno_str(errno);
      continue;
    }
    return fd;
  }
  MOKD_FAIL(who(l), " cannot listen on port ", l.master_port, " (MASTER_PORT): ", err,
            "; another job on this host may hold it: choose another MASTER_PORT");
}

std::string rank0_broadcast(const Launch& l, const std::string& nonce, const std::string& blob,
                            double timeout_s) {
  const Deadline deadline(timeout_s);
  Fd server = listen_on(l, std::max(l.world, SOMAXCONN));
  std::vector<Fd> peers(l.world);
  std::vector<std::string> addr(l.world);
  std::vector<std::string> refused;  // "rank 2 from 10.0.0.5:4711 (why)"
  int arrived = 0;

  while (arrived < l.world - 1) {
    if (!wait_ready(server.get(), POLLIN, deadline)) {
      std::vector<int> here, missing;
      for (int r = 1; r < l.world; ++r) (peers[r] ? here : missing).push_back(r);
      std::string msg =
          detail::concat(who(l), ", listening on port ", l.master_port, ", waited ", timeout_s,
                         " s: ", arrived, " of ", l.world - 1, " peers connected");
      if (!here.empty()) msg += " (" + rank_list(here) + ")";
      msg += "; missing " + rank_list(missing);
      if (!refused.empty()) {
        msg += "; refused";
        for (size_t i = 0; i < refused.size(); ++i) msg += (i ? ", " : " ") + refused[i];
      }
      msg += detail::concat(
          ". Every rank must be started with the same MASTER_ADDR, MASTER_PORT and world size "
          "(dist.timeout_s = ",
          timeout_s, ")");
      // The peers that did come learn why rank 0 gave up instead of seeing a closed connection.
      for (int r : here) (void)write_all(peers[r].get(), answer(kGaveUp, msg), Deadline(0.1));
      MOKD_FAIL(msg);
    }
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    Fd c(::accept4(server.get(), reinterpret_cast<sockaddr*>(&ss), &len,
                   SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!c) {
      const int e = errno;
      // Nothing queued after all, or a connection that died in the queue: keep waiting.
      if (e == EINTR || e == EAGAIN || e == EWOULDBLOCK || e == ECONNABORTED || e == EPROTO)
        continue;
      MOKD_FAIL(who(l), ": accept on port ", l.master_port, ": ", errno_str(e));
    }
    const std::string from = peer_address(ss, len);

    const Deadline hello_deadline = deadline.capped(kHelloSeconds);
    char head[sizeof kMagic + 8];
    std::string err = read_exact(c.get(), head, sizeof head, hello_deadline);
    if (!err.empty()) {
      refused.push_back(detail::concat("a connection from ", from, " (", err, " before a hello)"));
      continue;
    }
    if (std::memcmp(head, kMagic, sizeof kMagic) != 0) {
      refused.push_back(detail::concat("a connection from ", from, " (not a mokd rank)"));
      (void)write_all(c.get(), answer(kRefused, "not a mokd rendezvous hello"), hello_deadline);
      continue;
    }
    const uint32_t rank = get_u32(head + sizeof kMagic);
    const uint32_t world = get_u32(head + sizeof kMagic + 4);
    std::string their_nonce;
    err = read_frame(c.get(), kRendezvousMaxNonce, hello_deadline, their_nonce);
    if (!err.empty()) {
      refused.push_back(detail::concat("rank ", rank, " from ", from, " (", err, ")"));
      continue;
    }

    std::string why;   // sent to the peer, which raises it
    std::string note;  // kept for this rank's own error
    if (world != static_cast<uint32_t>(l.world)) {
      why = detail::concat("rank 0 runs a world of ", l.world, ", this rank was started with ",
                           world);
      note = detail::concat("world ", world);
    } else if (rank < 1 || rank >= world) {
      why = detail::concat("rank ", rank, " is not a peer rank of a world of ", l.world);
      note = "a bad rank";
    } else if (their_nonce != nonce) {
      why = detail::concat("the job listening on port ", l.master_port,
                           " is another job (their nonces differ): is another run using this "
                           "MASTER_PORT?");
      note = "another job";
    } else if (peers[rank] && !peer_gone(peers[rank].get())) {
      why = detail::concat("rank ", rank, " is already connected from ", addr[rank],
                           ": two processes were started as rank ", rank);
      note = "a second rank " + std::to_string(rank);
    }
    if (!why.empty()) {
      refused.push_back(detail::concat("rank ", rank, " from ", from, " (", note, ")"));
      (void)write_all(c.get(), answer(kRefused, why), hello_deadline);  // best effort
      continue;
    }
    if (!peers[rank]) ++arrived;  // else a reconnection replacing a closed one
    peers[rank] = std::move(c);
    addr[rank] = from;
  }

  const std::string message = answer(kBlob, blob);
  for (int r = 1; r < l.world; ++r) {
    const std::string err = write_all(peers[r].get(), message, deadline);
    MOKD_CHECK(err.empty(), who(l), ": sending to rank ", r, " at ", addr[r], " failed: ", err);
  }
  return blob;
}

// ---- the other ranks ----

// One attempt to connect to every address of host:port in turn; "" and `out` on success.
std::string try_connect(const std::string& host, int port, const Deadline& deadline, Fd& out) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (rc != 0)
    return std::string("cannot resolve the host: ") +
           (rc == EAI_SYSTEM ? errno_str(errno) : ::gai_strerror(rc));
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> hold(res, ::freeaddrinfo);
  std::string err = "no address";
  for (addrinfo* a = res; a; a = a->ai_next) {
    Fd fd(::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol));
    if (!fd) {
      err = "socket: " + errno_str(errno);
      continue;
    }
    if (::connect(fd.get(), a->ai_addr, a->ai_addrlen) != 0) {
      // A non-blocking connect completes in the background, also after EINTR.
      if (errno != EINPROGRESS && errno != EINTR) {
        err = errno_str(errno);
        continue;
      }
      if (!wait_ready(fd.get(), POLLOUT, deadline.capped(kConnectAttemptSeconds))) {
        err = kConnectTimedOut;
        continue;
      }
      int so_error = 0;
      socklen_t len = sizeof so_error;
      ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &so_error, &len);
      if (so_error != 0) {
        err = errno_str(so_error);
        continue;
      }
    }
    out = std::move(fd);
    return "";
  }
  return err;
}

std::string peer_broadcast(const Launch& l, const std::string& nonce, double timeout_s) {
  const Deadline deadline(timeout_s);
  const std::string where = host_port(l.master_addr, l.master_port);
  Fd fd;
  // Rank 0 may not listen yet: retry, backing off from 20 ms to half a second.
  auto pause = std::chrono::milliseconds(20);
  std::string why;  // the last failure, preferring one more telling than an attempt cut short
  for (;;) {
    const std::string err = try_connect(l.master_addr, l.master_port, deadline, fd);
    if (err.empty()) break;
    if (why.empty() || err != kConnectTimedOut) why = err;
    if (deadline.passed())
      MOKD_FAIL(who(l), " could not connect to rank 0 at ", where,
                " (MASTER_ADDR:MASTER_PORT) within ", timeout_s, " s: ", why,
                ". Is rank 0 running, and do all ranks have the same MASTER_ADDR and MASTER_PORT?");
    std::this_thread::sleep_for(
        std::min<Clock::duration>(pause, std::chrono::milliseconds(deadline.poll_ms())));
    pause = std::min(pause * 2, std::chrono::milliseconds(500));
  }

  std::string hello(kMagic, sizeof kMagic);
  put_u32(hello, static_cast<uint32_t>(l.rank));
  put_u32(hello, static_cast<uint32_t>(l.world));
  put_u32(hello, static_cast<uint32_t>(nonce.size()));
  hello += nonce;
  std::string err = write_all(fd.get(), hello, deadline);
  MOKD_CHECK(err.empty(), who(l), ": sending the hello to rank 0 at ", where, " failed: ", err);

  char kind = 0;
  err = read_exact(fd.get(), &kind, 1, deadline);
  if (err == "timed out")
    MOKD_FAIL(who(l), " is connected to rank 0 at ", where, ", which did not answer within ",
              timeout_s, " s: not every rank has joined (rank 0's error names the missing ones)");
  MOKD_CHECK(err.empty(), who(l), ": rank 0 at ", where, " did not answer (", err,
             "): it has failed or given up (see its error)");
  MOKD_CHECK(kind == kBlob || kind == kRefused || kind == kGaveUp, who(l), ": the process at ",
             where, " is not a mokd rendezvous (it answered byte ", static_cast<int>(kind), ")");
  std::string payload;
  err = read_frame(fd.get(), kRendezvousMaxBlob, deadline, payload);
  MOKD_CHECK(err.empty(), who(l), ": reading rank 0's answer from ", where, " failed: ", err);
  MOKD_CHECK(kind != kRefused, who(l), ": rank 0 at ", where, " refused this rank: ", payload);
  MOKD_CHECK(kind != kGaveUp, who(l), ": rank 0 at ", where, " gave up: ", payload);
  return payload;
}

}  // namespace

std::string rendezvous_broadcast(const Launch& launch, const std::string& nonce,
                                 const std::string& blob_on_rank0, double timeout_s) {
  const Launch& l = launch;
  MOKD_CHECK(l.world >= 1 && l.rank >= 0 && l.rank < l.world, "dist rendezvous: rank ", l.rank,
             " is outside a world of ", l.world);
  MOKD_CHECK(!std::isnan(timeout_s), "dist rendezvous: the timeout is NaN");
  if (l.world == 1) return blob_on_rank0;
  MOKD_CHECK(l.master_port >= 1 && l.master_port <= 65535, who(l),
             ": MASTER_PORT (dist.master_port) ", l.master_port,
             " is not a TCP port in [1, 65535]");
  MOKD_CHECK(nonce.size() <= kRendezvousMaxNonce, who(l), ": a nonce of ", nonce.size(),
             " bytes (at most ", kRendezvousMaxNonce, ")");
  if (l.rank == 0) {
    MOKD_CHECK(blob_on_rank0.size() <= kRendezvousMaxBlob, who(l), ": a blob of ",
               blob_on_rank0.size(), " bytes (at most ", kRendezvousMaxBlob, ")");
    return rank0_broadcast(l, nonce, blob_on_rank0, timeout_s);
  }
  MOKD_CHECK(!l.master_addr.empty(), who(l),
             ": MASTER_ADDR (dist.master_addr) is empty: the ranks above 0 need rank 0's host");
  return peer_broadcast(l, nonce, timeout_s);
}

}  // namespace mokd::dist
