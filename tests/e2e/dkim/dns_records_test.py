#!/usr/bin/python3
"""`peregrine dns-records`: the zone lines it prints load in NSD's zone
checker, name the configured host and egress address in MX, A and SPF, and
the DKIM TXT record it prints is the one that verifies (dkimpy) what
Peregrine signs with the configured key."""
import hashlib
import os
import re
import subprocess
import tempfile
import unittest

import dkim

PEREGRINE = os.path.abspath("mta/peregrine")
TMP = os.environ.get("TEST_TMPDIR", tempfile.gettempdir())


def run(args, stdin=None, check=True):
    r = subprocess.run([PEREGRINE] + args, input=stdin, capture_output=True,
                       timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"peregrine {args} failed: {r.stderr.decode()}")
    return r


class DnsRecordsTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(dir=TMP)
        self.key = os.path.join(self.dir, "s1.key")
        run(["dkim", "keygen", "--domain", "example.test", "--selector", "s1",
             "--out", self.key])
        self.cfg = os.path.join(self.dir, "peregrine.toml")
        with open(self.cfg, "w") as f:
            f.write('[server]\nhostname = "mail.example.test"\n'
                    '[[dkim.keys]]\ndomain = "example.test"\n'
                    f'selector = "s1"\nkey_file = "{self.key}"\n')

    def records(self, *extra):
        return run(["dns-records", "--domain", "example.test", "-c",
                    self.cfg, *extra]).stdout.decode()

    def test_the_records_load_and_name_this_host(self):
        out = self.records("--ip", "192.0.2.10", "--ip", "2001:db8::25")
        self.assertIn("example.test.\tIN MX\t10 mail.example.test.", out)
        self.assertIn("mail.example.test.\tIN A\t192.0.2.10", out)
        self.assertIn("mail.example.test.\tIN AAAA\t2001:db8::25", out)
        self.assertRegex(out, r'"v=spf1 ip4:192\.0\.2\.10 ip6:2001:db8::25 '
                              r'mx ~all"')
        self.assertIn('_dmarc.example.test.\tIN TXT\t"v=DMARC1; p=none; '
                      'rua=mailto:postmaster@example.test', out)
        self.assertIn("_smtp._tls.example.test.\tIN TXT", out)
        self.assertIn("10.2.0.192.in-addr.arpa.\tIN PTR\tmail.example.test.",
                      out)
        zone = os.path.join(self.dir, "example.test.zone")
        with open(zone, "w") as f:
            f.write("$TTL 3600\n"
                    "example.test. IN SOA ns.example.test. "
                    "hostmaster.example.test. 1 3600 600 86400 60\n"
                    "example.test. IN NS ns.example.test.\n"
                    "ns.example.test. IN A 192.0.2.1\n" + out)
        r = subprocess.run(["nsd-checkzone", "example.test", zone],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_the_dkim_record_verifies_what_peregrine_signs(self):
        out = self.records("--ip", "192.0.2.10")
        m = re.search(r"^s1\._domainkey\.example\.test\.\tIN TXT\t\( (.*) \)$",
                      out, re.M)
        self.assertIsNotNone(m, out)
        record = "".join(re.findall(r'"([^"]*)"', m.group(1))).encode()
        message = (b"From: Joe <joe@example.test>\r\nTo: x@example.net\r\n"
                   b"Subject: hi\r\n\r\nbody\r\n")
        signed = run(["dkim", "sign", "--key", self.key, "--domain",
                      "example.test", "--selector", "s1"],
                     stdin=message).stdout

        def lookup(name, timeout=5):
            return record if name == b"s1._domainkey.example.test." else None
        self.assertTrue(dkim.verify(signed, dnsfunc=lookup))

    def test_the_tlsa_record_names_the_certificates_key(self):
        cert = os.path.join(self.dir, "mail.pem")
        key = os.path.join(self.dir, "mail.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                        key, "-out", cert, "-days", "2", "-subj",
                        "/CN=mail.example.test"], check=True,
                       capture_output=True)
        pub = subprocess.run(["openssl", "x509", "-in", cert, "-noout",
                              "-pubkey"], check=True,
                             capture_output=True).stdout
        der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"],
                             input=pub, check=True, capture_output=True).stdout
        with open(self.cfg, "a") as f:
            f.write(f'[tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n')
        out = self.records("--ip", "192.0.2.10")
        self.assertIn("_25._tcp.mail.example.test.\tIN TLSA\t3 1 1 " +
                      hashlib.sha256(der).hexdigest(), out)
        # A certificate file that holds none is named.
        with open(cert, "w") as f:
            f.write("not a certificate\n")
        r = run(["dns-records", "--domain", "example.test", "-c", self.cfg,
                 "--ip", "192.0.2.10"], check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"holds no certificate", r.stderr)

    def test_bad_input_is_named(self):
        r = run(["dns-records", "--domain", "not a domain"], check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"is not a domain", r.stderr)
        r = run(["dns-records", "--domain", "example.test", "--ip", "300.1.1.1"],
                check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"not an IP address", r.stderr)
        # No key for this domain: says how to make one.
        out = run(["dns-records", "--domain", "other.test", "-c", self.cfg,
                   "--ip", "192.0.2.10"]).stdout.decode()
        self.assertIn("peregrine dkim keygen --domain other.test", out)


if __name__ == "__main__":
    unittest.main()
