#!/usr/bin/python3
"""Privilege separation, as root (skipped otherwise) in a network namespace
of its own: with server.user = "nobody" the daemon binds port 25, makes the
data directory for that user, and then runs as it (Uid and Gid in
/proc/PID/status); mail sent to port 25 is queued in files that user owns;
a data directory that belongs to someone else stops the start with the
chown to run; an unknown user is named with the command to make it; root
without a user to become is refused unless root is said on purpose."""
import os
import pwd
import smtplib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, "tests/e2e")
from e2e_lib import enter_network_namespace  # noqa: E402

PEREGRINE = os.path.abspath("mta/peregrine")


def serve(cfg, data):
    log = open(os.path.join(os.path.dirname(data), "daemon.log"), "w+")
    proc = subprocess.Popen([PEREGRINE, "serve", "--config", cfg,
                             "--data-dir", data], stderr=log,
                            stdout=subprocess.DEVNULL)
    return proc, log


def wait_started(proc, log):
    deadline = time.time() + 30
    while time.time() < deadline and proc.poll() is None:
        log.seek(0)
        if "started:" in log.read():
            return True
        time.sleep(0.05)
    return False


def in_namespace():
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    nobody = pwd.getpwnam("nobody")
    # /tmp, not the test's own directory: every parent must let nobody in.
    top = tempfile.mkdtemp(dir="/tmp")
    os.chmod(top, 0o755)
    cfg = os.path.join(top, "peregrine.toml")
    with open(cfg, "w") as f:
        f.write('[server]\nuser = "nobody"\nshards = 1\n'
                '[listen]\nrelay = "127.0.0.1:25"\nsubmission = []\n'
                'submissions = []\nadmin = []\n'
                '[delivery]\nenabled = false\n'
                '[queue]\nspool_reserve = "0"\n'
                '[dns]\nservers = ["127.0.0.1:1"]\n')
    data = os.path.join(top, "data")  # Not there yet: made for nobody.
    proc, log = serve(cfg, data)
    try:
        assert wait_started(proc, log), open(log.name).read()
        with open(f"/proc/{proc.pid}/status") as f:
            status = f.read()
        uid = [l for l in status.splitlines() if l.startswith("Uid:")][0]
        gid = [l for l in status.splitlines() if l.startswith("Gid:")][0]
        assert uid.split()[1:] == [str(nobody.pw_uid)] * 4, uid
        assert gid.split()[1:] == [str(nobody.pw_gid)] * 4, gid
        assert f"running as nobody:" in open(log.name).read()
        with smtplib.SMTP("127.0.0.1", 25, timeout=30) as s:
            s.sendmail("a@src.test", ["b@dest.test"],
                       "Subject: as nobody\r\n\r\nbody\r\n")
        assert os.stat(data).st_uid == nobody.pw_uid
        owners = set()
        for root, dirs, files in os.walk(data):
            for name in dirs + files:
                owners.add(os.stat(os.path.join(root, name)).st_uid)
        assert owners == {nobody.pw_uid}, owners
        proc.send_signal(15)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    queue = subprocess.run([PEREGRINE, "queue", "list", "--data-dir", data],
                           capture_output=True, text=True, timeout=30)
    assert "b@dest.test" in queue.stdout, queue.stdout + queue.stderr

    # Someone else's data directory: refused, with the chown to run.
    other = os.path.join(top, "other")
    os.mkdir(other)  # root's
    proc, log = serve(cfg, other)
    assert proc.wait(timeout=30) == 2
    text = open(log.name).read()
    assert "belongs to root" in text and "chown -R nobody:" in text, text

    # Root without a user to become: refused, saying how to name one.
    plain = os.path.join(top, "plain.toml")
    with open(plain, "w") as f:
        f.write(open(cfg).read().replace('user = "nobody"\n', ''))
    env = {k: v for k, v in os.environ.items() if k != "PEREGRINE_USER"}
    r = subprocess.run([PEREGRINE, "serve", "--config", plain, "--data-dir",
                        os.path.join(top, "d2")], capture_output=True,
                       text=True, timeout=30, env=env)
    assert r.returncode == 2, r.stderr
    assert "started as root: set server.user" in r.stderr, r.stderr
    # Saying root on purpose (the flag, here) is heard, with a warning.
    proc = subprocess.Popen([PEREGRINE, "serve", "--config", plain,
                             "--data-dir", os.path.join(top, "d2"), "--user",
                             "root"], stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        deadline = time.time() + 30
        text = ""
        while "started:" not in text and time.time() < deadline:
            text += proc.stderr.readline()
        assert "started:" in text and "a flaw would take the machine" in text, \
            text
    finally:
        proc.send_signal(15)
        proc.wait(timeout=30)

    # An unknown user: named, with the command that makes it.
    with open(cfg, "a") as f:
        f.write("")
    bad = os.path.join(top, "bad.toml")
    with open(bad, "w") as f:
        f.write(open(cfg).read().replace('user = "nobody"',
                                         'user = "no-such-user-x"'))
    proc, log = serve(bad, os.path.join(top, "d3"))
    assert proc.wait(timeout=30) == 2
    text = open(log.name).read()
    assert "no user 'no-such-user-x'" in text and "useradd" in text, text
    print("ok")
    return 0


if __name__ == "__main__":
    enter_network_namespace(__file__)
    sys.exit(in_namespace())
