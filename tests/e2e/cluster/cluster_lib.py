"""Shared by the cluster tests: a redis-server of the test's own on a
loopback port, and Peregrine nodes that share through it."""
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, "tests/e2e")
from e2e_lib import TMP, Daemon, free_port  # noqa: E402


class Redis:
    """redis-server on 127.0.0.1:port, no persistence; kill() and start()
    again on the same port for an outage. `tls`: (cert, key, ca) to serve
    TLS only; `user`: (name, password) an ACL user, the default user off."""

    def __init__(self, tls=None, user=None):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(dir=TMP)
        self.proc = None
        self.server_args, self.cli_args = [], []
        if tls:
            cert, key, ca = tls
            self.server_args += ["--port", "0", "--tls-port", str(self.port),
                                 "--tls-cert-file", cert, "--tls-key-file",
                                 key, "--tls-auth-clients", "no"]
            self.cli_args += ["--tls", "--cacert", ca]
        if user:
            name, password = user
            self.server_args += ["--user", "default", "off", "--user", name,
                                 "on", ">" + password, "~*", "+@all"]
            self.cli_args += ["--user", name, "--pass", password,
                              "--no-auth-warning"]
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.dir,
             "--loglevel", "warning", *self.server_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.cli("PING").strip() == "PONG":
                return
            time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def cli(self, *args):
        r = subprocess.run(["redis-cli", "-p", str(self.port),
                            *self.cli_args, *args],
                           capture_output=True, text=True, timeout=10)
        return r.stdout

    def commands(self):
        """Commands clients sent since start (those scripts run inside
        Redis not counted), from INFO commandstats."""
        total = 0
        for line in self.cli("INFO", "commandstats").splitlines():
            name, _, stats = line.partition(":")
            if name.replace("cmdstat_", "") in (
                    "evalsha", "eval", "xread", "xadd", "xrevrange", "hscan"):
                total += int(stats.split(",")[0].split("=")[1])
        return total

    def kill(self):
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def node(name, redis, sink_port, rate="unlimited", expected=3, extra="",
         delivery="", admin="[]", redis_lines="", host="127.0.0.1"):
    """A node delivering everything through its smarthost (a sink) as the
    site "smarthost", shared with the other nodes. `delivery`: more lines
    of [delivery]; `extra`: more sections; `redis_lines`: more of
    [redis]; `host`: Redis's name in addresses."""
    return Daemon(admin=admin, extra=f"""
[redis]
addresses = ["{host}:{redis.port}"]
node = "{name}"
{redis_lines}
expected_nodes = {expected}
[delivery]
message_rate = "{rate}"
shared = true
max_connections = 4
{delivery}
[smarthost]
host = "127.0.0.1"
port = {sink_port}
tls = "none"
{extra}
""")


def inject(d, count, sender, recipient="user@example.test"):
    """`count` messages through one SMTP session."""
    with d.smtp() as s:
        for i in range(count):
            s.sendmail(sender, [recipient],
                       f"Subject: {i}\r\nMessage-ID: <{sender}.{i}>\r\n\r\n"
                       f"body {i}\r\n")
