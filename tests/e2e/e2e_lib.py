"""Shared by the end-to-end tests: where things are, and free loopback ports.

Tests run from the runfiles root, so paths are relative to the repository.
"""
import json
import re
import shutil
import os
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time

# PEREGRINE_BINARY: another build to run instead (benchmarks compare two).
PEREGRINE = os.environ.get("PEREGRINE_BINARY") or os.path.abspath(
    "mta/peregrine")
NO_IO_URING = os.path.abspath("tests/e2e/no_io_uring")
TMP = os.environ.get("TEST_TMPDIR", tempfile.gettempdir())


_handed_out = set()


# The addresses tests listen on with one shared port (delivery.port is one
# setting for every MX): a port must be free on each.
_LISTEN_ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


def free_port():
    """A TCP port that nothing uses right now on 127.0.0.1-3 (a test in
    parallel may hold it on one of them as a client's source port), and not
    one this process handed out before (the kernel may offer the same free
    port twice in a row, which would give two listeners one port)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port in _handed_out:
            continue
        try:
            for host in _LISTEN_ADDRESSES[1:]:
                with socket.socket() as s:
                    s.bind((host, port))
        except OSError:
            continue
        _handed_out.add(port)
        return port


# Started as root (as CI runs the suite), the daemon wants a user to become
# (server.user): the daemons of the tests and benchmarks stay root unless
# their configuration names one.
if os.geteuid() == 0:
    os.environ.setdefault("PEREGRINE_USER", "root")


class Daemon:
    def __init__(self, extra="", data=None, server="", events=True,
                 shards=2, admin="[]"):
        """`admin`: listen.admin's value (none by default)."""
        self.port = free_port()
        self.data = data or tempfile.mkdtemp(dir=TMP)
        self.cfg = os.path.join(self.data, "peregrine.toml")
        self.submission = free_port()
        self.submissions = free_port()
        with open(self.cfg, "w") as f:
            f.write(f"""
[server]
shards = {shards}
{server}
[listen]
relay = "127.0.0.1:{self.port}"
submission = "127.0.0.1:{self.submission}"
submissions = "127.0.0.1:{self.submissions}"
admin = {admin}
{extra}
""")
        if "[delivery]" not in extra:
            # Reception tests keep their mail in the queue to look at it.
            with open(self.cfg, "a") as f:
                f.write("\n[delivery]\nenabled = false\n")
        if "[queue]" not in extra:
            # The default reserve writes 256 MiB at each first start; the
            # tests that want one say so.
            with open(self.cfg, "a") as f:
                f.write('\n[queue]\nspool_reserve = "0"\n')
        if "[events]" not in extra and events:
            # Every test keeps an event log; stop() checks it.
            with open(self.cfg, "a") as f:
                f.write('\n[events]\npath = "events.json"\n')
        if "[dns]" not in extra:
            # Tests never send DNS beyond loopback: a dead local port.
            with open(self.cfg, "a") as f:
                f.write(f'\n[dns]\nservers = ["127.0.0.1:{free_port()}"]\n'
                        'timeout = "200ms"\ntries = 1\n')
        self.start()

    def start(self):
        self.log = open(os.path.join(self.data, "daemon.log"), "a")
        # Standard output: the event log when [events] stdout = true.
        self.out = open(os.path.join(self.data, "stdout.log"), "a")
        since = self.log.tell()  # A restart appends: read only what is new.
        self.proc = subprocess.Popen(
            [PEREGRINE, "serve", "--config", self.cfg, "--data-dir", self.data],
            stderr=self.log, stdout=self.out)
        # Listening comes first, the rest of the start after (queue, keys,
        # users): ready once the log says "started:" (a sanitizer build
        # takes a while).
        log_path = os.path.join(self.data, "daemon.log")
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            with open(log_path) as f:
                f.seek(since)
                if "started:" in f.read():
                    try:
                        with socket.create_connection(("127.0.0.1", self.port),
                                                      0.2):
                            return
                    except OSError:
                        pass
            time.sleep(0.05)
        raise AssertionError("daemon did not start")

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=15)
        self.log.close()
        self.out.close()
        if code == 0:
            check_events(self.events())
        return code

    def events(self):
        """The event log's records, oldest first, rotated files included
        (events.json.N ... events.json.1, events.json), each line parsed
        (AssertionError names a line that is not JSON)."""
        path = os.path.join(self.data, "events.json")
        rotated = sorted(
            (f for f in os.listdir(self.data)
             if re.fullmatch(r"events\.json\.\d+", f)),
            key=lambda f: -int(f.rsplit(".", 1)[1]))
        records = []
        for name in rotated + (["events.json"] if os.path.exists(path)
                               else []):
            with open(os.path.join(self.data, name), encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    try:
                        records.append(json.loads(line))
                    except ValueError as e:
                        raise AssertionError(
                            f"{name}:{number}: not JSON ({e}): {line!r}")
        return records

    def log_text(self):
        """What the daemon logged so far (daemon.log)."""
        with open(os.path.join(self.data, "daemon.log"),
                  errors="replace") as f:
            return f.read()

    def queue(self, *args):
        r = subprocess.run([PEREGRINE, "queue", *args, "--data-dir", self.data],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def cli(self, *args, check=True):
        """`peregrine ARGS --data-dir DATA`: its stdout (stderr on failure
        with check=False: the CompletedProcess)."""
        r = subprocess.run([PEREGRINE, *args, "--data-dir", self.data],
                           capture_output=True, text=True, timeout=30)
        if not check:
            return r
        assert r.returncode == 0, r.stderr
        return r.stdout

    def smtp(self):
        return smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.test",
                            timeout=10)


EVENT_FIELDS = {
    "time", "type", "id", "sender", "recipient", "recipients", "site", "mx",
    "ip", "source", "tls", "tls_policy", "tls_failure", "code", "enhanced", "reply", "reason", "category",
    "attempt",
    "next_attempt", "queue_time_ms", "size", "tags", "client", "helo",
    "auth_user", "listener"}
TERMINAL = {"delivered", "failed", "expired"}
BOUNCE_EVENTS = {"bounce", "dsn_sent", "async_bounce", "complaint",
                 "suppressed", "suppression_hit"}


def check_events(records):
    """What must hold of any event log: the same fields in every record, one
    `received` per message, at most one terminal event per recipient and
    nothing for it after that, and every delivery outcome's reply kept
    structured."""
    received = set()
    final = {}
    for i, r in enumerate(records):
        assert set(r) == EVENT_FIELDS, f"record {i}: fields {sorted(r)}"
        assert r["time"].endswith("Z") and len(r["time"]) == 24, r["time"]
        if r["type"] == "received":
            assert r["id"] not in received, f"two received events for {r['id']}"
            received.add(r["id"])
            continue
        if r["type"] == "rejected":
            assert r["code"] is not None, r
            continue
        if r["type"] == "admin":
            assert r["reason"], r
            continue
        if r["type"] in BOUNCE_EVENTS:
            if r["type"] == "bounce":
                assert r["category"] is not None, f"no category: {r}"
                assert final.get((r["id"], r["recipient"])) in (
                    "failed", "expired"), f"bounce before its failure: {r}"
            if r["type"] == "dsn_sent":
                assert r["id"] is not None and r["sender"] == "", r
            continue
        key = (r["id"], r["recipient"])
        assert key not in final, f"{key}: {r['type']} after {final.get(key)}"
        assert isinstance(r["code"], int) and 200 <= r["code"] < 600, r
        assert r["enhanced"] is None or r["enhanced"][0] == str(r["code"])[0], r
        if r["type"] in ("failed", "expired"):
            assert r["category"] is not None, f"no category: {r}"
        if r["type"] in TERMINAL:
            final[key] = r["type"]
    return final


def terminal_events(d):
    """{(id, recipient): type} of a stopped daemon's event log."""
    return check_events(d.events())


class Nsd:
    """NSD on a loopback port serving the given zones {origin: records}.

    Records are zone-file lines below the SOA and NS, e.g.
    "@ IN MX 10 mx1.dest.test." and "mx1 IN A 127.0.0.1".
    """

    def __init__(self, zones, port=None, files=None):
        """`files`: {origin: path} of zone files made elsewhere (signed
        ones), served as they are."""
        self.work = tempfile.mkdtemp(dir=TMP)
        self.port = port or free_port()
        conf = f"""server:
  ip-address: 127.0.0.1@{self.port}
  port: {self.port}
  username: ""
  chroot: ""
  database: ""
  zonelistfile: "{self.work}/zone.list"
  xfrdfile: "{self.work}/xfrd.state"
  pidfile: "{self.work}/nsd.pid"
  logfile: "{self.work}/nsd.log"
  xfrdir: "{self.work}"
  server-count: 1
  rrl-ratelimit: 0
remote-control:
  control-enable: no
"""
        for i, (origin, records) in enumerate(zones.items()):
            path = os.path.join(self.work, f"zone{i}")
            with open(path, "w") as f:
                f.write("$TTL 300\n@ IN SOA ns.test. a.test. 1 3600 600 86400 60\n"
                        "@ IN NS ns.test.\n" + "\n".join(records) + "\n")
            conf += f'zone:\n  name: "{origin}."\n  zonefile: "{path}"\n'
        for origin, path in (files or {}).items():
            conf += f'zone:\n  name: "{origin}."\n  zonefile: "{path}"\n'
        with open(os.path.join(self.work, "nsd.conf"), "w") as f:
            f.write(conf)
        self.proc = subprocess.Popen(
            ["/usr/sbin/nsd", "-d", "-c", os.path.join(self.work, "nsd.conf")])
        deadline = time.time() + 10
        while time.time() < deadline and not os.path.exists(
                os.path.join(self.work, "nsd.pid")):
            time.sleep(0.05)
        time.sleep(0.2)

    def dns_config(self):
        return (f'[dns]\nservers = ["127.0.0.1:{self.port}"]\n'
                'timeout = "1s"\ntries = 2\n')

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Sink:
    """Postfix's smtp-sink on a loopback address, each message dumped to a
    file in `self.dir`; `options` are its fault switches (-r connect, ...)."""

    def __init__(self, *options, host="127.0.0.1", port=None):
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(dir=TMP)
        self.log = open(self.dir + ".log", "w")
        self.proc = subprocess.Popen(
            ["/usr/sbin/smtp-sink", "-u", "root", "-d",
             os.path.join(self.dir, "%H%M%S."), *options,
             *(["-6", f"[{host}]:{self.port}"] if ":" in host
               else [f"{host}:{self.port}"]), "256"],
            stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection((host, self.port), 0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("smtp-sink did not start")

    def messages(self):
        return [os.path.join(self.dir, f) for f in os.listdir(self.dir)]

    def wait_for(self, count, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline and len(self.messages()) < count:
            time.sleep(0.1)
        return len(self.messages())

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        self.log.close()


class RawSink:
    """A minimal SMTP server on 127.0.0.1 that keeps the exact bytes of each
    message's DATA section as the client sent them (dot-stuffing and line
    ends included), for tests of what goes out on the wire. No PIPELINING,
    no extensions; a thread per connection; at most `max_bytes` a message;
    `delay` seconds before each message is acknowledged. `refuse` maps a
    recipient address to the reply its RCPT gets ("550 5.1.1 no such user").
    With `chunking`, EHLO offers PIPELINING and CHUNKING, and a message may
    come as BDAT chunks: kept as sent (no dot-stuffing, no final "."),
    `bdat` counts those.
    """

    def __init__(self, max_bytes=1 << 20, delay=0, host="127.0.0.1", port=0,
                 refuse=None, chunking=False):
        import threading
        self.chunking = chunking
        self.bdat = 0  # Messages that came by BDAT.
        self.messages = []  # Raw DATA bytes, up to and with "\r\n.\r\n".
        self.times = []  # When each message was kept (time.time()).
        self.envelopes = []  # (MAIL FROM, [RCPT TO]) of each message.
        self.max_bytes = max_bytes
        self.delay = delay  # Seconds before each message's 250.
        self.refuse = refuse or {}
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        import threading
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._connection, args=(conn,),
                             daemon=True).start()

    def _connection(self, conn):
        with conn:
            conn.settimeout(10)
            try:
                self._session(conn)
            except OSError:
                pass

    def _session(self, conn):
        buf = b""
        chunks = b""  # BDAT chunks of the message so far.
        sender, rcpts = None, []
        conn.sendall(b"220 rawsink ESMTP\r\n")
        while not self.stopping:
            while b"\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            line, buf = buf.split(b"\r\n", 1)
            verb = line[:4].upper()
            if verb == b"EHLO" and self.chunking:
                conn.sendall(b"250-rawsink\r\n250-PIPELINING\r\n"
                             b"250 CHUNKING\r\n")
            elif verb == b"BDAT" and self.chunking:
                words = line.split()
                size, last = int(words[1]), len(words) > 2
                while len(buf) < size:
                    data = conn.recv(65536)
                    if not data or size > self.max_bytes:
                        return
                    buf += data
                chunk, buf = buf[:size], buf[size:]
                chunks += chunk
                if not last:
                    conn.sendall(b"250 2.0.0 chunk\r\n")
                    continue
                if not rcpts:
                    chunks = b""
                    conn.sendall(b"554 5.5.1 no valid recipients\r\n")
                    continue
                self.messages.append(chunks)
                self.envelopes.append((sender, rcpts))
                self.bdat += 1
                chunks = b""
                sender, rcpts = None, []
                conn.sendall(b"250 2.0.0 kept\r\n")
            elif verb == b"DATA":
                conn.sendall(b"354 go on\r\n")
                while b"\r\n.\r\n" not in b"\r\n" + buf:
                    data = conn.recv(65536)
                    if not data or len(buf) > self.max_bytes:
                        return
                    buf += data
                end = (b"\r\n" + buf).index(b"\r\n.\r\n") + 3
                if self.delay:
                    time.sleep(self.delay)
                self.messages.append(buf[:end])
                self.times.append(time.time())
                self.envelopes.append((sender, rcpts))
                sender, rcpts = None, []
                buf = buf[end:]
                conn.sendall(b"250 2.0.0 kept\r\n")
            elif verb == b"MAIL":
                text = line.decode(errors="replace")
                sender = text[text.index("<") + 1:text.index(">")]
                conn.sendall(b"250 ok\r\n")
            elif verb == b"RCPT":
                text = line.decode(errors="replace")
                rcpt = text[text.index("<") + 1:text.index(">")]
                if rcpt in self.refuse:
                    conn.sendall(self.refuse[rcpt].encode() + b"\r\n")
                else:
                    rcpts.append(rcpt)
                    conn.sendall(b"250 ok\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"250 ok\r\n")

    def wait_for(self, count, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline and len(self.messages) < count:
            time.sleep(0.05)
        return len(self.messages)

    def stop(self):
        self.stopping = True
        self.sock.close()
        self.thread.join(timeout=5)


def admin_call(port, method, path, payload=None, timeout=60):
    """One request to an admin port on loopback: (status, parsed JSON).
    `payload`: bytes as they are, anything else as JSON."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    body = None if payload is None else (
        payload if isinstance(payload, bytes) else json.dumps(payload))
    conn.request(method, path, body=body)
    r = conn.getresponse()
    data = json.loads(r.read())
    conn.close()
    return r.status, data


def wait_until(what, timeout=30):
    """True once what() is, polling every 50 ms for up to `timeout` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if what():
            return True
        time.sleep(0.05)
    return False


def read_reply(f):
    """One whole SMTP reply (every line of a multi-line one) from a socket's
    makefile("rb")."""
    lines = []
    while True:
        line = f.readline()
        lines.append(line)
        if line[3:4] != b"-":
            return b"".join(lines)


def add_user(data, name, password):
    """`peregrine user add` in the data directory `data`."""
    return subprocess.run([PEREGRINE, "user", "add", name, "--data-dir", data],
                          input=password + "\n", capture_output=True,
                          text=True, check=True)


def smarthost_to(port):
    """Configuration lines: deliver everything in plain text to 127.0.0.1:port
    (a RawSink), through [smarthost]."""
    return (f'[delivery]\n[smarthost]\nhost = "127.0.0.1"\nport = {port}\n'
            'tls = "none"\n')


class Postfix:
    """A Postfix instance of its own (config, queue and log in a temp folder)
    listening on `host`:`port`, relaying everything to `relayhost` (a
    "[ip]:port") except the domains in `transports` ({domain: "[ip]:port"}),
    for real bounces made by another MTA. Needs root (Postfix's master)."""

    def __init__(self, host, port, relayhost, transports=None,
                 hostname="mx.postfix.test"):
        # Not under TMP: Postfix's daemons run as "postfix", which cannot
        # reach folders below /root.
        self.work = tempfile.mkdtemp(dir="/tmp", prefix="peregrine-postfix-")
        os.chmod(self.work, 0o755)
        self.conf = os.path.join(self.work, "conf")
        for d in ("conf", "queue", "data"):
            os.makedirs(os.path.join(self.work, d))
        shutil.chown(os.path.join(self.work, "data"), "postfix")
        self.log = os.path.join(self.work, "maillog")
        transport = ", ".join(f"{d}=smtp:{t}"
                              for d, t in (transports or {}).items())
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write(f"""compatibility_level = 3.6
queue_directory = {self.work}/queue
data_directory = {self.work}/data
myhostname = {hostname}
mydomain = postfix.test
myorigin = postfix.test
mydestination =
inet_interfaces = all
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = {relayhost}
{"transport_maps = inline:{" + transport + "}" if transport else ""}
smtp_dns_support_level = disabled
disable_dns_lookups = yes
maillog_file = {self.log}
maillog_file_prefixes = /tmp
smtpd_relay_restrictions = permit_mynetworks, reject
alias_maps =
alias_database =
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
""")
        with open("/etc/postfix/master.cf") as f:
            master = f.read()
        master = re.sub(r"(?m)^smtp\s+inet.*$",
                        f"{host}:{port} inet n - n - - smtpd", master)
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(master)
        r = subprocess.run(["/usr/sbin/postfix", "-c", self.conf, "start"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (r.stdout, r.stderr, self.maillog())
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection((host, port), 0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("postfix did not start: " + self.maillog())

    def maillog(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        subprocess.run(["/usr/sbin/postfix", "-c", self.conf, "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.work, ignore_errors=True)


EXIM_DIR = "/opt/peregrine-test/exim"  # scripts/install-deps.sh unpacks it.


class Exim:
    """Exim 4 (Debian's package, unpacked by scripts/install-deps.sh, not
    installed: it would replace Postfix) listening on 127.0.0.1:`port`,
    routing mail for `routes` ({domain: port on 127.0.0.1}) and the rest to
    `default_port`, for real bounces made by another MTA. Its compiled-in
    user is made to exist in a mount namespace of its own (a copy of
    /etc/passwd bound over the real one), so the machine is not changed."""

    def __init__(self, port, routes, default_port,
                 hostname="mx.exim.test"):
        self.work = tempfile.mkdtemp(dir="/tmp", prefix="peregrine-exim-")
        os.chmod(self.work, 0o755)
        uid = 64999
        for d in ("spool", "log"):
            os.makedirs(os.path.join(self.work, d))
            os.chown(os.path.join(self.work, d), uid, uid)
        with open("/etc/passwd") as f:
            passwd = f.read()
        with open("/etc/group") as f:
            group = f.read()
        with open(os.path.join(self.work, "passwd"), "w") as f:
            f.write(passwd + f"Debian-exim:x:{uid}:{uid}::{self.work}:"
                    "/usr/sbin/nologin\n")
        with open(os.path.join(self.work, "group"), "w") as f:
            f.write(group + f"Debian-exim:x:{uid}:\n")
        routers = ""
        transports = ""
        for i, (domain, p) in enumerate(list(routes.items()) +
                                        [("*", default_port)]):
            routers += f"""r{i}:
  driver = manualroute
  {"" if domain == "*" else "domains = " + domain}
  transport = t{i}
  route_list = * 127.0.0.1
  self = send
  no_more
"""
            transports += f"""t{i}:
  driver = smtp
  port = {p}
  allow_localhost
  hosts_avoid_tls = *
"""
        self.conf = os.path.join(self.work, "exim.conf")
        with open(self.conf, "w") as f:
            f.write(f"""primary_hostname = {hostname}
spool_directory = {self.work}/spool
log_file_path = {self.work}/log/%slog
daemon_smtp_ports = {port}
local_interfaces = 127.0.0.1
exim_user = Debian-exim
exim_group = Debian-exim
never_users =
trusted_users = root
acl_smtp_rcpt = acl_rcpt
host_lookup =
rfc1413_hosts =
exim_path = {EXIM_DIR}/usr/sbin/exim4
keep_environment =
tls_advertise_hosts =
begin acl
acl_rcpt:
  accept
begin routers
{routers}
begin transports
{transports}
begin retry
* * F,1m,10s
""")
        self.proc = subprocess.Popen(
            ["unshare", "-m", "sh", "-c",
             f"mount --bind {self.work}/passwd /etc/passwd && "
             f"mount --bind {self.work}/group /etc/group && "
             f"exec {EXIM_DIR}/usr/sbin/exim4 -C {self.conf} -bdf -q2s"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), 0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError("exim did not start: " + self.mainlog())

    def mainlog(self):
        try:
            with open(os.path.join(self.work, "log", "mainlog"),
                      errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.work, ignore_errors=True)


def enter_network_namespace(script, mount=False):
    """For a test that runs as root in a network namespace of its own (and a
    mount namespace with `mount`, to replace /etc/resolv.conf): outside
    one, runs `script` again inside and exits with its status (0, saying
    why, where that cannot be done here); inside, brings loopback up and
    returns."""
    if os.environ.get("PEREGRINE_IN_NETNS") != "1":
        if os.geteuid() != 0:
            print("needs root for its network namespace; skipped")
            sys.exit(0)
        flags = ["--net"] + (["--mount"] if mount else [])
        probe = subprocess.run(["unshare", *flags, "true"],
                               capture_output=True, text=True)
        if probe.returncode != 0:
            print("cannot make a network namespace here "
                  f"({probe.stderr.strip()}); skipped")
            sys.exit(0)
        env = dict(os.environ, PEREGRINE_IN_NETNS="1")
        sys.exit(subprocess.run(["unshare", *flags, sys.executable, script],
                                env=env).returncode)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
