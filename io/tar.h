// Walking a tar archive's headers without extracting it: each member's name, type, and where its
// data lies in the file, so that a dataset can later pread a member directly. Reads ustar and
// old-style headers, GNU long names (type 'L', and 'K' long link names, skipped) and GNU sparse
// extension blocks (skipped), pax extended headers (type 'x': path and size apply to the next
// member; 'g' global headers are read and ignored). Sizes in base-256 (GNU) are accepted.
//
// Every error names the file and the byte offset of the header concerned: a header whose
// checksum does not match, a malformed number or pax record, a member whose data runs past the
// end of the file, a file that ends without the end-of-archive block.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mokd::data::tar {

struct Member {
  std::string name;           // path in the archive, after GNU long-name / pax path records
  char type = '0';            // the header's typeflag ('0' or '\0' regular file, '5' folder, ...)
  bool sparse = false;        // GNU sparse member: its stored bytes are not its contents
  int64_t header_offset = 0;  // byte offset of its own header block (after any long-name or pax
                              // records that precede it)
  int64_t data_offset = 0;    // byte offset of its data
  int64_t size = 0;           // bytes of data
  // A regular file whose stored bytes are its contents.
  bool regular() const { return (type == '0' || type == '\0' || type == '7') && !sparse; }
};

// Reads the headers of an open tar file (a file descriptor, read with pread only, so other
// threads may pread the same descriptor meanwhile). `path` names it in errors.
class Reader {
 public:
  Reader(int fd, std::string path, int64_t file_size);
  // The next member, false at the end-of-archive block. Throws mokd::Error as described above.
  bool next(Member* m);
  // The first n bytes of a member's data (n <= its size). Throws naming the file and offset when
  // they cannot be read.
  std::string read(const Member& m, int64_t n);

 private:
  // Bytes [offset, offset + n) of the file, through a small read-ahead buffer.
  const uint8_t* at(int64_t offset, int64_t n, const char* what);
  void parse_pax(const std::string& records, int64_t offset, std::string* path, int64_t* size,
                 bool* sparse) const;

  int fd_;
  std::string path_;
  int64_t file_size_;
  int64_t pos_ = 0;  // the next header
  std::vector<uint8_t> buf_;
  int64_t buf_offset_ = 0;
  bool done_ = false;
};

}  // namespace mokd::data::tar
