#!/usr/bin/python3
"""Defects 4 and 5, a full disk, on a real 64 MiB ext4 file system (a loop
image mounted in a mount namespace of the test's own):
 - the queue tools used to abort (exit 134, an assertion inside RocksDB)
   on a full disk, and a restart aborted the same way; now the tools open
   the queue read-only writing nothing, and a restart frees the emergency
   space, answers 452 to new mail and delivers what it holds;
 - the daemon could not start at all on a 64 MB file system (RocksDB
   preallocated ~74 MB);
 - a burst of 98 x 100 KiB between two once-a-second checks ran the disk
   from 10 MiB free to 11 KiB; now the floor is checked against the bytes
   about to be written and is never crossed."""
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import PEREGRINE, RawSink, TMP, free_port, smarthost_to  # noqa: E402

# Root, loop devices and a mount namespace: re-run inside one of our own,
# so the mount goes away with the test.
if os.environ.get("PEREGRINE_T04_NS") != "1":
    if os.geteuid() != 0 or not shutil.which("unshare") or \
            not shutil.which("mkfs.ext4"):
        print("skipped: needs root, unshare and mkfs.ext4")
        sys.exit(0)
    os.environ["PEREGRINE_T04_NS"] = "1"
    os.execvp("unshare", ["unshare", "-m", "--propagation", "private",
                          sys.executable, *sys.argv])


def statvfs_free(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class FileSystem:
    def __init__(self, mib=64):
        self.work = tempfile.mkdtemp(dir=TMP)
        self.image = os.path.join(self.work, "fs.img")
        self.mount = os.path.join(self.work, "mnt")
        os.makedirs(self.mount)
        with open(self.image, "wb") as f:
            f.truncate(mib << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", self.image],
                       check=True)
        subprocess.run(["mount", "-o", "loop", self.image, self.mount],
                       check=True)

    def fill(self, leave=0):
        """Fills the file system up to `leave` bytes free."""
        path = os.path.join(self.mount, "filler")
        with open(path, "ab") as f:
            chunk = b"\0" * (1 << 20)
            while statvfs_free(self.mount) > leave + len(chunk):
                try:
                    f.write(chunk)
                    f.flush()
                except OSError:
                    break
            rest = statvfs_free(self.mount) - leave
            if rest > 0:
                try:
                    f.write(b"\0" * rest)
                    f.flush()
                except OSError:
                    pass
        return path

    def close(self):
        subprocess.run(["umount", "-l", self.mount])


class Daemon:
    def __init__(self, data, extra):
        self.data = data
        self.port = free_port()
        self.cfg = os.path.join(TMP, f"t04-{self.port}.toml")
        with open(self.cfg, "w") as f:
            f.write(f'[listen]\nrelay = "127.0.0.1:{self.port}"\n'
                    'submission = []\nsubmissions = []\nadmin = []\n'
                    f'[dns]\nservers = ["127.0.0.1:{free_port()}"]\n'
                    'timeout = "200ms"\ntries = 1\n' + extra)
        self.log_path = os.path.join(TMP, f"t04-{self.port}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [PEREGRINE, "serve", "--config", self.cfg, "--data-dir", data],
            stderr=self.log, stdout=subprocess.DEVNULL)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("daemon exited: " + self.text())
            if "started:" in self.text():
                return
            time.sleep(0.05)
        raise AssertionError("daemon did not start: " + self.text())

    def text(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        self.proc.terminate()
        code = self.proc.wait(timeout=30)
        self.log.close()
        return code

    def send(self, n, size=10000, timeout=10):
        codes = []
        with smtplib.SMTP("127.0.0.1", self.port, local_hostname="c.test",
                          timeout=timeout) as s:
            for i in range(n):
                try:
                    s.sendmail("a@sender.test", [f"r{i}@dest.test"],
                               f"Subject: {i}\r\n\r\n" + "x" * size + "\r\n")
                    codes.append(250)
                except smtplib.SMTPResponseException as e:
                    codes.append(e.smtp_code)
                    s.rset()
                except smtplib.SMTPRecipientsRefused as e:
                    codes.append(list(e.recipients.values())[0][0])
                    s.rset()
        return codes


def queue_tool(data, *args):
    return subprocess.run([PEREGRINE, "queue", *args, "--data-dir", data],
                          capture_output=True, text=True, timeout=30)


class FullDiskTest(unittest.TestCase):
    def test_tools_restart_and_delivery_on_a_full_disk(self):
        fs = FileSystem()
        sink = RawSink()
        try:
            data = os.path.join(fs.mount, "data")
            # Built-in defaults on 64 MB: it starts (452: under the 512 MiB
            # floor) instead of failing on RocksDB's preallocation.
            d = Daemon(data, "[delivery]\nenabled = false\n")
            self.assertIn("refusing new mail", d.text())
            self.assertEqual(d.send(1), [452])
            self.assertEqual(d.stop(), 0)
            held = ("[delivery]\nenabled = false\n"
                    '[queue]\nmin_free_space = "4MiB"\n')
            d = Daemon(data, held)
            self.assertEqual(d.send(20), [250] * 20)
            filler = fs.fill()
            for args in (("stats",), ("list",)):
                r = queue_tool(data, *args)
                self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("messages 20", queue_tool(data, "stats").stdout)
            self.assertIn(452, d.send(1))
            self.assertEqual(d.stop(), 0)
            # Stopped, on a full disk: the tools still work.
            r = queue_tool(data, "stats")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("messages 20", r.stdout)
            # Restarted on the full disk, delivering to a sink.
            d = Daemon(data, '[queue]\nmin_free_space = "4MiB"\n' +
                       smarthost_to(sink.port))
            self.assertIn("deleted the 16 MiB emergency space", d.text())
            self.assertEqual(sink.wait_for(20), 20)
            self.assertEqual(d.send(1, timeout=20), [452])
            deadline = time.time() + 15
            while time.time() < deadline and \
                    "messages 0" not in queue_tool(data, "stats").stdout:
                time.sleep(0.2)
            self.assertIn("messages 0", queue_tool(data, "stats").stdout)
            # Space again: mail is taken again.
            os.unlink(filler)
            deadline = time.time() + 10
            codes = []
            while time.time() < deadline:
                codes = d.send(1)
                if codes == [250]:
                    break
                time.sleep(0.5)
            self.assertEqual(codes, [250])
            self.assertEqual(d.stop(), 0)
        finally:
            sink.stop()
            fs.close()

    def test_a_burst_never_crosses_the_floor(self):
        fs = FileSystem()
        try:
            data = os.path.join(fs.mount, "data")
            d = Daemon(data, "[delivery]\nenabled = false\n"
                       '[queue]\nmin_free_space = "8MiB"\n'
                       'spool_reserve = "0"\n')
            fs.fill(leave=12 << 20)  # 4 MiB above the floor.
            lowest = [statvfs_free(fs.mount)]
            stop = threading.Event()

            def watch():
                while not stop.is_set():
                    lowest[0] = min(lowest[0], statvfs_free(fs.mount))
                    time.sleep(0.002)

            watcher = threading.Thread(target=watch)
            watcher.start()
            results = []
            senders = [threading.Thread(
                target=lambda: results.extend(d.send(25, size=100 << 10)))
                for _ in range(4)]
            for t in senders:
                t.start()
            for t in senders:
                t.join()
            stop.set()
            watcher.join()
            print(f"{results.count(250)} accepted, {results.count(452)} "
                  f"refused; lowest free {lowest[0] >> 10} KiB")
            self.assertGreater(results.count(250), 10)
            self.assertGreater(results.count(452), 0)
            self.assertGreater(lowest[0], (8 << 20) - (256 << 10),
                               f"free went down to {lowest[0]} bytes")
            self.assertEqual(d.stop(), 0)
        finally:
            fs.close()


if __name__ == "__main__":
    unittest.main()
