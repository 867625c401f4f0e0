#!/usr/bin/python3
"""MTA-STS (RFC 8461) end to end, in a network namespace of its own.

NSD serves the domains' MX, `_mta-sts` TXT and `mta-sts` A records; a
Python HTTPS server on 127.0.0.10:443 serves each domain's policy with a
certificate from a test CA made here (delivery.ca_file trusts it); SMTP
sinks on 127.0.0.2-4 offer STARTTLS with certificates from the same CA, or
no TLS at all. One message per domain, then the event log and the sinks say
what happened:

  enforce.test   enforce, MX allowed, sink verifies  -> delivered, mta-sts
  plain.test     no _mta-sts record                 -> delivered, opportunistic
  wrongmx.test   enforce, MX not in the policy      -> deferred, reason
  notls.test     enforce, sink without STARTTLS     -> deferred, reason
  mismatch.test  enforce, certificate of another name -> deferred
  testing.test   testing, sink without STARTTLS     -> delivered, noted
  slow.test      the policy server never answers    -> deferred, not sent
  badcert.test   the policy's certificate is wrong  -> deferred, not sent
  big.test       a policy past 64 KiB               -> deferred, not sent
  redirect.test  the policy URL redirects           -> deferred, not sent
  html.test      served as text/html                -> deferred, not sent
  broken.test    a policy without its mode          -> deferred, not sent
  refused.test   nothing listens at mta-sts.DOMAIN  -> deferred, not sent

TLS reporting (RFC 8460) is on with a 5 s period: enforce.test and
notls.test publish `_smtp._tls` records; their gzipped JSON reports arrive
by mail (at reports.test's sink, through the daemon's own relay) and by
HTTPS POST, and are read back with Python's email and gzip.

Then a restart with the policy server gone: the kept policy still applies.
"""
import email
import gzip
import http.server
import json
import os
import smtplib
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import (TMP, Daemon, Nsd,  # noqa: E402
                     enter_network_namespace, wait_until)
from tls_lib import TlsSink, make_ca  # noqa: E402

PORT = 2525  # Where every MX listens (delivery.port), on its own address.
HTTPS_IP = "127.0.0.10"
TLS_SINK, PLAIN_SINK, OTHER_SINK = "127.0.0.2", "127.0.0.3", "127.0.0.4"
REPORT_SINK = "127.0.0.5"

POLICIES = {
    "enforce.test": "version: STSv1\r\nmode: enforce\r\nmx: mx.enforce.test\r\n"
                    "max_age: 86400\r\n",
    "wrongmx.test": "version: STSv1\nmode: enforce\nmx: *.elsewhere.test\n"
                    "max_age: 86400\n",
    "notls.test": "version: STSv1\nmode: enforce\nmx: mx.notls.test\n"
                  "max_age: 86400\n",
    "mismatch.test": "version: STSv1\nmode: enforce\nmx: *.mismatch.test\n"
                     "max_age: 86400\n",
    "testing.test": "version: STSv1\nmode: testing\nmx: mx.testing.test\n"
                    "max_age: 86400\n",
    "badcert.test": "version: STSv1\nmode: enforce\nmx: mx.badcert.test\n"
                    "max_age: 86400\n",
    "html.test": "version: STSv1\nmode: enforce\nmx: mx.html.test\n"
                 "max_age: 86400\n",
    "broken.test": "version: STSv1\nmx: mx.broken.test\nmax_age: 86400\n",
    "big.test": "version: STSv1\nmode: enforce\nmx: mx.big.test\n"
                "max_age: 86400\n" + "x: " + "y" * 70000 + "\n",
}
SINK_OF = {"enforce.test": TLS_SINK, "plain.test": TLS_SINK,
           "wrongmx.test": TLS_SINK, "notls.test": PLAIN_SINK,
           "mismatch.test": OTHER_SINK, "testing.test": PLAIN_SINK,
           "slow.test": PLAIN_SINK, "badcert.test": PLAIN_SINK,
           "big.test": PLAIN_SINK, "redirect.test": PLAIN_SINK,
           "html.test": PLAIN_SINK, "broken.test": PLAIN_SINK,
           "refused.test": PLAIN_SINK}


class PolicyServer:
    """HTTPS on HTTPS_IP:443 answering /.well-known/mta-sts.txt by Host."""

    def __init__(self, cert, key):
        self.hits = []
        self.posts = []  # (Content-Type, body) of each POST /tlsrpt.

        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if self.path == "/tlsrpt":
                    server.posts.append(
                        (self.headers.get("Content-Type"), body))
                    self.send_response(201)
                else:
                    self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                host = self.headers.get("Host", "").split(":")[0]
                domain = host.removeprefix("mta-sts.")
                server.hits.append(domain)
                if self.path != "/.well-known/mta-sts.txt":
                    self.send_error(404)
                    return
                if domain == "slow.test":
                    time.sleep(8)  # Past the daemon's fetch timeout.
                    return
                if domain == "redirect.test":
                    self.send_response(301)
                    self.send_header("Location",
                                     "https://mta-sts.enforce.test/"
                                     ".well-known/mta-sts.txt")
                    self.end_headers()
                    return
                body = POLICIES.get(domain)
                if body is None:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type",
                                 "text/html" if domain == "html.test"
                                 else "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer((HTTPS_IP, 443), Handler)
        self.httpd.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket,
                                                server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def zones():
    z = {}
    for domain, sink in SINK_OF.items():
        records = [f"@ IN MX 10 mx.{domain}.", f"mx IN A {sink}"]
        if domain != "plain.test":
            https = "127.0.0.11" if domain == "refused.test" else HTTPS_IP
            records += ['_mta-sts IN TXT "v=STSv1; id=20261128T01;"',
                        f"mta-sts IN A {https}"]
        if domain in ("enforce.test", "notls.test"):
            rua = "mailto:rpt@reports.test"
            if domain == "enforce.test":
                rua += ",https://mta-sts.enforce.test/tlsrpt"
            records.append(f'_smtp._tls IN TXT "v=TLSRPTv1; rua={rua}"')
        z[domain] = records
    z["reports.test"] = ["@ IN MX 10 mx.reports.test.",
                         f"mx IN A {REPORT_SINK}"]
    return z


class MtaStsTest(unittest.TestCase):
    def check_reports(self, sink, policy):
        """The TLS reports (RFC 8460) that came by mail and by POST: summed
        over the periods they cover, enforce.test has its delivery and
        notls.test its STARTTLS failures."""
        def reports():
            out = []
            for data in list(sink.data):
                m = email.message_from_bytes(data)
                self.assertEqual(m.get_content_type(), "multipart/report")
                self.assertEqual(m.get_param("report-type"), "tlsrpt")
                self.assertIn("Report Domain:", m["Subject"])
                parts = [p for p in m.walk()
                         if p.get_content_type() == "application/tlsrpt+gzip"]
                self.assertEqual(len(parts), 1)
                self.assertTrue(parts[0].get_filename().endswith(".json.gz"))
                out.append((m["TLS-Report-Domain"],
                            json.loads(gzip.decompress(
                                parts[0].get_payload(decode=True)))))
            return out

        def totals(domain, found):
            ok, failed, types = 0, 0, set()
            for d, r in found:
                if d != domain:
                    continue
                for p in r["policies"]:
                    ok += p["summary"]["total-successful-session-count"]
                    failed += p["summary"]["total-failure-session-count"]
                    types |= {f["result-type"]
                              for f in p.get("failure-details", [])}
            return ok, failed, types

        self.assertTrue(wait_until(
            lambda: totals("enforce.test", reports())[0] >= 1 and
            totals("notls.test", reports())[1] >= 1 and policy.posts,
            timeout=30), f"{len(sink.data)} report mails, "
                         f"{len(policy.posts)} posts")
        found = reports()
        for domain, r in found:
            for field in ("organization-name", "date-range", "contact-info",
                          "report-id", "policies"):
                self.assertIn(field, r)
            self.assertEqual(r["organization-name"], "Peregrine test")
            self.assertEqual(r["policies"][0]["policy"]["policy-domain"],
                             domain)
            self.assertEqual(r["policies"][0]["policy"]["policy-type"], "sts")
        enforce = [r for d, r in found if d == "enforce.test"]
        self.assertIn("mode: enforce",
                      enforce[0]["policies"][0]["policy"]["policy-string"])
        self.assertEqual(totals("notls.test", found)[2],
                         {"starttls-not-supported"})
        kind, body = policy.posts[0]
        self.assertEqual(kind, "application/tlsrpt+gzip")
        posted = json.loads(gzip.decompress(body))
        self.assertEqual(posted["policies"][0]["policy"]["policy-domain"],
                         "enforce.test")

    def test_policies_decide_where_and_how_mail_goes(self):
        work = tempfile.mkdtemp(dir=TMP)
        ca, leaf = make_ca(work)
        https_names = [f"mta-sts.{d}" for d in SINK_OF if d != "badcert.test"]
        https_cert, https_key = leaf("https", https_names)
        mx_cert, mx_key = leaf("mx", ["mx.enforce.test", "mx.plain.test",
                                      "mx.wrongmx.test"])
        other_cert, other_key = leaf("other", ["someone-else.test"])
        nsd = Nsd(zones())
        policy = PolicyServer(https_cert, https_key)
        sinks = {TLS_SINK: TlsSink(TLS_SINK, PORT, mx_cert, mx_key),
                 PLAIN_SINK: TlsSink(PLAIN_SINK, PORT),
                 OTHER_SINK: TlsSink(OTHER_SINK, PORT, other_cert, other_key),
                 REPORT_SINK: TlsSink(REPORT_SINK, PORT)}
        config = (nsd.dns_config() +
                  f'[delivery]\nport = {PORT}\nca_file = "{ca}"\n'
                  'retry_first = "1s"\nretry_max = "2s"\n'
                  'idle_timeout = "1s"\nconnect_timeout = "2s"\n'
                  'mta_sts_fetch_timeout = "2s"\n'
                  '[tls_report]\nenabled = true\ninterval = "5s"\n'
                  'organization = "Peregrine test"\n')
        d = Daemon(config)
        stopped = False
        try:
            with d.smtp() as s:
                for domain in SINK_OF:
                    s.sendmail("app@src.test", [f"user@{domain}"],
                               f"Subject: to {domain}\r\n\r\nhello\r\n")

            def delivered():
                # The TLS reports' own mail to reports.test aside.
                return {r["recipient"]: r for r in d.events()
                        if r["type"] == "delivered" and
                        not r["recipient"].endswith("@reports.test")}

            def deferred():
                out = {}
                for r in d.events():
                    if r["type"] == "deferred":
                        out.setdefault(r["recipient"], r)
                return out

            want_delivered = {"user@enforce.test", "user@plain.test",
                              "user@testing.test"}
            want_deferred = set(f"user@{d}" for d in SINK_OF) - want_delivered
            self.assertTrue(wait_until(
                lambda: want_delivered <= set(delivered()) and
                want_deferred <= set(deferred()), timeout=40),
                f"delivered {sorted(delivered())}, "
                f"deferred {sorted(deferred())}")
            time.sleep(3)  # Retries of the deferred ones come and go.
            got = delivered()
            late = deferred()
            self.assertEqual(set(got), want_delivered)

            e = got["user@enforce.test"]
            self.assertEqual(e["tls_policy"], "mta-sts")
            self.assertTrue(e["tls"]["verified"], e)
            self.assertEqual(got["user@plain.test"]["tls_policy"],
                             "opportunistic")
            t = got["user@testing.test"]
            self.assertEqual(t["tls_policy"], "mta-sts-testing")
            self.assertIsNone(t["tls"])
            self.assertIn("MTA-STS policy (testing) would refuse", t["reason"])
            self.assertIn("starttls-not-supported", t["reason"])

            def reply(domain):
                return late[f"user@{domain}"]["reply"]
            self.assertIn("MTA-STS policy of wrongmx.test (enforce) allows "
                          "none of its MX hosts", reply("wrongmx.test"))
            self.assertIn("MTA-STS policy (enforce)", reply("notls.test"))
            self.assertIn("MTA-STS policy (enforce)", reply("mismatch.test"))
            self.assertIn("hostname mismatch", reply("mismatch.test"))
            self.assertEqual(late["user@mismatch.test"]["tls_failure"],
                             "certificate-host-mismatch")
            self.assertEqual(late["user@notls.test"]["tls_failure"],
                             "starttls-not-supported")
            self.assertEqual(late["user@slow.test"]["tls_failure"],
                             "sts-policy-fetch-error")
            self.assertEqual(late["user@broken.test"]["tls_failure"],
                             "sts-policy-invalid")
            for domain, why in (("slow.test", "Timeout"),
                                ("badcert.test", "SSL"),
                                ("big.test", "larger than 64 KiB"),
                                ("redirect.test", "redirects are not"),
                                ("html.test", "not text/plain"),
                                ("broken.test", "mode"),
                                ("refused.test", "connect")):
                self.assertIn(f"MTA-STS policy of {domain} is announced but "
                              "could not be fetched", reply(domain))
                self.assertIn(why, reply(domain), domain)

            # Never sent where a policy said no, nor while one was missing.
            self.assertEqual(sorted(sinks[PLAIN_SINK].recipients()),
                             ["user@testing.test"])
            self.assertEqual(sinks[OTHER_SINK].recipients(), [])
            self.assertEqual(sorted(sinks[TLS_SINK].recipients()),
                             ["user@enforce.test", "user@plain.test"])
            over_tls = {r: tls for rcpts, tls in sinks[TLS_SINK].messages
                        for r in rcpts}
            self.assertTrue(over_tls["user@enforce.test"])

            # One fetch per domain, not one per retry.
            self.assertEqual(policy.hits.count("enforce.test"), 1)
            self.assertLessEqual(policy.hits.count("slow.test"), 1)

            with open(d.log.name) as f:
                self.assertIn("mta-sts: enforce.test: policy fetched: mode "
                              "enforce", f.read())
            for r in sorted(late):
                print(r, "->", late[r]["reply"])

            self.check_reports(sinks[REPORT_SINK], policy)

            # The policy is kept: a restart without the policy server still
            # enforces it (and sends enforce.test's next mail over TLS).
            self.assertEqual(d.stop(), 0)
            stopped = True
            policy.stop()
            d.start()
            stopped = False
            with open(d.log.name) as f:
                self.assertIn("policies kept from before", f.read())
            with d.smtp() as s:
                s.sendmail("app@src.test", ["again@enforce.test"],
                           "Subject: again\r\n\r\nhello\r\n")
            self.assertTrue(wait_until(
                lambda: "again@enforce.test" in delivered(), timeout=20))
            self.assertEqual(delivered()["again@enforce.test"]["tls_policy"],
                             "mta-sts")
        except BaseException:
            with open(d.log.name) as f:
                print(f.read()[-6000:])
            raise
        finally:
            if not stopped and d.proc.poll() is None:
                d.stop()
            for s in sinks.values():
                s.stop()
            try:
                policy.stop()
            except Exception:
                pass
            nsd.stop()


if __name__ == "__main__":
    enter_network_namespace(__file__)
    unittest.main(verbosity=2)
