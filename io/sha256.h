// SHA-256 digests (OpenSSL EVP) as lowercase hex: config hashes and teacher-weight checksums.
#pragma once
#include <cstddef>
#include <string>

namespace mokd {

// SHA-256 of n bytes at data, as 64 lowercase hex digits.
std::string sha256_hex(const void* data, size_t n);
inline std::string sha256_hex(const std::string& s) { return sha256_hex(s.data(), s.size()); }
// SHA-256 of a file's bytes, read in chunks (files of any size). Throws mokd::Error naming the
// file when it cannot be opened or read.
std::string sha256_file(const std::string& path);

}  // namespace mokd
