// StartupAnswers: the admin port's health probes while the daemon starts.
//
// The listeners are bound first, then the queue is opened (recovery can
// take a while after a crash with a big queue), and only then do the
// shards start accepting. Meanwhile a connection to the admin port would
// wait unanswered, and an orchestrator's liveness probe would kill a
// daemon that is only recovering. StartupAnswers serves that window on a
// thread of its own: GET /livez is 200, everything else 503 with
// {"status": "not ready", "reason": "starting: ..."}.
//
// Lifetime: made after the listeners are bound; destroyed (it stops and
// joins, within 100 ms plus one client's 2 s read at most) before the
// shards take the same sockets over. It never closes them. One client at a
// time; a client must send its request within 2 s.
#pragma once

#include <atomic>
#include <string>
#include <thread>
#include <vector>

namespace peregrine {

class StartupAnswers {
 public:
  // `fds`: listening sockets (non-blocking); `reason`: what /readyz says.
  StartupAnswers(std::vector<int> fds, std::string reason);
  ~StartupAnswers();
  StartupAnswers(const StartupAnswers&) = delete;
  StartupAnswers& operator=(const StartupAnswers&) = delete;

  // The answer to a request whose first line is `request_line`.
  static std::string Answer(const std::string& request_line,
                            const std::string& reason);

 private:
  void Run();
  void Serve(int client);

  const std::vector<int> fds_;
  const std::string reason_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace peregrine
