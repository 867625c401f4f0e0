// Changing the suppression list from outside the daemon.
//
// The queue's database has one writer, the daemon. While it runs, the CLI
// hands a change over as a request file in DATA_DIR/suppression.requests/
// (written whole, then renamed into place); the daemon's main loop applies
// each request and leaves the answer beside it (NAME.done), which the CLI
// prints. When the daemon is stopped the CLI opens the queue and applies
// the same request itself. One format, one code path (ApplyRequest):
//   add,ADDRESS[,SCOPE,CATEGORY,REASON,SOURCE,ADDED,EXPIRES]   (CSV fields)
//   remove,ADDRESS[,SCOPE]
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "mta/bounce/suppression.h"

namespace peregrine::bounce {

// The folder requests go to, under a data directory.
std::string RequestDir(absl::string_view data_dir);

// Applies every line of `request`; the answer says what was done, line by
// line for what was refused ("line 3: \"x\" is not an address ..."), and
// ends with "added N, removed N, refused N". Refused lines change nothing;
// the others are applied.
std::string ApplyRequest(SuppressionList& list, absl::string_view request,
                         absl::Time now);

// The daemon side: every request waiting in `dir`, applied and answered.
// Requests larger than 64 MiB are answered with an error unread.
void ServeRequests(const std::string& dir, SuppressionList& list);

// The CLI side: hands `request` to the running daemon and waits up to
// `timeout` for its answer.
absl::StatusOr<std::string> SubmitRequest(const std::string& dir,
                                          absl::string_view request,
                                          absl::Duration timeout);

}  // namespace peregrine::bounce
