// Files the daemon must read: an error for one it cannot read that says
// how to fix it.
//
// The daemon usually runs as a service user (deploy/peregrine.service:
// `peregrine`), while keys and the users file are often created by root
// with mode 0600; "Permission denied" alone leaves the operator guessing.
// Thread-safe; no state.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace peregrine {

// OK when this process can open `path` for reading. Otherwise an error
// that starts with `what` and `path`, says why, and for a permission
// problem names the file's owner and mode, the user this process runs as,
// and the exact `chown`/`chmod` to run. A missing file is NotFound (the
// caller decides whether that is fine).
absl::Status CheckReadable(const std::string& path, const std::string& what);

// The same explanation for an errno already seen while opening `path`.
std::string CannotReadReason(const std::string& path, int err);

// Replaces `path` with `text` whole or not at all: written to PATH.tmp
// (mode 0640), synced, renamed over it. InternalError names the file and
// the reason.
absl::Status WriteFileAtomically(const std::string& path,
                                 const std::string& text);

}  // namespace peregrine
