#!/usr/bin/python3
"""SMTP reception end to end: the real daemon on loopback, real clients.

Mail acknowledged with 250 is in the queue after kill -9; smuggling dialogs
never yield a second message; relay is refused to untrusted clients; size,
recipient and idle limits hold; BDAT works; mail is DKIM-signed once at
reception and the signature verifies with dkimpy.
"""
import os
import random
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import dkim

sys.path.insert(0, "tests/e2e")
from e2e_lib import PEREGRINE, TMP, Daemon, free_port  # noqa: E402


def raw_dialog(port, data, wait=0.5):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.recv(512)
        s.sendall(data)
        time.sleep(wait)
        s.settimeout(2)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except socket.timeout:
            pass
        return out.decode(errors="replace")


class SmtpTest(unittest.TestCase):
    def test_acknowledged_mail_survives_kill_9(self):
        d = Daemon()
        acked = set()
        try:
            for cycle in range(5):
                stop = threading.Event()

                def sender(base):
                    n = base
                    while not stop.is_set():
                        try:
                            with d.smtp() as s:
                                while not stop.is_set():
                                    s.sendmail(f"s{n}@sender.test", [f"r{n}@dest.test"],
                                               f"Subject: {n}\r\n\r\nbody {n}\r\n")
                                    acked.add(n)  # 250 received.
                                    n += 1
                        except (smtplib.SMTPException, OSError):
                            return
                t = threading.Thread(target=sender, args=(cycle * 100000,))
                t.start()
                time.sleep(random.uniform(0.2, 0.6))
                d.proc.kill()  # SIGKILL, mid-stream.
                d.proc.wait()
                stop.set()
                t.join(timeout=10)
                d.log.close()
                listing = d.queue("list", "--limit", "1000000")
                present = re.findall(r"from <s(\d+)@sender\.test>", listing)
                counts = {}
                for p in present:
                    counts[int(p)] = counts.get(int(p), 0) + 1
                for n in acked:
                    self.assertEqual(counts.get(n), 1, f"acknowledged {n} missing or doubled")
                d.start()
            self.assertGreater(len(acked), 50)
        finally:
            if d.proc.poll() is None:
                d.stop()

    def test_smuggling_never_yields_a_second_message(self):
        d = Daemon()
        try:
            for fake in (b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n"):
                out = raw_dialog(d.port, b"EHLO c\r\nMAIL FROM:<a@s.test>\r\n"
                                 b"RCPT TO:<b@d.test>\r\nDATA\r\nSubject: one\r\n\r\nx"
                                 + fake + b"MAIL FROM:<evil@s.test>\r\n"
                                 b"RCPT TO:<victim@d.test>\r\nDATA\r\nsmuggled\r\n"
                                 b".\r\nQUIT\r\n")
                self.assertEqual(out.count("queued as"), 1, out)
            self.assertEqual(d.stop(), 0)
            listing = d.queue("list")
            self.assertNotIn("evil@s.test", listing)
            self.assertNotIn("victim@d.test", listing)
            self.assertEqual(listing.count("from <a@s.test>"), 4)
        finally:
            if d.proc.poll() is None:
                d.stop()

    def test_untrusted_clients_cannot_relay(self):
        d = Daemon('[relay]\ntrusted_networks = ["10.0.0.0/8"]\n')
        try:
            with d.smtp() as s:
                with self.assertRaises(smtplib.SMTPRecipientsRefused) as e:
                    s.sendmail("a@s.test", ["b@d.test"], "Subject: x\r\n\r\nx\r\n")
                code, msg = e.exception.recipients["b@d.test"]
                self.assertEqual(code, 554)
                self.assertIn(b"5.7.1", msg)
        finally:
            d.stop()

    def test_limits_size_recipients_idle(self):
        d = Daemon('[smtp]\nmax_message_size = "10KiB"\nmax_recipients = 2\n'
                   'command_timeout = "1s"\n')
        try:
            with d.smtp() as s:
                # smtplib declares SIZE: refused at MAIL, before the data.
                with self.assertRaises(smtplib.SMTPSenderRefused) as e:
                    s.sendmail("a@s.test", ["b@d.test"], "x" * 20000)
                self.assertEqual(e.exception.smtp_code, 552)
            out = raw_dialog(d.port, b"EHLO c\r\nMAIL FROM:<a@s.test>\r\n"
                             b"RCPT TO:<b@d.test>\r\nDATA\r\n" + b"y" * 20000 +
                             b"\r\n.\r\nQUIT\r\n")
            self.assertIn("552 5.3.4", out)
            with d.smtp() as s:
                refused = s.sendmail("a@s.test", ["1@d.test", "2@d.test", "3@d.test"],
                                     "Subject: x\r\n\r\nx\r\n")
                self.assertEqual(refused["3@d.test"][0], 452)
            with socket.create_connection(("127.0.0.1", d.port), timeout=5) as c:
                self.assertTrue(c.recv(512).startswith(b"220"))
                time.sleep(1.5)
                self.assertIn(b"421 4.4.2", c.recv(512))
        finally:
            d.stop()

    def test_bdat_and_pipelining(self):
        d = Daemon()
        try:
            chunk = b"Subject: chunked\r\n\r\n.\r\nnot the end\r\n"
            out = raw_dialog(d.port, b"EHLO c\r\nMAIL FROM:<a@s.test>\r\n"
                             b"RCPT TO:<b@d.test>\r\nBDAT %d LAST\r\n" % len(chunk)
                             + chunk + b"QUIT\r\n")
            self.assertIn("queued as", out)
            self.assertEqual(d.stop(), 0)
            ident = d.queue("list").split()[0]
            self.assertIn("not the end", d.queue("show", ident, "--body"))
        finally:
            if d.proc.poll() is None:
                d.stop()

    def test_mail_is_dkim_signed_once_at_reception(self):
        key = os.path.join(TMP, "rcv.key")
        if os.path.exists(key):
            os.unlink(key)
        out = subprocess.run([PEREGRINE, "dkim", "keygen", "--domain", "sender.test",
                              "--selector", "s1", "--type", "ed25519", "--out", key],
                             capture_output=True, text=True, check=True).stdout
        record = "".join(re.findall(r'"([^"]*)"',
                                    re.search(r"^  Value: (.*)$", out, re.M).group(1)))
        d = Daemon(f'[[dkim.keys]]\ndomain = "sender.test"\nselector = "s1"\n'
                   f'key_file = "{key}"\n')
        try:
            with d.smtp() as s:
                s.sendmail("a@sender.test", ["b@dest.test", "c@other.test"],
                           "From: A <a@sender.test>\r\nTo: b@dest.test\r\n"
                           "Subject: signed\r\n\r\nhello\r\n")
            self.assertEqual(d.stop(), 0)
            ident = d.queue("list").split()[0]
            shown = d.queue("show", ident, "--body")
            body = shown[shown.index("\n\n") + 2:].encode()
            self.assertEqual(body.count(b"DKIM-Signature:"), 1)  # Once, not per rcpt.
            self.assertTrue(dkim.verify(
                body.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n"),
                dnsfunc=lambda name, timeout=5: record.encode()))
        finally:
            if d.proc.poll() is None:
                d.stop()

    def insecure(self):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def test_starttls_and_implicit_tls_with_a_self_signed_certificate(self):
        d = Daemon()
        try:
            with d.smtp() as s:
                self.assertIn("starttls", s.ehlo_resp.decode().lower()
                              if s.ehlo_resp else s.ehlo()[1].decode().lower())
                code, _ = s.starttls(context=self.insecure())
                self.assertEqual(code, 220)
                self.assertIn("TLS", s.sock.version())
                s.ehlo()
                self.assertNotIn("starttls", s.ehlo_resp.decode().lower())
                s.sendmail("a@s.test", ["b@d.test"], "Subject: tls\r\n\r\nx\r\n")
            with smtplib.SMTP_SSL("127.0.0.1", d.submissions, context=self.insecure(),
                                  local_hostname="c.test", timeout=10) as s:
                self.assertEqual(s.ehlo()[0], 250)
                self.assertEqual(s.mail("a@s.test")[0], 530)  # AUTH needed.
            with smtplib.SMTP("127.0.0.1", d.submission, local_hostname="c.test",
                              timeout=10) as s:
                s.ehlo()
                code, msg = s.mail("a@s.test")
                self.assertEqual(code, 530)
                self.assertIn(b"STARTTLS", msg)
                s.rset()
                s.starttls(context=self.insecure())
                s.ehlo()
                # AUTH is offered after STARTTLS even with no users yet.
                self.assertIn("AUTH PLAIN LOGIN", s.ehlo_resp.decode())
                self.assertEqual(s.mail("a@s.test")[0], 530)
            self.assertEqual(d.stop(), 0)
            self.assertTrue(os.path.exists(os.path.join(d.data, "tls", "self-signed.crt")))
            ident = d.queue("list").split()[0]
            self.assertIn("with ESMTPS", d.queue("show", ident, "--body"))
        finally:
            if d.proc.poll() is None:
                d.stop()

    def test_starttls_injection_is_not_executed(self):
        d = Daemon()
        try:
            raw = socket.create_connection(("127.0.0.1", d.port), timeout=5)
            raw.recv(512)
            raw.sendall(b"EHLO c\r\n")
            time.sleep(0.2)
            raw.recv(4096)
            # Commands after STARTTLS in the same packet must be dropped.
            raw.sendall(b"STARTTLS\r\nMAIL FROM:<evil@s.test>\r\n")
            self.assertTrue(raw.recv(512).startswith(b"220 2.0.0"))
            tls = self.insecure().wrap_socket(raw)
            tls.sendall(b"RCPT TO:<victim@d.test>\r\n")
            reply = tls.recv(512)
            self.assertTrue(reply.startswith(b"503"), reply)  # No MAIL happened.
            tls.close()
        finally:
            d.stop()

    def test_configured_certificate_and_bad_certificate(self):
        keydir = tempfile.mkdtemp(dir=TMP)
        crt, key = os.path.join(keydir, "c.pem"), os.path.join(keydir, "k.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", key, "-out", crt, "-days", "2", "-subj",
                        "/CN=mail.example.test"], check=True, capture_output=True)
        d = Daemon(f'[tls]\ncert_file = "{crt}"\nkey_file = "{key}"\n')
        try:
            with d.smtp() as s:
                s.starttls(context=self.insecure())
                cert = s.sock.getpeercert(binary_form=True)
                with open(crt) as f:
                    self.assertEqual(cert, ssl.PEM_cert_to_DER_cert(f.read()))
        finally:
            d.stop()
        bad = os.path.join(keydir, "bad.pem")
        with open(bad, "w") as f:
            f.write("not a certificate")
        data = tempfile.mkdtemp(dir=TMP)
        cfg = os.path.join(data, "bad.toml")
        with open(cfg, "w") as f:
            f.write(f'[listen]\nrelay = "127.0.0.1:{free_port()}"\nsubmission = []\n'
                    f'submissions = []\nadmin = []\n[tls]\ncert_file = "{bad}"\n'
                    f'key_file = "{key}"\n')
        r = subprocess.run([PEREGRINE, "serve", "--config", cfg, "--data-dir", data],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("tls.cert_file", r.stderr)
        self.assertIn(bad, r.stderr)

    def test_submission_with_auth(self):
        data = tempfile.mkdtemp(dir=TMP)
        r = subprocess.run([PEREGRINE, "user", "add", "app", "--data-dir", data],
                           input="correct-horse\n", capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        d = Daemon("[smtp]\nreceived_shows_auth_user = true\n", data=data)
        try:
            with smtplib.SMTP("127.0.0.1", d.submission, local_hostname="c.test",
                              timeout=10) as s:
                s.ehlo()
                self.assertNotIn("auth", s.ehlo_resp.decode().lower())  # No TLS yet.
                s.starttls(context=self.insecure())
                s.ehlo()
                self.assertIn("AUTH PLAIN LOGIN", s.ehlo_resp.decode())
                with self.assertRaises(smtplib.SMTPAuthenticationError) as e:
                    s.login("app", "wrong-password")
                self.assertEqual(e.exception.smtp_code, 535)
                s.login("app", "correct-horse")
                s.sendmail("app@sender.test", ["x@anywhere.test"],
                           "Subject: via submission\r\n\r\nhi\r\n")
            with smtplib.SMTP_SSL("127.0.0.1", d.submissions, context=self.insecure(),
                                  local_hostname="c.test", timeout=10) as s:
                s.ehlo()
                s.esmtp_features["auth"] = "LOGIN"  # Force AUTH LOGIN.
                s.login("app", "correct-horse")
                s.sendmail("app@sender.test", ["y@anywhere.test"], "Subject: 465\r\n\r\nhi\r\n")
            self.assertEqual(d.stop(), 0)
            log = open(os.path.join(d.data, "daemon.log")).read()
            self.assertIn("auth ok client=127.0.0.1 user=app", log)
            # Failures are summed up once a minute (auth: in the last ...),
            # not logged per attempt: a guessing client would flood the log.
            self.assertNotIn("auth failed", log)
            self.assertEqual(log.count("auth=app"), 2)
            listing = d.queue("list")
            self.assertIn("x@anywhere.test", listing)
            self.assertIn("y@anywhere.test", listing)
            ident = listing.split()[0]
            body = d.queue("show", ident, "--body")
            self.assertIn("(authenticated as app)", body)
            self.assertIn("with ESMTPSA", body)
        finally:
            if d.proc.poll() is None:
                d.stop()

    def test_queue_can_be_inspected_while_the_daemon_runs(self):
        d = Daemon()
        try:
            with d.smtp() as s:
                for i in range(3):
                    s.sendmail("a@src.test", [f"r{i}@live.test"],
                               f"Subject: live {i}\r\n\r\nx\r\n")
            r = subprocess.run([PEREGRINE, "queue", "list", "--data-dir",
                                d.data], capture_output=True, text=True,
                               timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("read-only view", r.stderr)
            for i in range(3):
                self.assertIn(f"r{i}@live.test", r.stdout)
            stats = subprocess.run([PEREGRINE, "queue", "stats",
                                    "--data-dir", d.data],
                                   capture_output=True, text=True, timeout=30)
            self.assertEqual(stats.returncode, 0, stats.stderr)
            self.assertIn("live.test", stats.stdout)
            self.assertRegex(stats.stdout,
                             r"spool: 1 segment files and 0 spares, "
                             r"[0-9.]+ MiB on disk")
            self.assertEqual(d.stop(), 0)  # The view changed nothing.
            self.assertEqual(d.queue("list").count("@live.test"), 3)
        finally:
            if d.proc.poll() is None:
                d.stop()

    def test_connection_limits(self):
        d = Daemon('[relay]\ntrusted_networks = ["10.0.0.0/8"]\n'
                   '[smtp]\nmax_connections_per_client = 2\n')
        try:
            def greeted():
                # The daemon may not have seen an earlier close yet (the
                # start-up probe, held[0]): try again for a while.
                deadline = time.time() + 5
                while True:
                    c = socket.create_connection(("127.0.0.1", d.port),
                                                 timeout=5)
                    banner = c.recv(512)
                    if banner.startswith(b"220") or time.time() > deadline:
                        self.assertTrue(banner.startswith(b"220"), banner)
                        return c
                    c.close()
                    time.sleep(0.1)

            held = [greeted(), greeted()]
            with socket.create_connection(("127.0.0.1", d.port), timeout=5) as c:
                self.assertTrue(c.recv(512).startswith(b"421 4.7.0"))
            held[0].close()
            greeted().close()
            # A drain does not wait for idle clients: they are told 421.
            started = time.time()
            self.assertEqual(d.stop(), 0)
            self.assertLess(time.time() - started, 5)
            self.assertTrue(held[1].recv(512).startswith(b"421 4.3.2"))
            held[1].close()
        finally:
            if d.proc.poll() is None:
                d.stop()

    def test_swaks_pipelining_tls_and_auth(self):
        data = tempfile.mkdtemp(dir=TMP)
        subprocess.run([PEREGRINE, "user", "add", "app", "--data-dir", data],
                       input="correct-horse\n", capture_output=True, text=True,
                       check=True)
        d = Daemon(data=data)

        def swaks(*args):
            return subprocess.run(["swaks", "--from", "app@sender.test",
                                   "--to", "someone@dest.test", "--helo", "c.test",
                                   "--timeout", "10", *args],
                                  capture_output=True, text=True, timeout=60)
        try:
            r = swaks("--server", f"127.0.0.1:{d.port}", "--pipeline")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("queued as", r.stdout)
            r = swaks("--server", f"127.0.0.1:{d.port}", "--tls")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("TLS started", r.stdout)
            for mech in ("PLAIN", "LOGIN"):
                r = swaks("--server", f"127.0.0.1:{d.submission}", "--tls",
                          "--auth", mech, "--auth-user", "app",
                          "--auth-password", "correct-horse")
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertIn("235 2.7.0", r.stdout)
            r = swaks("--server", f"127.0.0.1:{d.submissions}", "--tls-on-connect",
                      "--auth", "PLAIN", "--auth-user", "app",
                      "--auth-password", "correct-horse")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            r = swaks("--server", f"127.0.0.1:{d.submission}", "--tls",
                      "--auth", "PLAIN", "--auth-user", "app",
                      "--auth-password", "wrong")
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("535 5.7.8", r.stdout)
            self.assertEqual(d.stop(), 0)
            self.assertEqual(d.queue("list").count("someone@dest.test"), 5)
        finally:
            if d.proc.poll() is None:
                d.stop()

    def test_received_names_the_verified_client(self):
        work = tempfile.mkdtemp(dir=TMP)
        port = free_port()
        with open(os.path.join(work, "rev.zone"), "w") as f:
            f.write("$TTL 300\n@ IN SOA ns.test. a.test. 1 3600 600 86400 60\n"
                    "@ IN NS ns.test.\n2 IN PTR client.example.test.\n")
        with open(os.path.join(work, "fwd.zone"), "w") as f:
            f.write("$TTL 300\n@ IN SOA ns.test. a.test. 1 3600 600 86400 60\n"
                    "@ IN NS ns.test.\nclient IN A 127.0.0.2\n")
        with open(os.path.join(work, "nsd.conf"), "w") as f:
            f.write(f"""server:
  ip-address: 127.0.0.1@{port}
  port: {port}
  username: ""
  chroot: ""
  database: ""
  zonelistfile: "{work}/zone.list"
  xfrdfile: "{work}/xfrd.state"
  pidfile: "{work}/nsd.pid"
  logfile: "{work}/nsd.log"
  xfrdir: "{work}"
  server-count: 1
  rrl-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: "0.0.127.in-addr.arpa."
  zonefile: "{work}/rev.zone"
zone:
  name: "example.test."
  zonefile: "{work}/fwd.zone"
""")
        nsd = subprocess.Popen(["/usr/sbin/nsd", "-d", "-c", os.path.join(work, "nsd.conf")])
        d = None
        try:
            time.sleep(0.5)
            d = Daemon(f'[dns]\nservers = ["127.0.0.1:{port}"]\n')
            # From 127.0.0.2: 127.0.0.1 is "localhost" without a lookup.
            with smtplib.SMTP("127.0.0.1", d.port, local_hostname="c.test",
                              source_address=("127.0.0.2", 0), timeout=10) as s:
                time.sleep(0.3)  # The PTR check runs while the client talks.
                s.sendmail("a@s.test", ["b@d.test"], "Subject: ptr\r\n\r\nx\r\n")
            self.assertEqual(d.stop(), 0)
            ident = d.queue("list").split()[0]
            self.assertIn("(client.example.test [127.0.0.2])",
                          d.queue("show", ident, "--body"))
        finally:
            if d is not None and d.proc.poll() is None:
                d.stop()
            nsd.terminate()
            nsd.wait()

    def test_auth_without_tls_only_when_configured(self):
        data = tempfile.mkdtemp(dir=TMP)
        subprocess.run([PEREGRINE, "user", "add", "app", "--data-dir", data],
                       input="correct-horse\n", capture_output=True, text=True,
                       check=True)
        d = Daemon("[auth]\nallow_without_tls = true\n", data=data)
        try:
            with smtplib.SMTP("127.0.0.1", d.submission, local_hostname="c.test",
                              timeout=10) as s:
                s.ehlo()
                self.assertIn("AUTH PLAIN LOGIN", s.ehlo_resp.decode())
                s.login("app", "correct-horse")
                s.sendmail("app@sender.test", ["z@d.test"], "Subject: p\r\n\r\nx\r\n")
        finally:
            d.stop()

    def test_load_from_postfix_smtp_source(self):
        d = Daemon()
        try:
            r = subprocess.run(["/usr/sbin/smtp-source", "-s", "20", "-m", "2000",
                                "-l", "10240", "-d", "-N", "-f", "load@sender.test",
                                "-t", "rcpt@dest.test", f"127.0.0.1:{d.port}"],
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertEqual(d.stop(), 0)
            stats = d.queue("stats")
            self.assertIn("messages 2000, recipients 2000", stats)
        finally:
            if d.proc.poll() is None:
                d.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
