// SHA-256 through OpenSSL's EVP digest interface (the low-level SHA256_* calls are deprecated).
#include "io/sha256.h"

#include <openssl/evp.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "engine/error.h"

namespace mokd {
namespace {

struct CtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using Ctx = std::unique_ptr<EVP_MD_CTX, CtxFree>;

Ctx new_ctx() {
  Ctx ctx(EVP_MD_CTX_new());
  MOKD_CHECK(ctx && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1,
             "sha256: OpenSSL could not initialise a SHA-256 digest");
  return ctx;
}

std::string finish(EVP_MD_CTX* ctx) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  MOKD_CHECK(EVP_DigestFinal_ex(ctx, md, &len) == 1 && len == 32, "sha256: digest failed");
  static const char* hex = "0123456789abcdef";
  std::string out(2 * len, '0');
  for (unsigned i = 0; i < len; ++i) {
    out[2 * i] = hex[md[i] >> 4];
    out[2 * i + 1] = hex[md[i] & 15];
  }
  return out;
}

}  // namespace

std::string sha256_hex(const void* data, size_t n) {
  Ctx ctx = new_ctx();
  MOKD_CHECK(EVP_DigestUpdate(ctx.get(), data, n) == 1, "sha256: digest update failed");
  return finish(ctx.get());
}

std::string sha256_file(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  MOKD_CHECK(f, "sha256: cannot open '", path, "': ", std::strerror(errno));
  Ctx ctx = new_ctx();
  std::vector<unsigned char> buf(1 << 20);  // 1 MiB chunks: teacher weights can be large
  for (;;) {
    size_t got = std::fread(buf.data(), 1, buf.size(), f.get());
    if (got > 0)
      MOKD_CHECK(EVP_DigestUpdate(ctx.get(), buf.data(), got) == 1, "sha256: digest update failed");
    if (got < buf.size()) {
      MOKD_CHECK(!std::ferror(f.get()), "sha256: read error in '", path, "'");
      break;
    }
  }
  return finish(ctx.get());
}

}  // namespace mokd
