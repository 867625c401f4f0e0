#!/usr/bin/python3
"""Defect 2: clients that pipeline EHLO without ever reading the replies.
They used to take the daemon from 69 MB to 1.2 GB in 5 s (four aborted it).
The daemon must stop reading them once their replies back up, keep its RSS
bounded, close them when the command timeout passes without the replies
draining, and serve others meanwhile."""
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import Daemon  # noqa: E402


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0


def flood(port, limit_bytes, seconds, result):
    """Sends EHLO until `limit_bytes` or `seconds`, never reading."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    chunk = b"EHLO a\r\n" * 8192
    sent = 0
    deadline = time.time() + seconds
    while sent < limit_bytes and time.time() < deadline:
        try:
            sent += s.send(chunk)
        except BlockingIOError:
            time.sleep(0.01)
        except OSError:
            break  # Closed by the daemon.
    result.append((s, sent))


class UnreadRepliesTest(unittest.TestCase):
    def test_rss_stays_bounded_and_stuck_clients_are_closed(self):
        d = Daemon(extra='[smtp]\ncommand_timeout = "3s"\n')
        try:
            base = rss_mb(d.proc.pid)
            results = []
            threads = [threading.Thread(target=flood,
                                        args=(d.port, 100 << 20, 4, results))
                       for _ in range(4)]
            peak = base
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                peak = max(peak, rss_mb(d.proc.pid))
                time.sleep(0.1)
            for t in threads:
                t.join()
            self.assertIsNone(d.proc.poll(), "daemon died")
            # Each flooder got only a little way: the daemon stopped reading.
            for _, sent in results:
                self.assertLess(sent, 20 << 20)
            print(f"RSS {base:.0f} MB before, {peak:.0f} MB at the peak; "
                  f"sent before the daemon stopped reading: "
                  f"{[sent >> 10 for _, sent in results]} KiB")
            self.assertLess(peak, 300, f"RSS {peak:.0f} MB (from {base:.0f})")
            # Others are served meanwhile.
            with d.smtp() as s:
                self.assertEqual(s.noop()[0], 250)
            # Past the command timeout the stuck clients are closed.
            time.sleep(4)
            for s, _ in results:
                s.setblocking(True)
                s.settimeout(5)
                got = b""
                try:
                    while True:
                        data = s.recv(1 << 20)
                        if not data:
                            break
                        got += data
                except (ConnectionResetError, socket.timeout):
                    pass
                s.close()
            with open(d.log.name) as f:
                self.assertIn("did not read its replies", f.read())
            self.assertIsNone(d.proc.poll())
        finally:
            code = d.stop()
        self.assertEqual(code, 0)


if __name__ == "__main__":
    unittest.main()
