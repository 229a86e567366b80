// Index files of datasets made of many files (ImageFolder's listing, tar shards' offsets): a text
// file beside the data, or under the user's cache folder when the data folder cannot be written,
// reused while the data is unchanged. An index is a speed-up only: one that cannot be read is
// rebuilt, one that cannot be written is skipped; neither is ever an error.
//
// File layout: the first line is the kind's magic ("mokd image-folder index 1"), the last line is
// "end <crc32 of every byte before it, 8 hex digits>", so a truncated or damaged file is noticed
// and rebuilt rather than trusted.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace mokd::data::index_cache {

// Modification time of path in nanoseconds (stat, following links), or -1 when it cannot be
// stat'ed; *size receives the size when given.
int64_t mtime_ns(const std::string& path, int64_t* size = nullptr);

// Wall-clock time in nanoseconds, the clock file times are taken from.
int64_t now_ns();

// The modification time an index may record for something stat'ed at `checked_at`: the time
// itself once it is a few seconds old, else -1 ("unconfirmed": a change made within the same
// clock tick could leave the time unchanged, so the entry is checked again at the next open).
int64_t settled(int64_t mtime, int64_t checked_at);

// The user's cache folder: $XDG_CACHE_HOME/mokd, else $HOME/.cache/mokd; "" when neither is set.
std::string user_cache_dir();

// <user_cache_dir()>/<prefix>-<16 hex digits of SHA-256 of key>.idx; "" without a cache folder.
std::string user_cache_path(const std::string& prefix, const std::string& key);

enum class ReadStatus { kOk, kMissing, kInvalid };

// Reads an index file written by write(). kOk: *body holds the lines between the magic line and
// the end line. kInvalid: the file exists but is not a whole, undamaged index of this kind; *why
// says what is wrong.
ReadStatus read(const std::string& path, const std::string& magic, std::string* body,
                std::string* why);

// Writes magic, body (lines, each ending in '\n') and the end line to path atomically: a
// temporary file in the same folder, then rename. Creates the folder when create_dir. Returns
// false, with *why, when the file cannot be written; never throws.
bool write(const std::string& path, const std::string& magic, const std::string& body,
           bool create_dir, std::string* why);

// Stores an index: at `beside` (next to the data), else at `fallback` (under the user's cache
// folder; "" for none). Returns the path written, or "" and *why when neither could be.
std::string store(const std::string& beside, const std::string& fallback, const std::string& magic,
                  const std::string& body, std::string* why);

// Cuts the next line (without its '\n') from text at *pos; false at the end of text.
bool next_line(std::string_view text, size_t* pos, std::string_view* line);

// Parses a whole decimal integer (optionally negative); false on anything else.
bool parse_i64(std::string_view s, int64_t* v);

}  // namespace mokd::data::index_cache
