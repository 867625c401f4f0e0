#include "mta/privileges.h"

#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace peregrine {

absl::StatusOr<RunAs> LookupRunAs(const std::string& user,
                                  const std::string& group) {
  RunAs out;
  out.user = user;
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  if (getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &found) != 0 ||
      found == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("no user '", user,
                     "' on this system: make it (useradd --system --home-dir "
                     "/var/lib/peregrine --shell /usr/sbin/nologin ",
                     user, ") or name another"));
  }
  out.uid = pw.pw_uid;
  out.gid = pw.pw_gid;
  if (!group.empty()) {
    struct group gr {};
    struct group* g = nullptr;
    if (getgrnam_r(group.c_str(), &gr, buf.data(), buf.size(), &g) != 0 ||
        g == nullptr) {
      return absl::NotFoundError(absl::StrCat(
          "no group '", group, "' on this system: make it (groupadd --system ",
          group, ") or name another"));
    }
    out.gid = gr.gr_gid;
  }
  struct group gr {};
  struct group* g = nullptr;
  out.group =
      getgrgid_r(out.gid, &gr, buf.data(), buf.size(), &g) == 0 && g != nullptr
          ? gr.gr_name
          : std::to_string(out.gid);
  return out;
}

absl::Status PrepareDataDirFor(const std::string& dir, const RunAs& who,
                               absl::string_view where) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT) {
      return absl::PermissionDeniedError(
          absl::StrCat(where, ": cannot look at data directory '", dir,
                       "': ", strerror(errno)));
    }
    if (::mkdir(dir.c_str(), 0750) != 0 ||
        ::chown(dir.c_str(), who.uid, who.gid) != 0) {
      return absl::PermissionDeniedError(absl::StrCat(
          where, ": cannot make data directory '", dir, "' for ", who.user,
          ": ", strerror(errno), " (does its parent exist?)"));
    }
    return absl::OkStatus();
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(where, ": '", dir, "' is not a directory"));
  }
  if (st.st_uid != who.uid) {
    passwd pw{};
    passwd* owner = nullptr;
    std::vector<char> buf(16384);
    std::string name =
        getpwuid_r(st.st_uid, &pw, buf.data(), buf.size(), &owner) == 0 &&
                owner != nullptr
            ? pw.pw_name
            : std::to_string(st.st_uid);
    return absl::PermissionDeniedError(absl::StrCat(
        where, ": data directory '", dir, "' belongs to ", name,
        ", but Peregrine runs as ", who.user, " (server.user): run chown -R ",
        who.user, ":", who.group, " ", dir));
  }
  if (st.st_mode & S_IWOTH) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "%s: data directory '%s' is writable by everyone (mode %04o): run "
        "chmod o-w %s",
        where, dir, st.st_mode & 07777, dir));
  }
  return absl::OkStatus();
}

absl::Status DropTo(const RunAs& who) {
  gid_t groups[1] = {who.gid};
  if (::setgroups(1, groups) != 0 || ::setgid(who.gid) != 0 ||
      ::setuid(who.uid) != 0) {
    return absl::PermissionDeniedError(absl::StrCat(
        "cannot become ", who.user, ":", who.group, ": ", strerror(errno)));
  }
  if (who.uid != 0 && (::setuid(0) == 0 || ::geteuid() == 0)) {
    return absl::FailedPreconditionError(
        absl::StrCat("became ", who.user,
                     " but could take root back; "
                     "refusing to go on"));
  }
  return absl::OkStatus();
}

std::vector<std::string> KeyFileWarnings(
    const std::vector<std::pair<std::string, std::string>>& files) {
  std::vector<std::string> out;
  for (const auto& [what, path] : files) {
    struct stat st;
    if (path.empty() || ::stat(path.c_str(), &st) != 0) continue;
    // Group-readable is how Kubernetes mounts Secrets for fsGroup, and how
    // root:peregrine 0640 files are shared: only others are warned about.
    if (st.st_mode & (S_IRWXO | S_IWGRP)) {
      out.push_back(absl::StrFormat(
          "%s %s can be read or changed by every user (mode %04o): run "
          "chmod 600 %s (or 640, owned by root and the group peregrine runs "
          "as)",
          what, path, st.st_mode & 07777, path));
    }
  }
  return out;
}

}  // namespace peregrine
