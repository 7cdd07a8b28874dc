#!/usr/bin/env python3
"""Roles and secret env in host mode, against a real containerd: an operator certificate may
apply, exec, read logs and dmesg but is refused machine-config apply, update push, the debug
container and reboot; a reader sees every env value redacted and is refused exec and dmesg; a
secret env value is redacted for the admin too while the container gets the real value, and
re-applying the same manifest is unchanged. Every refusal is PERMISSION_DENIED naming the role
and the method."""

import json
import os
import subprocess
import time
import unittest

import grpc

import harness
from harness import wait_for
from test_containers import IMAGE, LOOP, WithImage

SECRET = "hunter2-s3cr3t"
MANIFEST = f"""kind: Container
name: {{name}}
image: {IMAGE}
command: ["sh", "-c", {json.dumps(LOOP)}, "{{name}}"]
restart: always
env:
  - {{{{name: DB_USER, value: app}}}}
  - {{{{name: DB_PASSWORD, value: "{{password}}", secret: true}}}}
"""


def channel(capsule, config):
    ca, cert, key = harness.load_client_context(config)
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    return grpc.secure_channel(capsule.endpoint, creds)


class RolesTest(WithImage):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pb = harness.proto_modules()
        cls.cfg = {}
        for role, user in (("operator", "olga"), ("reader", "rita")):
            cls.cfg[role] = os.path.join(cls.tmp, f"{role}-config")
            p = harness.ctl(["gen", "cert", "--role", role, "--name", user, "--secrets",
                             cls.capsule.secrets, "--endpoint", cls.capsule.endpoint, "-o",
                             cls.cfg[role]], check=True)
            assert f"role capsule:{role}" in p.stdout, p.stdout

    # -- helpers ---------------------------------------------------------------------------------

    def write(self, name, password=SECRET):
        path = os.path.join(self.tmp, f"{name}-{time.monotonic_ns()}.yaml")
        with open(path, "w") as f:
            f.write(MANIFEST.format(name=name, password=password))
        return path

    def ctl(self, args, role=None, **kw):
        return self.capsule.ctl(args, config=self.cfg[role] if role else None, **kw)

    def running(self, name, role=None):
        def get():
            w = json.loads(self.ctl(["-o", "json", "get", name], role, check=True).stdout)
            return w if w["status"]["phase"] == "Running" else None
        return wait_for(get, timeout=60, what=f"{name} running")

    def assert_denied(self, p, role, method):
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn("PERMISSION_DENIED", p.stderr.upper().replace(" ", "_"), p.stderr)
        self.assertIn(f"capsule:{role}", p.stderr)
        self.assertIn(method, p.stderr)

    def assert_rpc_denied(self, fn, role, method):
        with self.assertRaises(grpc.RpcError, msg=method) as cm:
            fn()
        self.assertEqual(cm.exception.code(), grpc.StatusCode.PERMISSION_DENIED, method)
        self.assertIn(f"capsule:{role}", cm.exception.details())
        self.assertIn(method, cm.exception.details())

    # -- tests -----------------------------------------------------------------------------------

    def test_operator_runs_workloads_but_not_the_machine(self):
        path = self.write("op-web")
        p = self.ctl(["apply", "-f", path], "operator", check=True)
        self.assertIn("op-web created", p.stdout)
        self.running("op-web", "operator")
        p = self.ctl(["exec", "op-web", "--", "sh", "-c", 'echo "$DB_PASSWORD"'], "operator", check=True)
        self.assertEqual(p.stdout.strip(), SECRET)
        wait_for(lambda: "started op-web" in self.ctl(["logs", "op-web"], "operator", check=True).stdout,
                 what="op-web's log")
        p = self.ctl(["dmesg"], "operator")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.ctl(["restart", "op-web"], "operator", check=True)
        # the operator sees its own secret redacted too
        w = json.loads(self.ctl(["-o", "json", "get", "op-web"], "operator", check=True).stdout)
        self.assertEqual(w["spec"]["env"], {"DB_USER": "app", "DB_PASSWORD": "<redacted>"})

        # the machine is the admin's: config, updates, the debug container, reboot
        self.assert_denied(self.ctl(["debug", "--", "true"], "operator", input=""), "operator",
                           "/capsule.v1.Workloads/Debug")
        sysm, upd = self.pb["system"], self.pb["updates"]
        with channel(self.capsule, self.cfg["operator"]) as ch:
            reboot = ch.unary_unary("/capsule.v1.System/Reboot",
                                    request_serializer=lambda m: m.SerializeToString(),
                                    response_deserializer=sysm.RebootResponse.FromString)
            self.assert_rpc_denied(lambda: reboot(sysm.RebootRequest(), timeout=10), "operator",
                                   "/capsule.v1.System/Reboot")
            self.assert_rpc_denied(lambda: reboot(sysm.RebootRequest(poweroff=True), timeout=10),
                                   "operator", "/capsule.v1.System/Reboot")
            mc = ch.unary_unary("/capsule.v1.System/ApplyMachineConfig",
                                request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=sysm.ApplyMachineConfigResponse.FromString)
            self.assert_rpc_denied(
                lambda: mc(sysm.ApplyMachineConfigRequest(config=b"hostname: x\n"), timeout=10),
                "operator", "/capsule.v1.System/ApplyMachineConfig")
            push = ch.stream_unary("/capsule.v1.Updates/Push",
                                   request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=upd.UpdatePushResponse.FromString)
            self.assert_rpc_denied(lambda: push(iter([upd.UpdatePushRequest()]), timeout=10),
                                   "operator", "/capsule.v1.Updates/Push")
            for name in ("Commit", "Rollback"):
                fn = ch.unary_unary(f"/capsule.v1.Updates/{name}",
                                    request_serializer=lambda m: m.SerializeToString(),
                                    response_deserializer=getattr(upd, f"Update{name}Response").FromString)
                self.assert_rpc_denied(lambda: fn(getattr(upd, f"Update{name}Request")(), timeout=10),
                                       "operator", f"/capsule.v1.Updates/{name}")
        mcfile = os.path.join(self.capsule.cfgdir, "machine.yaml")
        self.assertTrue(os.path.exists(mcfile))
        self.assert_denied(self.ctl(["machine-config", "apply", "-f", mcfile], "operator"),
                           "operator", "/capsule.v1.System/ApplyMachineConfig")
        # and nothing happened: the workload still runs, no debug container appeared
        self.running("op-web")
        self.ctl(["delete", "op-web"], "operator", check=True)

    def test_reader_sees_no_env_and_may_not_exec_or_dmesg(self):
        self.capsule.ctl(["apply", "-f", self.write("rd-web")], check=True)
        self.running("rd-web")
        w = json.loads(self.ctl(["-o", "json", "get", "rd-web"], "reader", check=True).stdout)
        self.assertEqual(w["spec"]["env"], {"DB_USER": "<redacted>", "DB_PASSWORD": "<redacted>"})
        self.assertEqual(w["spec"]["secretEnv"], ["DB_PASSWORD"])
        lst = json.loads(self.ctl(["-o", "json", "get"], "reader", check=True).stdout)
        mine = [x for x in lst["workloads"] if x["spec"]["name"] == "rd-web"]
        self.assertEqual(len(mine), 1)
        self.assertEqual(set(mine[0]["spec"]["env"].values()), {"<redacted>"})
        for args in (["-o", "yaml", "get", "rd-web"], ["describe", "rd-web"]):
            out = self.ctl(args, "reader", check=True).stdout
            self.assertNotIn(SECRET, out, args)
            self.assertNotIn("value: app", out, args)
            self.assertIn("<redacted>", out, args)
        # logs are readable (the manual's reader: get, list, logs, health, version)
        wait_for(lambda: "started rd-web" in self.ctl(["logs", "rd-web"], "reader", check=True).stdout,
                 what="rd-web's log")
        self.assert_denied(self.ctl(["exec", "rd-web", "--", "env"], "reader"), "reader",
                           "/capsule.v1.Workloads/Exec")
        self.assert_denied(self.ctl(["dmesg"], "reader"), "reader", "/capsule.v1.System/Dmesg")
        self.assert_denied(self.ctl(["apply", "-f", self.write("rd-web", "other")], "reader"),
                           "reader", "/capsule.v1.Workloads/Apply")
        # diff as a reader: the values are hidden on both sides, and it says they were not compared
        p = self.ctl(["diff", "-f", self.write("rd-web")], "reader")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("redacted env values not compared", p.stderr)
        self.assertNotIn(SECRET, p.stdout + p.stderr)
        self.capsule.ctl(["delete", "rd-web"], check=True)

    def test_secret_redacted_for_admin_but_real_in_the_container(self):
        env = dict(os.environ, CAPSULECONFIG=self.capsule.config, CAPSULE_HOST=self.capsule.endpoint)
        events = subprocess.Popen([harness.CAPSULECTL, "-o", "json", "events"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (events.kill(), events.communicate()))
        time.sleep(0.5)  # the stream is live only: let it start
        path = self.write("sec-web")
        p = self.capsule.ctl(["apply", "-f", path], check=True)
        self.assertIn("sec-web created", p.stdout)
        self.running("sec-web")
        w = json.loads(self.capsule.ctl(["-o", "json", "get", "sec-web"], check=True).stdout)
        self.assertEqual(w["spec"]["env"], {"DB_USER": "app", "DB_PASSWORD": "<redacted>"})
        y = self.capsule.ctl(["-o", "yaml", "get", "sec-web"], check=True).stdout
        self.assertIn('DB_PASSWORD: "<redacted>"', y)
        self.assertIn("DB_USER: app", y)
        # describe shows the spec as a manifest: the list form that marks the secret
        d = self.capsule.ctl(["describe", "sec-web"], check=True).stdout
        self.assertIn('{name: DB_PASSWORD, value: "<redacted>", secret: true}', d)
        self.assertIn("{name: DB_USER, value: app}", d)
        for args in (["describe", "sec-web"], ["-o", "json", "get"], ["-o", "yaml", "get"]):
            self.assertNotIn(SECRET, self.capsule.ctl(args, check=True).stdout, args)
        p = self.capsule.ctl(["exec", "sec-web", "--", "sh", "-c", 'echo "$DB_PASSWORD"'], check=True)
        self.assertEqual(p.stdout.strip(), SECRET)
        # the same manifest again: unchanged (the store has the real value), diff sees nothing
        p = self.capsule.ctl(["apply", "-f", self.write("sec-web")], check=True)
        self.assertIn("sec-web unchanged", p.stdout)
        p = self.capsule.ctl(["diff", "-f", self.write("sec-web")])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        # another secret value is a difference diff reports without showing either value
        p = self.capsule.ctl(["diff", "-f", self.write("sec-web", "changed-pw")])
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("a redacted env value differs", p.stdout)
        self.assertNotIn(SECRET, p.stdout)
        self.assertNotIn("changed-pw", p.stdout)
        # applying what the API shows would store "<redacted>": refused, nothing changes
        p = self.capsule.ctl(["apply", "-f", self.write("sec-web", "<redacted>")])
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn('value of "DB_PASSWORD" is "<redacted>"', p.stderr)
        p = self.capsule.ctl(["exec", "sec-web", "--", "sh", "-c", 'echo "$DB_PASSWORD"'], check=True)
        self.assertEqual(p.stdout.strip(), SECRET)
        self.capsule.ctl(["delete", "sec-web"], check=True)
        # neither the events nor serve's log carry the value
        events.terminate()
        out, _ = events.communicate(timeout=10)
        self.assertIn('"sec-web"', out)
        self.assertIn('"deleted"', out)
        self.assertNotIn(SECRET, out)
        self.assertNotIn(SECRET, self.capsule.logs())


if __name__ == "__main__":
    harness.main()
