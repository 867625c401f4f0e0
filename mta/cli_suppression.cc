// `peregrine suppression list|export|add|remove|import`: the suppression
// list (mta/bounce/suppression.h) from the command line, beside a running
// daemon (reads from a read-only view, changes through its request folder)
// or on a stopped one's queue.

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "mta/bounce/suppression.h"
#include "mta/bounce/suppression_admin.h"
#include "mta/cli_commands.h"
#include "mta/config.h"
#include "queue/rocksdb_store.h"

namespace peregrine {
namespace {

bool DaemonRunning(const std::string& data_dir) {
  int lock =
      ::open((data_dir + "/peregrine.lock").c_str(), O_RDONLY | O_CLOEXEC);
  bool running = lock >= 0 && ::flock(lock, LOCK_SH | LOCK_NB) != 0 &&
                 errno == EWOULDBLOCK;
  if (lock >= 0) ::close(lock);
  return running;
}

std::string Day(absl::Time t) {
  return t == absl::InfiniteFuture()
             ? std::string("never")
             : absl::FormatTime("%Y-%m-%d", t, absl::UTCTimeZone());
}

std::string Quote(absl::string_view field) {
  // One CSV field of a request line.
  bounce::SuppressionEntry e;
  e.address = std::string(field);
  std::string line = bounce::ToCsv(e);
  return line.substr(0, line.find(','));
}

}  // namespace

int SuppressionCommand(const std::string& what, const SuppressionArgs& a,
                       std::istream& in, std::ostream& out, std::ostream& err) {
  absl::StatusOr<Config> config =
      a.config_path.empty() ? DefaultConfig() : LoadConfigFile(a.config_path);
  if (!config.ok()) {
    err << "peregrine suppression: " << config.status().message() << "\n";
    return 2;
  }
  std::string data_dir = a.data_dir.empty() ? config->data_dir : a.data_dir;
  const bool running = DaemonRunning(data_dir);
  const bool change = what == "add" || what == "remove" || what == "import";

  // What to change, as a request (suppression_admin.h).
  std::string request;
  if (what == "add") {
    if (absl::Status s = bounce::CheckScope(a.scope); !s.ok()) {
      err << "peregrine suppression add: " << s.message() << "\n";
      return 2;
    }
    request = absl::StrCat("add,", Quote(a.address), ",", Quote(a.scope), ",",
                           Quote(a.category), ",", Quote(a.reason), ",cli,,",
                           Quote(a.expires), "\n");
  } else if (what == "remove") {
    request = absl::StrCat("remove,", a.address, ",", a.scope, "\n");
  } else if (what == "import") {
    std::optional<std::string> file = ReadInput(a.file, in);
    if (!file) {
      err << "peregrine suppression import: cannot read " << a.file << "\n";
      return 1;
    }
    std::stringstream text(*file);
    std::string line;
    while (std::getline(text, line)) {
      if (!line.empty()) absl::StrAppend(&request, "add,", line, "\n");
    }
  }

  if (change && running) {
    auto answer = bounce::SubmitRequest(bounce::RequestDir(data_dir), request,
                                        absl::Seconds(30));
    if (!answer.ok()) {
      err << "peregrine suppression " << what << ": "
          << answer.status().message() << "\n";
      return 1;
    }
    out << *answer;
    return answer->find(", refused 0") != std::string::npos ? 0 : 1;
  }

  queue::RocksStoreOptions options;
  options.path = data_dir + "/queue";
  if (!std::filesystem::exists(options.path)) {
    if (!change) {
      err << "(no queue at " << options.path << " yet: the list is empty)\n";
      if (what == "export") out << bounce::CsvHeader() << "\n";
      return 0;
    }
    std::filesystem::create_directories(data_dir);
  }
  options.shards = config->EffectiveShards();
  options.keep_finished = config->queue_keep_finished;
  options.sync = config->queue_fsync;
  // Reading: a view that writes nothing, beside a running daemon too.
  options.read_only = !change;
  auto store = queue::RocksStore::Open(options);
  if (!store.ok()) {
    err << "peregrine suppression " << what << ": " << store.status().message()
        << "\n";
    return 1;
  }
  bounce::SuppressionList list((*store)->SideTable());
  if (change) {
    std::string answer = bounce::ApplyRequest(list, request, absl::Now());
    out << answer;
    return answer.find(", refused 0") != std::string::npos ? 0 : 1;
  }
  if (what == "export") out << bounce::CsvHeader() << "\n";
  size_t count = 0;
  absl::Time now = absl::Now();
  absl::Status s = list.ForEach([&](const bounce::SuppressionEntry& e) {
    if (!a.scope.empty() && e.scope != a.scope) return true;
    if (what == "export") {
      out << bounce::ToCsv(e) << "\n";
    } else {
      out << e.address << "  " << (e.scope.empty() ? "global" : e.scope) << "  "
          << e.category << "  added " << Day(e.added) << "  expires "
          << Day(e.expires) << (e.expires <= now ? " (expired)" : "") << "  "
          << e.source << "  " << e.reason << "\n";
    }
    ++count;
    return true;
  });
  if (!s.ok()) {
    err << "peregrine suppression " << what << ": " << s.message() << "\n";
    return 1;
  }
  if (what == "list") {
    err << count << (count == 1 ? " address" : " addresses")
        << (running ? " (the daemon is running: as of now)" : "") << "\n";
  }
  return 0;
}

}  // namespace peregrine
