#!/usr/bin/env python3
"""bench/container-start: time from `Apply` to phase Running for N containers through capsuled,
beside `ctr run -d` of the same image and command on the same containerd, in one run.

    sudo bench/container-start/run.py [--n 10] [--build-dir build]

Both sides start the same busybox image with the same command; capsule's side includes what a
workload gets on top (its store write, the reconciler, the log-writer, its network namespace).
Prints per-side median and p90 and the ratio capsule/ctr (goal <= 1.15)."""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "integration"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--build-dir", default=os.path.join(HERE, "..", "..", "build"))
    a = ap.parse_args()
    os.environ["CAPSULE_BUILD_DIR"] = os.path.abspath(a.build_dir)
    import grpc
    import harness
    import mkimage_busybox

    tmp = tempfile.mkdtemp(prefix="capsule-bench-")
    cd = harness.Containerd(tmp).start()
    cap = harness.Capsule(tmp, containerd=cd.sock).start()
    try:
        mkimage_busybox.build(tmp)
        cd.ctr(["images", "import", os.path.join(tmp, "busybox-oci.tar")], check=True)
        image = mkimage_busybox.DEFAULT_NAME
        script = 'trap "exit 0" TERM; while true; do sleep 1; done'
        pb = harness.proto_modules()
        wl = pb["workloads"]
        ca, cert, key = harness.load_client_context(cap.config)
        ch = grpc.secure_channel(cap.endpoint, grpc.ssl_channel_credentials(ca, key, cert))
        apply = ch.unary_unary("/capsule.v1.Workloads/Apply", request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=wl.ApplyResponse.FromString)
        get = ch.unary_unary("/capsule.v1.Workloads/Get", request_serializer=lambda m: m.SerializeToString(),
                             response_deserializer=wl.GetResponse.FromString)
        delete = ch.unary_unary("/capsule.v1.Workloads/Delete", request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=wl.DeleteResponse.FromString)

        def capsule_once(i):
            name = f"bench{i}"
            spec = wl.WorkloadSpec(name=name, image=image, command=["sh", "-c", script])
            t0 = time.perf_counter()
            apply(wl.ApplyRequest(spec=spec), timeout=30)
            while get(wl.GetRequest(name=name), timeout=30).workload.status.phase != wl.RUNNING:
                time.sleep(0.002)
            return time.perf_counter() - t0

        def ctr_once(i):
            name = f"ctrbench{i}"
            t0 = time.perf_counter()
            cd.ctr(["run", "-d", image, name, "sh", "-c", script], check=True)
            return time.perf_counter() - t0

        caps, ctrs = [], []
        # interleave so both sides see the same machine load
        for i in range(a.n):
            caps.append(capsule_once(i))
            ctrs.append(ctr_once(i))
        for i in range(a.n):
            delete(wl.DeleteRequest(name=f"bench{i}"), timeout=120)
            cd.ctr(["tasks", "kill", "-s", "SIGKILL", f"ctrbench{i}"])
        ch.close()

        def fmt(xs):
            xs = sorted(xs)
            return (f"median {statistics.median(xs) * 1000:7.1f} ms  p90 {xs[int(0.9 * (len(xs) - 1))] * 1000:7.1f} ms"
                    f"  min {xs[0] * 1000:7.1f} ms")
        print(f"container-start, n={a.n} (apply -> Running vs ctr run -d)")
        print(f"  capsule : {fmt(caps)}")
        print(f"  ctr run : {fmt(ctrs)}")
        print(f"  ratio (median capsule / median ctr): {statistics.median(caps) / statistics.median(ctrs):.2f}")
    finally:
        cap.stop()
        cd.stop()
        harness.unmount_under(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
