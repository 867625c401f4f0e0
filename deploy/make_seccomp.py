#!/usr/bin/python3
"""Writes deploy/seccomp.json: the default seccomp profile of Podman and
CRI-O (Debian's containers-common, /usr/share/containers/seccomp.json) with
io_uring_setup, io_uring_enter and io_uring_register allowed, so Peregrine
keeps its io_uring backend in a container. Run it again when that package
changes; tests/e2e/deploy/image_test.py checks the file is still this.

    deploy/make_seccomp.py [DEFAULT_PROFILE] > deploy/seccomp.json
"""
import json
import sys

IO_URING = ["io_uring_enter", "io_uring_register", "io_uring_setup"]


def with_io_uring(profile):
    out = json.loads(json.dumps(profile))
    out["syscalls"] = [s for s in out["syscalls"]
                       if s.get("names") != IO_URING]
    out["syscalls"].append({
        "names": IO_URING,
        "action": "SCMP_ACT_ALLOW",
        "args": [],
        "comment": "Peregrine's io_uring backend (mta/shard/uring_backend.h)",
        "includes": {},
        "excludes": {},
    })
    return out


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else \
        "/usr/share/containers/seccomp.json"
    with open(path) as f:
        json.dump(with_io_uring(json.load(f)), sys.stdout, indent=2)
    sys.stdout.write("\n")
