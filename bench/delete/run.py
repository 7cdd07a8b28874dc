#!/usr/bin/env python3
"""bench/delete: `capsulectl delete` of N running containers whose PID 1 ignores SIGTERM, beside
the same stops and removals done with `ctr` on the same containerd, all at once, in one run.

    sudo bench/delete/run.py [--n 50] [--grace 10] [--build-dir build]

Two rows, each capsule vs ctr:
  graceful: `capsulectl delete NAME... --grace GRACEs` vs, for every container at once (one thread
            each): `ctr tasks kill` (SIGTERM), GRACE s, `ctr tasks kill -s SIGKILL`, `ctr tasks rm`,
            `ctr containers rm` (its snapshot too). The floor of both is one grace period.
  forced:   `capsulectl delete NAME... --force` vs the same without SIGTERM and grace.
capsule's side does more per workload (store, events, CNI DEL of its network, its log files), so
the time beyond the grace period divided by N is printed as the per-workload cost (the slope). Before stops ran in
parallel, the graceful row took N grace periods (506 s for 50 with a 10 s grace)."""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "integration"))

STUBBORN = 'trap "" TERM; while :; do sleep 1; done'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--grace", type=int, default=10, help="grace period in seconds")
    ap.add_argument("--build-dir", default=os.path.join(HERE, "..", "..", "build"))
    a = ap.parse_args()
    os.environ["CAPSULE_BUILD_DIR"] = os.path.abspath(a.build_dir)
    import harness
    import mkimage_busybox

    tmp = tempfile.mkdtemp(prefix="capsule-bench-delete-")
    cd = harness.Containerd(tmp).start()
    cap = harness.Capsule(tmp, containerd=cd.sock).start()
    image = mkimage_busybox.DEFAULT_NAME
    try:
        mkimage_busybox.build(tmp)
        archive = os.path.join(tmp, "busybox-oci.tar")
        cap.ctl(["image", "push", archive], check=True)
        cd.ctr(["images", "import", archive], check=True)

        def capsule_up(names):
            path = os.path.join(tmp, f"m{time.monotonic_ns()}.yaml")
            with open(path, "w") as f:
                f.write("---\n".join(
                    f"kind: Container\nname: {n}\nimage: {image}\n"
                    f"command: [\"sh\", \"-c\", {json.dumps(STUBBORN)}]\n" for n in names))
            cap.ctl(["apply", "-f", path], check=True)

            def all_running():
                p = cap.ctl(["-o", "json", "get"], check=True)
                ph = {w["spec"]["name"]: w["status"]["phase"] for w in json.loads(p.stdout)["workloads"]}
                return all(ph.get(n) == "Running" for n in names)
            harness.wait_for(all_running, timeout=600, interval=0.5, what=f"{len(names)} Running")

        def capsule_delete(names, args):
            t0 = time.perf_counter()
            cap.ctl(["delete", *names, *args], check=True, timeout=1800)
            return time.perf_counter() - t0

        def ctr_up(names):
            for n in names:
                cd.ctr(["run", "-d", image, n, "sh", "-c", STUBBORN], check=True)

        def ctr_stop_remove(name, grace):
            if grace:
                cd.ctr(["tasks", "kill", name])
                time.sleep(grace)
            cd.ctr(["tasks", "kill", "-s", "SIGKILL", name])
            while cd.ctr(["tasks", "rm", name]).returncode != 0:   # refused until it stopped
                time.sleep(0.05)
            cd.ctr(["containers", "rm", name], check=True)

        def ctr_delete(names, grace):
            t0 = time.perf_counter()
            ths = [threading.Thread(target=ctr_stop_remove, args=(n, grace)) for n in names]
            for t in ths:
                t.start()
            for t in ths:
                t.join()
            return time.perf_counter() - t0

        rows = []
        for label, grace, args in (("graceful", a.grace, ["--grace", f"{a.grace}s"]),
                                   ("forced", 0, ["--force"])):
            names = [f"{label[0]}{i}" for i in range(a.n)]
            capsule_up(names)
            c = capsule_delete(names, args)
            left = set(cd.ctr(["containers", "ls", "-q"]).stdout.split()) & set(names)
            if left:
                raise SystemExit(f"capsule left {len(left)} containers")
            ctr_names = [f"ctr-{n}" for n in names]
            ctr_up(ctr_names)
            r = ctr_delete(ctr_names, grace)
            rows.append((label, grace, c, r))

        print(f"delete, n={a.n} containers whose PID 1 ignores SIGTERM (all at once, both sides)")
        for label, grace, c, r in rows:
            print(f"  {label:8} grace {grace:2d} s: capsule {c:7.2f} s  ctr {r:7.2f} s  "
                  f"ratio {c / r:5.2f}  beyond the grace period: {(c - grace) / a.n * 1000:5.1f} ms per workload"
                  + (f"  (one after another: >= {a.n * grace} s)" if grace else ""))
    finally:
        cap.stop()
        cd.stop()
        harness.unmount_under(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
