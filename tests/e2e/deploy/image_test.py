#!/usr/bin/python3
"""The container image (bazel build //deploy:image), checked with Debian's
skopeo and umoci:

- its config: user 1000:1000, entrypoint and command, exposed ports, the
  data volume, the stop signal, labels;
- its root file system (umoci unpack): the binary, which runs there under
  chroot (its shared libraries are all in), CA certificates, tzdata, the
  peregrine user, the data directory owned by it; no shell and no package
  manager;
- reproducible: tools/oci_image.sh run twice more on the same binary gives
  the same manifest digest as Bazel's build;
- deploy/seccomp.json is the default profile plus the io_uring calls;
- where Podman can run containers, the archive loads, the container takes
  a message on its SMTP port as a non-root user, stops on SIGTERM with exit
  0, and the queue is still in the volume for the next container; where it
  cannot, the reason is printed and that part skipped.
"""
import json
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import PEREGRINE, TMP, free_port  # noqa: E402

ARCHIVE = os.path.abspath("deploy/image.tar")
LAYOUT = os.path.abspath("deploy/image.layout")


def run(*args, check=True, timeout=120):
    r = subprocess.run(list(args), capture_output=True, text=True,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{args}: {r.stdout}{r.stderr}")
    return r


def manifest_digest(layout):
    with open(os.path.join(layout, "index.json")) as f:
        return json.load(f)["manifests"][0]["digest"]


class ImageTest(unittest.TestCase):
    def test_config(self):
        c = json.loads(run("skopeo", "inspect", "--config",
                           f"oci-archive:{ARCHIVE}").stdout)["config"]
        self.assertEqual(c["User"], "1000:1000")
        self.assertEqual(c["Entrypoint"], ["/usr/local/bin/peregrine"])
        self.assertEqual(c["Cmd"], ["serve", "--config",
                                    "/etc/peregrine/peregrine.toml"])
        self.assertEqual(sorted(c["ExposedPorts"]),
                         ["2465/tcp", "2525/tcp", "2587/tcp", "8025/tcp"])
        self.assertEqual(list(c["Volumes"]), ["/var/lib/peregrine"])
        self.assertEqual(c["StopSignal"], "SIGTERM")
        self.assertEqual(c["Labels"]["org.opencontainers.image.title"],
                         "peregrine")
        inspect = json.loads(run("skopeo", "inspect",
                                 f"oci-archive:{ARCHIVE}").stdout)
        self.assertEqual(len(inspect["Layers"]), 1)

    def test_root_file_system(self):
        work = tempfile.mkdtemp(dir=TMP)
        layout = os.path.join(work, "layout")
        shutil.copytree(LAYOUT, layout)
        os.chmod(layout, 0o755)
        for root, dirs, files in os.walk(layout):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)
        stat = run("umoci", "stat", "--image", f"{layout}:peregrine").stdout
        self.assertIn("tools/oci_image.sh", stat)
        bundle = os.path.join(work, "bundle")
        run("umoci", "unpack", "--image", f"{layout}:peregrine", bundle)
        rootfs = os.path.join(bundle, "rootfs")
        for path in ("usr/local/bin/peregrine", "etc/ssl/certs/ca-certificates.crt",
                     "usr/share/zoneinfo/Europe/Paris",
                     "etc/peregrine/peregrine.toml"):
            self.assertTrue(os.path.exists(os.path.join(rootfs, path)), path)
        for path in ("bin/sh", "usr/bin/sh", "usr/bin/apt", "usr/bin/dpkg"):
            self.assertFalse(os.path.lexists(os.path.join(rootfs, path)), path)
        with open(os.path.join(rootfs, "etc/passwd")) as f:
            self.assertIn("peregrine:x:1000:1000:", f.read())
        data = os.stat(os.path.join(rootfs, "var/lib/peregrine"))
        self.assertEqual((data.st_uid, data.st_gid), (1000, 1000))
        # Every library the binary needs is in: it runs there.
        r = run("chroot", rootfs, "/usr/local/bin/peregrine", "--version")
        self.assertIn("peregrine", r.stdout + r.stderr)
        r = run("chroot", rootfs, "/usr/local/bin/peregrine", "config", "check",
                "/etc/peregrine/peregrine.toml")

    def test_reproducible(self):
        digests = {manifest_digest(LAYOUT)}
        for i in range(2):
            work = tempfile.mkdtemp(dir=TMP)
            run("tools/oci_image.sh", PEREGRINE, "deploy/image",
                f"{work}/layout", f"{work}/image.tar", timeout=300)
            digests.add(manifest_digest(f"{work}/layout"))
        self.assertEqual(len(digests), 1, digests)

    def test_seccomp_profile(self):
        with open("deploy/seccomp.json") as f:
            profile = json.load(f)
        allowed = [s for s in profile["syscalls"]
                   if "io_uring_setup" in s.get("names", [])]
        self.assertEqual(len(allowed), 1)
        self.assertEqual(allowed[0]["action"], "SCMP_ACT_ALLOW")
        self.assertEqual(sorted(allowed[0]["names"]),
                         ["io_uring_enter", "io_uring_register",
                          "io_uring_setup"])
        default = "/usr/share/containers/seccomp.json"
        if os.path.exists(default):
            sys.path.insert(0, "deploy")
            import make_seccomp
            with open(default) as f:
                self.assertEqual(profile,
                                 make_seccomp.with_io_uring(json.load(f)),
                                 "run deploy/make_seccomp.py > "
                                 "deploy/seccomp.json")

    def test_podman(self):
        if shutil.which("podman") is None:
            print("podman is not installed: container run skipped")
            self.skipTest("no podman")
        run("podman", "load", "-i", ARCHIVE, timeout=300)
        flags = ["--network=host", "--security-opt",
                 f"seccomp={os.path.abspath('deploy/seccomp.json')}"]
        probe = run("podman", "run", "--rm", *flags,
                    "localhost/peregrine:latest", "--version", check=False)
        if probe.returncode != 0:
            print("podman cannot run containers on this machine "
                  f"({probe.stderr.strip()}): container run skipped")
            self.skipTest("podman cannot run containers here")
        work = tempfile.mkdtemp(dir=TMP)
        os.chmod(work, 0o755)
        port = free_port()
        cfg = os.path.join(work, "peregrine.toml")
        with open(cfg, "w") as f:
            f.write('[server]\ndata_dir = "/var/lib/peregrine"\n'
                    f'[listen]\nrelay = "127.0.0.1:{port}"\nsubmission = []\n'
                    'submissions = []\nadmin = []\n[delivery]\nenabled = false\n'
                    '[queue]\nspool_reserve = "0"\n')
        os.chmod(cfg, 0o644)
        volume = f"peregrine-test-{os.getpid()}"
        name = f"peregrine-test-{os.getpid()}"
        mounts = ["-v", f"{volume}:/var/lib/peregrine",
                  "-v", f"{cfg}:/etc/peregrine/peregrine.toml:ro"]
        try:
            run("podman", "run", "-d", "--name", name, *flags, *mounts,
                "localhost/peregrine:latest")
            deadline = time.time() + 30
            while True:
                try:
                    s = smtplib.SMTP("127.0.0.1", port, timeout=10)
                    break
                except OSError:
                    if time.time() > deadline:
                        raise AssertionError(
                            run("podman", "logs", name, check=False).stderr)
                    time.sleep(0.2)
            with s:
                s.sendmail("a@src.test", ["kept@dest.test"],
                           "Subject: in a container\r\n\r\nbody\r\n")
            top = run("podman", "top", name, "user").stdout
            self.assertNotIn("root", top)
            run("podman", "stop", "-t", "30", name)
            code = run("podman", "inspect", name, "--format",
                       "{{.State.ExitCode}}").stdout.strip()
            self.assertEqual(code, "0")
            # The next container finds the message in the volume.
            r = run("podman", "run", "--rm", *flags, *mounts,
                    "localhost/peregrine:latest", "queue", "list",
                    "--data-dir", "/var/lib/peregrine")
            self.assertIn("kept@dest.test", r.stdout)
        finally:
            run("podman", "rm", "-f", name, check=False)
            run("podman", "volume", "rm", "-f", volume, check=False)


if __name__ == "__main__":
    unittest.main()
