#include "base/files.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace peregrine {
namespace {

std::string UserName(uid_t uid) {
  struct passwd* pw = getpwuid(uid);
  return pw != nullptr ? pw->pw_name : absl::StrCat(uid);
}

}  // namespace

std::string CannotReadReason(const std::string& path, int err) {
  std::string why = std::strerror(err);
  if (err != EACCES) return why;
  struct stat st;
  std::string me = UserName(geteuid());
  if (::stat(path.c_str(), &st) != 0) {
    // The file is there but a directory on the way is closed to us.
    return absl::StrCat(why, " (a directory above it is not searchable by ", me,
                        ": check the modes of its parent directories)");
  }
  struct group* gr = getgrgid(getegid());
  std::string group = gr != nullptr ? gr->gr_name : absl::StrCat(getegid());
  return absl::StrFormat(
      "%s (owner %s, mode %04o; peregrine runs as user %s): run `chown %s "
      "%s` (and keep the mode 0600), or `chgrp %s %s && chmod 0640 %s`",
      why, UserName(st.st_uid), st.st_mode & 07777, me, me, path, group, path,
      path);
}

absl::Status CheckReadable(const std::string& path, const std::string& what) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::close(fd);
    return absl::OkStatus();
  }
  int err = errno;
  std::string message = absl::StrCat(
      what, " ", path, ": cannot read: ", CannotReadReason(path, err));
  if (err == ENOENT) return absl::NotFoundError(message);
  if (err == EACCES) return absl::PermissionDeniedError(message);
  return absl::FailedPreconditionError(message);
}

absl::Status WriteFileAtomically(const std::string& path,
                                 const std::string& text) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat(tmp, ": cannot write: ", strerror(errno)));
  }
  bool ok = ::write(fd, text.data(), text.size()) ==
                static_cast<ssize_t>(text.size()) &&
            ::fsync(fd) == 0;
  int err = errno;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    if (ok) err = errno;
    ::unlink(tmp.c_str());
    return absl::InternalError(
        absl::StrCat(path, ": cannot write: ", strerror(err)));
  }
  return absl::OkStatus();
}

}  // namespace peregrine
