#!/usr/bin/python3
"""Defect 17: `queue stats` showed "delivered 0 failed 0 expired 0" after
thousands of deliveries, and `queue show ID` of a finished message answered
"no message". Now the totals are kept, and a short record of each finished
message (envelope, each recipient's outcome and last reply) for
queue.keep_finished."""
import re
import subprocess
import sys
import time
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import Daemon, PEREGRINE, RawSink, smarthost_to  # noqa: E402


class FinishedMailTest(unittest.TestCase):
    def test_totals_and_finished_messages_can_be_looked_up(self):
        sink = RawSink()
        d = Daemon(smarthost_to(sink.port))
        try:
            with d.smtp() as s:
                for i in range(5):
                    s.sendmail("a@sender.test", [f"r{i}@dest.test"],
                               f"Subject: {i}\r\n\r\nx\r\n")
            self.assertEqual(sink.wait_for(5), 5)
            deadline = time.time() + 10
            stats = ""
            while time.time() < deadline:
                stats = d.queue("stats")
                if "delivered 5" in stats:
                    break
                time.sleep(0.2)
            self.assertIn("finished since the queue was made: delivered 5, "
                          "failed 0, expired 0", stats)
            with open(d.log.name) as f:
                ids = re.findall(r"received id=(\w+)", f.read())
            self.assertEqual(len(ids), 5)
            shown = d.queue("show", ids[0])
            self.assertIn("(finished", shown)
            self.assertIn("from <a@sender.test>", shown)
            self.assertRegex(shown, r"delivered  <r0@dest.test>  attempts=1  "
                                    r"last: 250 2.0.0 kept")
            r = subprocess.run([PEREGRINE, "queue", "show", "0000000000000001",
                                "--data-dir", d.data],
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 2)
            self.assertIn("none finished in the last 72h", r.stderr)
        finally:
            d.stop()
            sink.stop()


if __name__ == "__main__":
    unittest.main()
