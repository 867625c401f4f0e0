#!/usr/bin/python3
"""Every signature Peregrine makes verifies with dkimpy (Debian python3-dkim).

Keys come from `peregrine dkim keygen`, and the public key given to dkimpy is
the TXT record exactly as keygen printed it, quoted strings joined as a DNS
resolver would. Both algorithms, all four canonicalization pairs, and the
awkward messages: empty body, no final CRLF, trailing white space, folded
and duplicated headers, 8-bit text, very long lines.
"""
import os
import re
import subprocess
import tempfile
import unittest

import dkim

PEREGRINE = os.path.abspath("mta/peregrine")
TMP = os.environ.get("TEST_TMPDIR", tempfile.gettempdir())

HEAD = (b"From: Joe SixPack <joe@example.test>\r\n"
        b"To: Suzie Q <suzie@example.net>\r\n"
        b"Subject: Is dinner ready?\r\n"
        b"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
        b"Message-ID: <20030712040037.46341.5F8J@example.test>\r\n")

MESSAGES = {
    "plain": HEAD + b"\r\nHi.\r\n\r\nWe lost the game. Are you hungry yet?\r\n",
    "empty_body": HEAD + b"\r\n",
    "no_body_at_all": HEAD,
    "no_final_crlf": HEAD + b"\r\nlast line without end",
    "trailing_white_space": HEAD + b"\r\nline  \t\r\n  \r\n\r\n\r\n",
    "white_space_runs": HEAD + b"\r\n a  b\t\tc \r\n",
    "folded_headers": (b"From: Joe <joe@example.test>\r\nSubject: a long\r\n"
                       b"\tfolded  subject\r\n   continued\r\nTo: x@example.net\r\n"
                       b"\r\nbody\r\n"),
    "duplicated_headers": (b"From: Joe <joe@example.test>\r\nTo: a@example.net\r\n"
                           b"To: b@example.net\r\nSubject: one\r\n"
                           b"Subject: two\r\n\r\nbody\r\n"),
    "eight_bit": HEAD.replace(b"dinner", b"d\xc3\xaener") +
                 b"\r\ncaf\xc3\xa9 \xe2\x82\xac 100\r\n",
    "long_lines": HEAD + b"\r\n" + b"x" * 20000 + b"\r\n" + b"y " * 5000 + b"\r\n",
    "list_unsubscribe": HEAD + (
        b"List-Unsubscribe: <mailto:u@example.test>, <https://example.test/u>\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\nhi\r\n"),
}

CANONS = ["relaxed/relaxed", "simple/simple", "relaxed/simple", "simple/relaxed"]


def run(args, stdin=None):
    r = subprocess.run([PEREGRINE] + args, input=stdin, capture_output=True,
                       timeout=60)
    if r.returncode != 0:
        raise AssertionError(f"peregrine {args} failed: {r.stderr.decode()}")
    return r.stdout


class DkimpyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.keys = {}
        for kind, selector, extra in (("rsa", "rsa2048", ["--bits", "2048"]),
                                      ("ed25519", "ed", [])):
            path = os.path.join(TMP, f"{selector}.key")
            if os.path.exists(path):
                os.unlink(path)
            out = run(["dkim", "keygen", "--domain", "example.test",
                       "--selector", selector, "--type", kind, "--out", path]
                      + extra).decode()
            value_line = re.search(r"^  Value: (.*)$", out, re.M).group(1)
            record = "".join(re.findall(r'"([^"]*)"', value_line))
            assert re.search(rf"^  Name:  {selector}\._domainkey\.example\.test$",
                             out, re.M), out
            assert oct(os.stat(path).st_mode & 0o777) == "0o600"
            cls.keys[selector] = (path, record.encode())

    def dns(self, selector):
        record = self.keys[selector][1]

        def lookup(name, timeout=5):
            if name == f"{selector}._domainkey.example.test.".encode():
                return record
            return None
        return lookup

    def sign(self, selector, message, canon):
        return run(["dkim", "sign", "--key", self.keys[selector][0],
                    "--domain", "example.test", "--selector", selector,
                    "--canonicalization", canon], stdin=message)

    def test_every_signature_verifies(self):
        checked = 0
        for selector in self.keys:
            for canon in CANONS:
                for name, message in MESSAGES.items():
                    with self.subTest(selector=selector, canon=canon, msg=name):
                        signed = self.sign(selector, message, canon)
                        self.assertTrue(signed.endswith(message))
                        self.assertTrue(
                            dkim.verify(signed, dnsfunc=self.dns(selector)),
                            signed[:600])
                        checked += 1
        self.assertEqual(checked, 2 * len(CANONS) * len(MESSAGES))

    def test_tampering_is_caught(self):
        for selector in self.keys:
            signed = self.sign(selector, MESSAGES["plain"], "relaxed/relaxed")
            self.assertFalse(dkim.verify(signed.replace(b"hungry", b"angry"),
                                         dnsfunc=self.dns(selector)))
            self.assertFalse(dkim.verify(
                signed.replace(b"Subject: Is", b"Subject: Was"),
                dnsfunc=self.dns(selector)))
            # An added second From breaks the over-signed From.
            added = signed.replace(b"\r\n\r\n",
                                   b"\r\nFrom: evil@example.org\r\n\r\n", 1)
            self.assertFalse(dkim.verify(added, dnsfunc=self.dns(selector)))

    def test_two_signatures_on_one_message(self):
        once = self.sign("ed", MESSAGES["plain"], "relaxed/relaxed")
        twice = self.sign("rsa2048", once, "relaxed/relaxed")
        both = {**{k: v for k, v in self.keys.items()}}

        def lookup(name, timeout=5):
            for selector, (_, record) in both.items():
                if name == f"{selector}._domainkey.example.test.".encode():
                    return record
            return None
        d = dkim.DKIM(twice)
        self.assertTrue(d.verify(idx=0, dnsfunc=lookup))
        self.assertTrue(d.verify(idx=1, dnsfunc=lookup))


if __name__ == "__main__":
    unittest.main(verbosity=2)
