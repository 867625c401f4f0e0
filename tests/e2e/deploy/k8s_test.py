#!/usr/bin/python3
"""deploy/k8s: every file is valid YAML with the fields Kubernetes needs,
and the manifests agree with each other and with Peregrine: the kustomize
resources exist; the StatefulSet runs non-root with a read-only root file
system, no capabilities and a seccomp profile, probes /livez and /readyz
on the admin port, gives the drain more time than server.drain_timeout,
mounts the queue from a PersistentVolumeClaim and the configuration,
certificate, DKIM keys and tokens where peregrine.toml looks for them; the
Service maps 25/587/465 to the container's ports; the PDB selects the
pods; peregrine.toml parses and listens where the probes and ports point.
(kubectl is not in the test machine's packages; this is the schema check.)
"""
import os
import re
import tomllib
import unittest

import yaml

K8S = "deploy/k8s"


def load(name):
    with open(os.path.join(K8S, name)) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


class K8sTest(unittest.TestCase):
    def setUp(self):
        self.kust = load("kustomization.yaml")[0]
        self.sts = load("statefulset.yaml")[0]
        self.services = load("service.yaml")
        self.pdb = load("pdb.yaml")[0]
        with open(os.path.join(K8S, "peregrine.toml"), "rb") as f:
            self.toml = tomllib.load(f)

    def test_kustomization(self):
        self.assertEqual(self.kust["kind"], "Kustomization")
        for r in self.kust["resources"]:
            self.assertTrue(os.path.exists(os.path.join(K8S, r)), r)
        files = self.kust["configMapGenerator"][0]["files"]
        self.assertEqual(files, ["peregrine.toml"])
        for doc in [self.sts, self.pdb] + self.services:
            self.assertIn("apiVersion", doc)
            self.assertIn("kind", doc)
            self.assertIn("name", doc["metadata"])

    def test_statefulset(self):
        s = self.sts
        self.assertEqual((s["apiVersion"], s["kind"]), ("apps/v1", "StatefulSet"))
        spec = s["spec"]
        labels = spec["template"]["metadata"]["labels"]
        self.assertEqual(spec["selector"]["matchLabels"], labels)
        pod = spec["template"]["spec"]
        self.assertTrue(pod["securityContext"]["runAsNonRoot"])
        self.assertEqual(pod["securityContext"]["runAsUser"], 1000)
        self.assertIn(pod["securityContext"]["seccompProfile"]["type"],
                      ("RuntimeDefault", "Localhost"))
        drain = self.toml["server"]["drain_timeout"]
        seconds = int(re.fullmatch(r"(\d+)s", drain).group(1))
        self.assertGreater(pod["terminationGracePeriodSeconds"], seconds + 5)
        c = pod["containers"][0]
        self.assertEqual(c["image"], self.kust["images"][0]["name"])
        sc = c["securityContext"]
        self.assertTrue(sc["readOnlyRootFilesystem"])
        self.assertFalse(sc["allowPrivilegeEscalation"])
        self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        listen = self.toml["listen"]
        for name, key in (("smtp", "relay"), ("submission", "submission"),
                          ("submissions", "submissions"), ("admin", "admin")):
            self.assertEqual(listen[key], f"0.0.0.0:{ports[name]}", key)
        self.assertEqual(c["readinessProbe"]["httpGet"]["path"], "/readyz")
        self.assertEqual(c["livenessProbe"]["httpGet"]["path"], "/livez")
        self.assertEqual(c["startupProbe"]["httpGet"]["port"], "admin")
        self.assertIn("preStop", c["lifecycle"])
        self.assertIn("cpu", c["resources"]["requests"])
        self.assertIn("memory", c["resources"]["limits"])
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        self.assertEqual(mounts["data"], self.toml["server"]["data_dir"])
        self.assertTrue(self.toml["tls"]["cert_file"].startswith(mounts["tls"]))
        self.assertTrue(self.toml["admin"]["tokens_file"].startswith(
            mounts["admin"]))
        for key in self.toml["dkim"]["keys"]:
            self.assertTrue(key["key_file"].startswith(mounts["dkim"]))
        self.assertEqual(mounts["config"], "/etc/peregrine/peregrine.toml")
        volumes = {v["name"]: v for v in pod["volumes"]}
        self.assertEqual(volumes["config"]["configMap"]["name"],
                         self.kust["configMapGenerator"][0]["name"])
        for secret in ("tls", "dkim", "admin"):
            self.assertIn("secretName", volumes[secret]["secret"])
        claim = spec["volumeClaimTemplates"][0]
        self.assertEqual(claim["metadata"]["name"], "data")
        self.assertIn("storage", claim["spec"]["resources"]["requests"])
        self.assertIn(spec["serviceName"],
                      [svc["metadata"]["name"] for svc in self.services])

    def test_service_and_pdb(self):
        smtp = [s for s in self.services if s["spec"].get("type") ==
                "LoadBalancer"][0]
        ports = {p["port"]: p["targetPort"] for p in smtp["spec"]["ports"]}
        self.assertEqual(ports, {25: "smtp", 587: "submission",
                                 465: "submissions"})
        labels = self.sts["spec"]["template"]["metadata"]["labels"]
        for s in self.services:
            self.assertEqual(s["spec"]["selector"], labels)
        self.assertEqual(self.pdb["spec"]["selector"]["matchLabels"], labels)
        self.assertEqual(self.pdb["spec"]["maxUnavailable"], 1)


if __name__ == "__main__":
    unittest.main()
