#!/usr/bin/python3
"""Defects 11-13, the careless operator: an open relay in trusted_networks,
a string where a list belongs, a directory or a device as the configuration
file, and a certificate or DKIM key that does not exist. `config check`
used to say OK to each (or hang on /dev/zero); now each exits 2 naming the
setting and what to do, and `serve` refuses the same."""
import os
import subprocess
import sys
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import PEREGRINE, TMP  # noqa: E402


def check(path, timeout=10):
    return subprocess.run([PEREGRINE, "config", "check", path],
                          capture_output=True, text=True, timeout=timeout)


def write(name, text):
    path = os.path.join(TMP, name)
    with open(path, "w") as f:
        f.write(text)
    return path


class ConfigMistakesTest(unittest.TestCase):
    def test_each_mistake_exits_2_naming_it(self):
        cases = {
            "open4.toml": ('[relay]\ntrusted_networks = ["0.0.0.0/0"]\n',
                           "open relay"),
            "open6.toml": ('[relay]\ntrusted_networks = ["::/0"]\n',
                           "open relay"),
            "string.toml": ('[relay]\ntrusted_networks = "x"\n',
                            "a list of networks"),
            "cert.toml": ('[tls]\ncert_file = "/nonexistent/c.pem"\n'
                          'key_file = "/nonexistent/k.pem"\n',
                          "/nonexistent/c.pem"),
            "dkim.toml": ('[dkim]\nkeys = [{ domain = "example.com", '
                          'selector = "s", key_file = "/nonexistent/d.key" }]\n',
                          "/nonexistent/d.key"),
        }
        for name, (text, says) in cases.items():
            r = check(write(name, text))
            self.assertEqual(r.returncode, 2, name + r.stdout + r.stderr)
            self.assertIn(says, r.stderr, name)
            self.assertNotIn("OK", r.stdout, name)
        os.makedirs(os.path.join(TMP, "confdir"), exist_ok=True)
        r = check(os.path.join(TMP, "confdir"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("is a directory", r.stderr)
        r = check("/dev/zero", timeout=5)  # Used to hang.
        self.assertEqual(r.returncode, 2)
        r = subprocess.run(
            [PEREGRINE, "serve", "--config", os.path.join(TMP, "open4.toml"),
             "--data-dir", os.path.join(TMP, "data")],
            capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 2)
        self.assertIn("open relay", r.stderr)

    def test_a_public_trusted_network_is_a_warning(self):
        r = check(write("public.toml",
                        '[relay]\ntrusted_networks = ["198.51.100.0/24"]\n'))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("warning:", r.stderr)
        self.assertIn("198.51.100.0/24 is not a private", r.stderr)


if __name__ == "__main__":
    unittest.main()
