#include "mmap_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "macserve/core/error.h"

namespace macserve::models {
namespace {

// Closes the descriptor on every path out of open(); the mapping does not need it.
struct FdGuard {
  int fd;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  FdGuard fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (fd.fd < 0) {
    const int err = errno;
    throw_error(err == ENOENT ? ErrorCode::kNotFound : ErrorCode::kInvalidModel,
                "{}: cannot open: {}", path, std::strerror(err));
  }
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0 || !S_ISREG(st.st_mode))
    throw_error(ErrorCode::kInvalidModel, "{}: not a regular file", path);
  std::shared_ptr<MappedFile> file(new MappedFile());
  file->path_ = path;
  file->size_ = static_cast<std::size_t>(st.st_size);
  if (file->size_ == 0) return file;  // mmap rejects length 0; an empty file has no bytes to view
  // MAP_PRIVATE with write access: weights are read-only in practice, but a consumer that
  // transforms a zero-copy view in place gets private copy-on-write pages instead of a SIGSEGV,
  // and the file on disk is never modified.
  void* p = ::mmap(nullptr, file->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd.fd, 0);
  if (p == MAP_FAILED)
    throw_error(ErrorCode::kInvalidModel, "{}: mmap of {} bytes failed: {}", path, file->size_,
                std::strerror(errno));
  file->data_ = static_cast<uint8_t*>(p);
  return file;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(data_, size_);
}

}  // namespace macserve::models
