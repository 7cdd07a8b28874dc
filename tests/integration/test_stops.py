#!/usr/bin/env python3
"""Stops in parallel, in host mode against a real containerd + runc: `delete` of many workloads
whose PID 1 ignores SIGTERM takes about one grace period (not one per workload), `--grace` is
honoured, `--force` kills at once, bad grace values are refused and change nothing (client and
API), and `capsuled serve --stop-workloads-on-exit` (what --os does for a poweroff or reboot)
stops every workload at once within one grace period.

The time bounds below are functional assertions of parallelism, not benchmarks: stopping N
workloads one after another would take N grace periods, in parallel about one. Each bound is
generous (three grace periods of 5 s for twenty workloads, which also covers their removal:
~2 s of containerd work on a loaded 2-core machine) and far below
what a serial stop would take, so it fails only when the stops are serialised again."""

import json
import os
import sys
import time

import grpc

import harness
from harness import wait_for
from test_containers import WithImage, container

# busybox sh as PID 1 ignores SIGTERM anyway; the trap says so explicitly
STUBBORN = 'trap "" TERM; while :; do sleep 1; done'
# and one that exits at once on SIGTERM
POLITE = 'trap "exit 0" TERM; while :; do sleep 1; done'
N = 20
GRACE_S = 5


class StopsTest(WithImage):

    def apply_many(self, names, script):
        path = os.path.join(self.tmp, f"m{time.monotonic_ns()}.yaml")
        with open(path, "w") as f:
            f.write("---\n".join(container(n, script) for n in names))
        self.capsule.ctl(["apply", "-f", path], check=True)

    def phases(self):
        p = self.capsule.ctl(["-o", "json", "get"], check=True)
        return {w["spec"]["name"]: w["status"]["phase"] for w in json.loads(p.stdout)["workloads"]}

    def wait_running(self, names, timeout=90):
        wait_for(lambda: all(self.phases().get(n) == "Running" for n in names), timeout=timeout,
                 interval=0.5, what=f"{len(names)} workloads Running")

    def containers(self):
        return set(self.containerd.ctr(["containers", "ls", "-q"]).stdout.split())

    def timed_ctl(self, args, check=True, timeout=300):
        t0 = time.monotonic()
        p = self.capsule.ctl(args, check=check, timeout=timeout)
        return p, time.monotonic() - t0

    def test_delete_many_takes_one_grace_period(self):
        names = [f"stub{i}" for i in range(N)]
        self.apply_many(names, STUBBORN)
        self.wait_running(names)
        p, took = self.timed_ctl(["delete", *names, "--grace", f"{GRACE_S}s"])
        print(f"\n  delete of {N} with --grace {GRACE_S}s: {took:.2f} s", file=sys.stderr)
        # one line per workload, in the order asked
        self.assertEqual(p.stdout.splitlines(), [f"workload/{n} deleted" for n in names])
        # the grace period was honoured: none of them exits on SIGTERM, each waited for it
        self.assertGreaterEqual(took, GRACE_S)
        # serial stops would take N * GRACE_S = 100 s; parallel ones about GRACE_S (see the top)
        self.assertLess(took, 3 * GRACE_S, f"delete of {N} took {took:.1f} s")
        self.assertEqual(self.containers() & set(names), set())
        self.assertEqual(set(self.phases()) & set(names), set())

    def test_grace_is_honoured_and_polite_workloads_do_not_wait(self):
        self.apply_many(["slow", "quick"], STUBBORN)
        self.apply_many(["polite"], POLITE)
        self.wait_running(["slow", "quick", "polite"])
        _, took = self.timed_ctl(["delete", "slow", "--grace", "4s"])
        self.assertGreaterEqual(took, 4.0)           # not killed before its grace period
        self.assertLess(took, 4.0 + 10.0)            # and not the default 10 s on top
        _, took = self.timed_ctl(["delete", "quick", "--grace", "1500ms"])
        self.assertGreaterEqual(took, 1.5)
        self.assertLess(took, 10.0)                  # the default would be 10 s
        # a workload that exits on SIGTERM is gone at once, whatever the grace period
        _, took = self.timed_ctl(["delete", "polite", "--grace", "30s"])
        self.assertLess(took, 15.0)
        self.assertEqual(self.containers() & {"slow", "quick", "polite"}, set())

    def test_force_kills_at_once(self):
        self.apply_many(["forced", "zero"], STUBBORN)
        self.wait_running(["forced", "zero"])
        t0 = time.monotonic()
        self.capsule.ctl(["delete", "forced", "--force"], check=True)
        # SIGKILL without a grace period: well under the default 10 s (and any SIGTERM wait)
        self.assertLess(time.monotonic() - t0, 5.0)
        t0 = time.monotonic()
        self.capsule.ctl(["delete", "zero", "--grace", "0s"], check=True)   # the same as --force
        self.assertLess(time.monotonic() - t0, 5.0)
        self.assertEqual(self.containers() & {"forced", "zero"}, set())

    def test_bad_grace_is_refused_and_changes_nothing(self):
        self.apply_many(["keep"], STUBBORN)
        self.wait_running(["keep"])
        cases = [
            (["delete", "keep", "--grace", "5x"], "--grace 5x: expected a duration"),
            (["delete", "keep", "--grace", "5"], "--grace 5: expected a duration"),
            (["delete", "keep", "--grace", "-1s"], "--grace -1s: expected a duration"),
            (["delete", "keep", "--grace", "2h"], "--grace 2h: above the maximum of 1h"),
            (["delete", "keep", "--grace", "1s", "--force"], "either --grace or --force"),
        ]
        for args, needle in cases:
            p = self.capsule.ctl(args)
            self.assertEqual(p.returncode, 2, (args, p.stderr))
            self.assertIn(needle, p.stderr, args)
        # the API refuses out-of-range values by itself (another client than capsulectl)
        pb = harness.proto_modules()["workloads"]
        ca, cert, key = harness.load_client_context(self.capsule.config)
        creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
        with grpc.secure_channel(self.capsule.endpoint, creds) as ch:
            fn = ch.unary_unary("/capsule.v1.Workloads/Delete", request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=pb.DeleteResponse.FromString)
            for grace, needle in ((-1, "grace_ms: -1 is negative"),
                                  (3600001, "grace_ms: 3600001 is above the maximum of 3600000")):
                with self.assertRaises(grpc.RpcError) as cm:
                    fn(pb.DeleteRequest(name="keep", grace_ms=grace), timeout=10)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
                self.assertIn(needle, cm.exception.details())
        self.assertEqual(self.phases().get("keep"), "Running")
        self.assertIn("keep", self.containers())
        self.capsule.ctl(["delete", "keep", "--force"], check=True)

    def test_stop_workloads_on_exit_stops_all_at_once(self):
        names = [f"down{i}" for i in range(N)]
        self.apply_many(names, STUBBORN)
        self.wait_running(names)
        # a serve that stops every workload when it is stopped (what --os does for a reboot)
        self.assertEqual(self.capsule.stop(), 0)
        saved = self.capsule.extra_args
        self.capsule.extra_args = saved + ["--stop-workloads-on-exit", str(GRACE_S * 1000)]
        try:
            self.capsule.start()
            self.wait_running(names)             # adopted, still the same tasks
            t0 = time.monotonic()
            self.assertEqual(self.capsule.stop(timeout=60), 0)
            took = time.monotonic() - t0
            print(f"\n  serve exit stopping {N} with grace {GRACE_S}s: {took:.2f} s", file=sys.stderr)
        finally:
            self.capsule.extra_args = saved
        self.assertGreaterEqual(took, GRACE_S)
        self.assertLess(took, 3 * GRACE_S, f"stopping {N} at exit took {took:.1f} s")
        self.assertRegex(self.capsule.logs(), rf"stopped workloads={N} grace_ms={GRACE_S * 1000}")
        out = self.containerd.ctr(["tasks", "ls"]).stdout.splitlines()[1:]
        running = [l.split()[0] for l in out if l.split() and l.split()[0] in names and "RUNNING" in l]
        self.assertEqual(running, [])
        # still desired: a serve without the option starts them again, then they are deleted
        self.capsule.start()
        self.wait_running(names)
        self.capsule.ctl(["delete", *names, "--force"], check=True)
        self.assertEqual(self.containers() & set(names), set())


if __name__ == "__main__":
    harness.main()
