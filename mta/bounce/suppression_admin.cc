#include "mta/bounce/suppression_admin.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "base/log.h"

namespace peregrine::bounce {
namespace {

namespace fs = std::filesystem;
constexpr uintmax_t kMaxRequestBytes = 64ull << 20;

bool WriteWhole(const std::string& path, absl::string_view text) {
  std::string tmp = path + ".part";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return false;
    f.write(text.data(), static_cast<std::streamsize>(text.size()));
    if (!f.good()) return false;
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  return !ec;
}

}  // namespace

std::string RequestDir(absl::string_view data_dir) {
  return absl::StrCat(data_dir, "/suppression.requests");
}

std::string ApplyRequest(SuppressionList& list, absl::string_view request,
                         absl::Time now) {
  std::string out;
  int added = 0, removed = 0, refused = 0, line_no = 0;
  SuppressionEntry defaults;
  defaults.category = "manual";
  defaults.source = "cli";
  defaults.added = now;
  for (absl::string_view line : absl::StrSplit(request, '\n')) {
    ++line_no;
    absl::ConsumeSuffix(&line, "\r");
    if (line.empty()) continue;
    auto refuse = [&](absl::string_view why) {
      ++refused;
      absl::StrAppend(&out, "line ", line_no, ": ", why, "\n");
    };
    if (absl::ConsumePrefix(&line, "add,")) {
      auto entry = ParseCsvLine(line, defaults);
      if (!entry.ok()) {
        refuse(entry.status().message());
      } else if (entry->has_value()) {
        absl::Status s = list.Add(**entry);
        if (s.ok()) {
          ++added;
        } else {
          refuse(s.message());
        }
      }
    } else if (absl::ConsumePrefix(&line, "remove,")) {
      std::vector<std::string> f =
          absl::StrSplit(line, absl::MaxSplits(',', 1));
      std::string scope = f.size() > 1 ? f[1] : "";
      if (absl::Status s = CheckScope(scope); !s.ok()) {
        refuse(s.message());
        continue;
      }
      auto r = list.Remove(f[0], scope);
      if (!r.ok()) {
        refuse(r.status().message());
      } else if (*r) {
        ++removed;
      } else {
        refuse(
            absl::StrCat("<", f[0], "> is not on the list",
                         scope.empty() ? "" : absl::StrCat(" (", scope, ")")));
      }
    } else {
      refuse("expected add,... or remove,...");
    }
  }
  absl::StrAppend(&out, "added ", added, ", removed ", removed, ", refused ",
                  refused, "\n");
  return out;
}

void ServeRequests(const std::string& dir, SuppressionList& list) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    std::string path = e.path().string();
    if (!absl::EndsWith(path, ".req")) continue;
    std::string answer;
    uintmax_t size = fs::file_size(path, ec);
    if (ec || size > kMaxRequestBytes) {
      answer =
          absl::StrCat("error: the request is over ", kMaxRequestBytes >> 20,
                       " MiB; import the file in parts\n");
    } else {
      std::ifstream f(path, std::ios::binary);
      std::stringstream text;
      text << f.rdbuf();
      answer = ApplyRequest(list, text.str(), absl::Now());
    }
    std::string done = path.substr(0, path.size() - 4) + ".done";
    if (!WriteWhole(done, answer)) {
      log::Error("bounce", "suppression request %s: cannot write the answer",
                 path);
    }
    fs::remove(path, ec);
    log::Info("bounce", "suppression list changed by request: %s",
              answer.substr(answer.rfind('\n', answer.size() - 2) + 1,
                            std::string::npos));
  }
}

absl::StatusOr<std::string> SubmitRequest(const std::string& dir,
                                          absl::string_view request,
                                          absl::Duration timeout) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create ", dir, ": ", ec.message()));
  }
  std::string name =
      absl::StrCat(dir, "/", getpid(), "-", absl::ToUnixNanos(absl::Now()));
  if (!WriteWhole(name + ".req", request)) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot write a request in ", dir,
                     " (run as the user peregrine runs as)"));
  }
  absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    std::ifstream f(name + ".done", std::ios::binary);
    if (f) {
      std::stringstream text;
      text << f.rdbuf();
      fs::remove(name + ".done", ec);
      return text.str();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  fs::remove(name + ".req", ec);
  return absl::DeadlineExceededError(absl::StrCat(
      "the daemon did not answer within ", absl::FormatDuration(timeout),
      "; the request was withdrawn (is it stuck? see its log)"));
}

}  // namespace peregrine::bounce
