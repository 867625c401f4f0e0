// Privilege separation: a daemon started as root binds its listeners
// (ports under 1024), makes or checks its data directory, and then runs
// as `server.user` / `server.group` for good (setgroups, setgid, setuid;
// it checks that root cannot be taken back).
//
// Pure system calls, no state; the daemon calls them in order from its
// main thread at start (glibc applies set*id to every thread).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace peregrine {

struct RunAs {
  std::string user;
  std::string group;
  uid_t uid = 0;
  gid_t gid = 0;
};

// The user and group by name (group "": the user's own). NotFound names
// the missing one and how to make it.
absl::StatusOr<RunAs> LookupRunAs(const std::string& user,
                                  const std::string& group);

// As root: `dir` made (0750) and given to `who` when missing, else checked
// to belong to `who` (an error with the chown to run) and not to be
// writable by others. `where` names the setting in errors.
absl::Status PrepareDataDirFor(const std::string& dir, const RunAs& who,
                               absl::string_view where);

// setgroups({gid}), setgid, setuid; then FailedPrecondition if setuid(0)
// still works.
absl::Status DropTo(const RunAs& who);

// Sentences for private key files that every user may read, or the group
// change ("chmod 600 FILE"); none for a file that cannot be stat()ed.
std::vector<std::string> KeyFileWarnings(
    const std::vector<std::pair<std::string, std::string>>& files);

}  // namespace peregrine
