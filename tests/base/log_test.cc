#include "base/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "re2/re2.h"

namespace peregrine::log {
namespace {

// Sends stderr to a pipe for the test's life; Take() reads what came.
class CapturedStderr {
 public:
  CapturedStderr() {
    EXPECT_EQ(::pipe2(fds_, O_NONBLOCK), 0);
    saved_ = ::dup(STDERR_FILENO);
    ::dup2(fds_[1], STDERR_FILENO);
  }
  ~CapturedStderr() {
    ::dup2(saved_, STDERR_FILENO);
    ::close(saved_);
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  std::string Take() {
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fds_[0], buf, sizeof(buf))) > 0) out.append(buf, n);
    return out;
  }

 private:
  int fds_[2];
  int saved_;
};

TEST(Log, LineHasTimeLevelComponentAndMessage) {
  CapturedStderr err;
  Info("shard", "hello %d", 7);
  Warn("", "careful");
  std::string out = err.Take();
  std::vector<std::string> lines = absl::StrSplit(out, '\n');
  ASSERT_EQ(lines.size(), 3u) << out;
  EXPECT_TRUE(RE2::FullMatch(
      lines[0],
      R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info    shard: hello 7)"))
      << lines[0];
  EXPECT_TRUE(RE2::FullMatch(
      lines[1], R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z warning careful)"))
      << lines[1];
  EXPECT_EQ(lines[2], "");
}

TEST(Log, BufferedLinesWaitForTheFlushAndKeepTheirOrder) {
  CapturedStderr err;
  std::thread t([&] {
    BufferThisThread(true);
    Info("a", "one");
    Info("a", "two");
    EXPECT_EQ(err.Take(), "");  // Nothing yet.
    FlushThisThread();
    std::string out = err.Take();
    {
      EXPECT_NE(out.find("one\n"), std::string::npos) << out;
      EXPECT_LT(out.find("one\n"), out.find("two\n")) << out;
    }
    FlushThisThread();  // Empty: nothing written.
    EXPECT_EQ(err.Take(), "");
    BufferThisThread(false);
  });
  t.join();
}

TEST(Log, WarningWritesAtOnceAfterWhatWasBuffered) {
  CapturedStderr err;
  std::thread t([&] {
    BufferThisThread(true);
    Info("a", "before");
    Error("a", "broken");
    std::string out = err.Take();
    EXPECT_NE(out.find("before\n"), std::string::npos) << out;
    EXPECT_LT(out.find("before\n"), out.find("broken\n")) << out;
    BufferThisThread(false);
  });
  t.join();
}

TEST(Log, ABigBufferIsWrittenWithoutAFlush) {
  CapturedStderr err;
  std::thread t([&] {
    BufferThisThread(true);
    std::string big(1000, 'x');
    std::string out;
    for (int i = 0; i < 100; ++i) {
      Info("a", "%s", big);
      out += err.Take();  // Keep the pipe from filling.
    }
    EXPECT_GE(out.size(), 64u << 10);
    BufferThisThread(false);
  });
  t.join();
}

TEST(Log, ThreadEndWritesWhatItBuffered) {
  CapturedStderr err;
  std::thread t([] {
    BufferThisThread(true);
    Info("a", "last words");
  });
  t.join();
  EXPECT_NE(err.Take().find("last words\n"), std::string::npos);
}

TEST(Log, OtherThreadsAreNotBuffered) {
  CapturedStderr err;
  std::thread t([] { BufferThisThread(true); });
  t.join();
  Info("a", "direct");
  EXPECT_NE(err.Take().find("direct\n"), std::string::npos);
}

}  // namespace
}  // namespace peregrine::log
