#!/usr/bin/python3
"""DANE for SMTP (RFC 7672) end to end, in a network namespace of its own.

The zone dane.test is signed here with ldns-signzone (ldnsutils) and served
by NSD on 127.0.0.1:5353 with two unsigned zones beside it; unbound on
127.0.0.1:53 validates with dane.test's key as its trust anchor, and the
daemon asks unbound (on loopback, so its AD bit is believed). SMTP sinks on
127.0.0.2-3 offer STARTTLS with self-signed certificates (no CA vouches for
them: only DANE can):

  user@dane.test       TLSA 3 1 1 of the sink's key   -> delivered, dane
  user@bad.dane.test   TLSA 3 1 1 of another key      -> deferred, DANE reason
  user@plain.test      unsigned                       -> delivered, opportunistic
  user@must.test       unsigned, tls_policy = "dane"  -> deferred, DANE required
  user@forged.dane.test  its answers fail validation  -> deferred, not sent
  user@unusable.dane.test  only a PKIX-TA(0) record   -> delivered over TLS,
                                                       dane-unauthenticated
  user@notls.dane.test   TLSA, no STARTTLS offered    -> deferred, not sent
  user@ta.dane.test      TLSA 2 1 1 of the CA that issued the sink's
                         certificate (DANE-TA, name checked) -> delivered
  user@taname.dane.test  the same CA, a certificate for another name
                                                    -> deferred, not sent
"""
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import (TMP, Daemon, Nsd,  # noqa: E402
                     enter_network_namespace, wait_until)
from tls_lib import TlsSink, make_ca, openssl  # noqa: E402

PORT = 2525
GOOD, BAD, PLAIN, TA = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.6"


def self_signed(work, name):
    key = os.path.join(work, f"{name}.key")
    cert = os.path.join(work, f"{name}.pem")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
            "-out", cert, "-days", "2", "-subj", f"/CN={name}")
    return cert, key


def spki_sha256(cert):
    pub = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-pubkey"],
                         check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"],
                         input=pub, check=True, capture_output=True).stdout
    return hashlib.sha256(der).hexdigest()


def signed_zone(work, records):
    """dane.test signed with a fresh key: (zone file, trust anchor line)."""
    path = os.path.join(work, "dane.test.zone")
    with open(path, "w") as f:
        f.write("$ORIGIN dane.test.\n$TTL 300\n"
                "@ IN SOA ns.dane.test. a.dane.test. 1 3600 600 86400 60\n"
                "@ IN NS ns.dane.test.\nns IN A 127.0.0.1\n" +
                "\n".join(records) + "\n")
    key = subprocess.run(["ldns-keygen", "-k", "-a", "ECDSAP256SHA256",
                          "dane.test"], cwd=work, check=True,
                         capture_output=True, text=True).stdout.strip()
    subprocess.run(["ldns-signzone", "-o", "dane.test", path, key], cwd=work,
                   check=True, capture_output=True)
    with open(os.path.join(work, key + ".key")) as f:
        anchor = f.read().split(";")[0].strip()
    return path + ".signed", anchor


class Unbound:
    def __init__(self, work, anchor, stubs, upstream):
        self.work = work
        conf = os.path.join(work, "unbound.conf")
        with open(conf, "w") as f:
            f.write(f"""server:
  interface: 127.0.0.1
  port: 53
  do-not-query-localhost: no
  username: ""
  chroot: ""
  directory: "{work}"
  pidfile: "{work}/unbound.pid"
  use-syslog: no
  logfile: "{work}/unbound.log"
  verbosity: 1
  val-log-level: 2
  access-control: 127.0.0.0/8 allow
  qname-minimisation: no
  module-config: "validator iterator"
  trust-anchor: "{anchor}"
  # RFC 6761 names are local zones by default: ask the stubs instead.
  local-zone: "test." nodefault
remote-control:
  control-enable: no
""")
            for zone in stubs:
                f.write(f'stub-zone:\n  name: "{zone}"\n'
                        f'  stub-addr: {upstream}\n')
        self.proc = subprocess.Popen(["unbound", "-d", "-c", conf],
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", 53), 0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("unbound did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class DaneTest(unittest.TestCase):
    def test_tlsa_records_decide(self):
        work = tempfile.mkdtemp(dir=TMP)
        good_cert, good_key = self_signed(work, "mx.dane.test")
        other_cert, _ = self_signed(work, "other")
        bad_cert, bad_key = self_signed(work, "mx.bad.dane.test")
        # DANE-TA: a CA no trust store knows; the sink presents its chain.
        ca, leaf = make_ca(work)
        ta_leaf, ta_key = leaf("ta", ["mx.ta.dane.test"])
        ta_chain = os.path.join(work, "ta-chain.pem")
        with open(ta_chain, "w") as out:
            out.write(open(ta_leaf).read() + open(ca).read())
        zone, anchor = signed_zone(work, [
            "@ IN MX 10 mx.dane.test.",
            f"mx IN A {GOOD}",
            f"_{PORT}._tcp.mx IN TLSA 3 1 1 {spki_sha256(good_cert)}",
            "bad IN MX 10 mx.bad.dane.test.",
            f"mx.bad IN A {BAD}",
            f"_{PORT}._tcp.mx.bad IN TLSA 3 1 1 {spki_sha256(other_cert)}",
            "forged IN MX 10 mx.forged.dane.test.",
            f"mx.forged IN A {GOOD}",
            "unusable IN MX 10 mx.unusable.dane.test.",
            f"mx.unusable IN A {GOOD}",
            f"_{PORT}._tcp.mx.unusable IN TLSA 0 0 1 {spki_sha256(good_cert)}",
            "notls IN MX 10 mx.notls.dane.test.",
            f"mx.notls IN A {PLAIN}",
            f"_{PORT}._tcp.mx.notls IN TLSA 3 1 1 {spki_sha256(good_cert)}",
            "ta IN MX 10 mx.ta.dane.test.",
            f"mx.ta IN A {TA}",
            f"_{PORT}._tcp.mx.ta IN TLSA 2 1 1 {spki_sha256(ca)}",
            "taname IN MX 10 mx.taname.dane.test.",
            f"mx.taname IN A {TA}",
            f"_{PORT}._tcp.mx.taname IN TLSA 2 1 1 {spki_sha256(ca)}",
        ])
        # An answer changed after signing: unbound refuses it (SERVFAIL).
        with open(zone) as f:
            text = f.read()
        text = text.replace(f"mx.forged.dane.test.\t300\tIN\tA\t{GOOD}",
                            f"mx.forged.dane.test.\t300\tIN\tA\t{BAD}")
        with open(zone, "w") as f:
            f.write(text)
        nsd = Nsd({"plain.test": ["@ IN MX 10 mx.plain.test.",
                                  f"mx IN A {GOOD}"],
                   "must.test": ["@ IN MX 10 mx.must.test.",
                                 f"mx IN A {GOOD}"]},
                  port=5353, files={"dane.test": zone})
        unbound = Unbound(work, anchor,
                          ["dane.test", "plain.test", "must.test"],
                          "127.0.0.1@5353")
        sinks = {GOOD: TlsSink(GOOD, PORT, good_cert, good_key),
                 BAD: TlsSink(BAD, PORT, bad_cert, bad_key),
                 PLAIN: TlsSink(PLAIN, PORT),
                 TA: TlsSink(TA, PORT, ta_chain, ta_key)}
        d = Daemon('[dns]\nservers = ["127.0.0.1:53"]\ntimeout = "1s"\n'
                   f'[delivery]\nport = {PORT}\n'
                   'retry_first = "1s"\nretry_max = "2s"\n'
                   'idle_timeout = "1s"\nconnect_timeout = "2s"\n'
                   '[[delivery.sites]]\ndomains = ["must.test"]\n'
                   'tls_policy = "dane"\n')
        try:
            with open(d.log.name) as f:
                self.assertIn("DANE is on", f.read())
            rcpts = ["user@dane.test", "user@bad.dane.test",
                     "user@plain.test", "user@must.test",
                     "user@forged.dane.test", "user@unusable.dane.test",
                     "user@notls.dane.test", "user@ta.dane.test",
                     "user@taname.dane.test"]
            with d.smtp() as s:
                for r in rcpts:
                    s.sendmail("app@src.test", [r],
                               f"Subject: to {r}\r\n\r\nhello\r\n")

            def latest(kind):
                return {e["recipient"]: e for e in d.events()
                        if e["type"] == kind}
            want_delivered = {"user@dane.test", "user@plain.test",
                              "user@unusable.dane.test", "user@ta.dane.test"}
            self.assertTrue(wait_until(
                lambda: want_delivered <= set(latest("delivered")) and
                set(rcpts) - want_delivered <= set(latest("deferred")),
                timeout=40), f"{sorted(latest('delivered'))} "
                             f"{sorted(latest('deferred'))}")
            got = latest("delivered")
            late = latest("deferred")
            for r in sorted(late):
                print(r, "->", late[r]["reply"])
            self.assertEqual(set(got), want_delivered)
            e = got["user@dane.test"]
            self.assertEqual(e["tls_policy"], "dane")
            self.assertTrue(e["tls"]["verified"], e)
            self.assertEqual(got["user@plain.test"]["tls_policy"],
                             "opportunistic")
            bad = late["user@bad.dane.test"]
            self.assertIn("DANE (_2525._tcp.mx.bad.dane.test)", bad["reply"])
            self.assertIn("no matching DANE TLSA records", bad["reply"])
            self.assertEqual(bad["tls_failure"], "tlsa-invalid")
            self.assertEqual(bad["tls_policy"], "dane")
            self.assertIn("DANE is required for must.test",
                          late["user@must.test"]["reply"])
            ta = got["user@ta.dane.test"]
            self.assertEqual(ta["tls_policy"], "dane")
            self.assertTrue(ta["tls"]["verified"], ta)
            self.assertEqual(sinks[TA].recipients(), ["user@ta.dane.test"])
            self.assertIn("hostname mismatch",
                          late["user@taname.dane.test"]["reply"])
            u = got["user@unusable.dane.test"]
            self.assertEqual(u["tls_policy"], "dane-unauthenticated")
            self.assertIsNotNone(u["tls"])
            self.assertIn("DANE (_2525._tcp.mx.notls.dane.test)",
                          late["user@notls.dane.test"]["reply"])
            self.assertIn("STARTTLS", late["user@notls.dane.test"]["reply"])
            self.assertEqual(sinks[BAD].recipients(), [])
            self.assertEqual(sinks[PLAIN].recipients(), [])
            self.assertEqual(sorted(sinks[GOOD].recipients()),
                             sorted(want_delivered - {"user@ta.dane.test"}))
            self.assertTrue(all(tls for _, tls in sinks[GOOD].messages))
        except BaseException:
            with open(d.log.name) as f:
                text = f.read()
            print(text[:5000], "\n...\n", text[-3000:])
            with open(os.path.join(work, "unbound.log")) as f:
                print(f.read()[-3000:])
            raise
        finally:
            if d.proc.poll() is None:
                d.stop()
            for s in sinks.values():
                s.stop()
            unbound.stop()
            nsd.stop()


if __name__ == "__main__":
    for tool in ("ldns-signzone", "unbound"):
        if shutil.which(tool) is None and not os.path.exists(
                f"/usr/sbin/{tool}"):
            print(f"{tool} is missing (scripts/install-deps.sh installs it)")
            sys.exit(1)
    enter_network_namespace(__file__)
    unittest.main(verbosity=2)
