#!/usr/bin/env python3
"""bench/scale: a capsule with many idle workloads, at two counts, beside `ctr` on the same
containerd, in one run (issue 12: the cost per workload must be flat, nothing O(n^2) in serve).

    sudo bench/scale/run.py [--counts 50,200] [--volumes 20] [--build-dir build]

For each count N (host mode, real containerd, busybox `sleep` containers; the first V of them
mount one volume each):
  apply        `capsulectl apply` of the N manifests       vs `ctr run -d` of N (8 at once)
  all Running  apply -> every workload Running              (ctr: the runs returning)
  get          `capsulectl get` (median of 5)               vs `ctr tasks ls`
  pass         the reconciler's last full pass (capsule_reconcile_last_pass_seconds, after a kick)
  RSS          capsuled serve's resident memory with N running
  restart      serve stopped and started (workloads keep running) -> API + all N Running again,
               host mode's stand-in for a reboot with the workloads kept
  delete       `capsulectl delete --force` of all N        vs `ctr` kill+rm of N (8 at once)
then the slope of each row between the two counts, per workload (ms/workload or KiB/workload),
beside the per-workload cost at the smaller count: flat means the two are close."""

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "integration"))


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", default="50,200")
    ap.add_argument("--volumes", type=int, default=20)
    ap.add_argument("--build-dir", default=os.path.join(HERE, "..", "..", "build"))
    a = ap.parse_args()
    counts = [int(c) for c in a.counts.split(",")]
    os.environ["CAPSULE_BUILD_DIR"] = os.path.abspath(a.build_dir)
    import harness
    import mkimage_busybox

    tmp = tempfile.mkdtemp(prefix="capsule-bench-scale-")
    cd = harness.Containerd(tmp).start()
    cap = harness.Capsule(tmp, containerd=cd.sock).start()
    image = mkimage_busybox.DEFAULT_NAME
    results = {}
    try:
        mkimage_busybox.build(tmp)
        archive = os.path.join(tmp, "busybox-oci.tar")
        cap.ctl(["image", "push", archive], check=True)
        cd.ctr(["images", "import", archive], check=True)
        for i in range(a.volumes):
            cap.ctl(["volume", "create", f"v{i}", "--size", "16Mi"], check=True, timeout=120)

        def phases():
            p = cap.ctl(["-o", "json", "get"], check=True, timeout=120)
            return {w["spec"]["name"]: w["status"]["phase"] for w in json.loads(p.stdout).get("workloads", [])}

        def timed(fn):
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0

        def metric(name):
            out = cap.ctl(["metrics", name], check=True).stdout
            m = re.search(rf"^{name} ([0-9.e+-]+)$", out, re.M)
            return float(m.group(1)) if m else None

        for n in counts:
            names = [f"w{n}-{i}" for i in range(n)]
            docs = []
            for i, name in enumerate(names):
                d = f"kind: Container\nname: {name}\nimage: {image}\ncommand: [sleep, '1000000']\n"
                if i < a.volumes:
                    d += f"mounts:\n  - {{volume: v{i}, path: /data}}\n"
                docs.append(d)
            path = os.path.join(tmp, f"scale-{n}.yaml")
            with open(path, "w") as f:
                f.write("---\n".join(docs))
            r = {}
            t0 = time.perf_counter()
            cap.ctl(["apply", "-f", path], check=True, timeout=600)
            r["apply"] = time.perf_counter() - t0
            harness.wait_for(lambda: sum(1 for v in phases().values() if v == "Running") >= n,
                             timeout=1800, interval=0.5, what=f"{n} Running")
            r["running"] = time.perf_counter() - t0
            r["get"] = statistics.median(timed(lambda: cap.ctl(["get"], check=True, timeout=120))
                                         for _ in range(5))
            passes = metric("capsule_reconcile_passes_total") or 0
            cap.ctl(["apply", "-f", path], check=True, timeout=600)  # unchanged: a kick, no change
            harness.wait_for(lambda: (metric("capsule_reconcile_passes_total") or 0) >= passes + 2,
                             timeout=600, interval=0.2, what="two passes")
            r["pass"] = metric("capsule_reconcile_last_pass_seconds")
            time.sleep(2)
            r["rss_kb"] = rss_kb(cap.proc.pid)
            t0 = time.perf_counter()
            cap.stop(signal.SIGTERM, timeout=120)
            cap.start()
            harness.wait_for(lambda: sum(1 for v in phases().values() if v == "Running") >= n,
                             timeout=1800, interval=0.5, what=f"{n} Running after the restart")
            r["restart"] = time.perf_counter() - t0
            r["delete"] = timed(lambda: cap.ctl(["delete", "--force", *names], check=True, timeout=1800))

            # the same through ctr
            cnames = [f"ctr-{n}-{i}" for i in range(n)]
            with concurrent.futures.ThreadPoolExecutor(8) as ex:
                t0 = time.perf_counter()
                list(ex.map(lambda c: cd.ctr(["run", "-d", image, c, "sleep", "1000000"], check=True), cnames))
                r["ctr_run"] = time.perf_counter() - t0
                r["ctr_ls"] = statistics.median(timed(lambda: cd.ctr(["tasks", "ls"], check=True))
                                                for _ in range(5))

                def ctr_rm(c):
                    cd.ctr(["tasks", "kill", "-s", "SIGKILL", c])
                    while cd.ctr(["tasks", "rm", c]).returncode != 0:
                        time.sleep(0.05)
                    cd.ctr(["containers", "rm", c], check=True)
                t0 = time.perf_counter()
                list(ex.map(ctr_rm, cnames))
                r["ctr_rm"] = time.perf_counter() - t0
            results[n] = r

        print(f"scale: {', '.join(map(str, counts))} idle busybox containers ({a.volumes} with a volume), "
              "host mode, capsule vs ctr (8 at once) on the same containerd")
        rows = [("apply", "apply", "ctr_run", "s"), ("all Running", "running", "ctr_run", "s"),
                ("get / tasks ls", "get", "ctr_ls", "s"), ("reconcile pass", "pass", None, "s"),
                ("serve RSS", "rss_kb", None, "KiB"), ("restart -> all Running", "restart", None, "s"),
                ("delete --force", "delete", "ctr_rm", "s")]
        lo, hi = counts[0], counts[-1]
        for label, key, base, unit in rows:
            cells = []
            for n in counts:
                v = results[n][key]
                c = f"{v:9.0f} {unit}" if unit == "KiB" else f"{v:8.2f} {unit}"
                if base:
                    b = results[n][base]
                    c += f" (ctr {b:6.2f} s, ratio {v / b:5.2f})"
                cells.append(f"n={n}: {c}")
            scale = 1 if unit == "KiB" else 1000
            per = unit == "KiB" and "KiB" or "ms"
            slope = (results[hi][key] - results[lo][key]) / (hi - lo) * scale
            first = results[lo][key] / lo * scale
            print(f"  {label:24} " + "   ".join(cells) +
                  f"   slope {slope:7.2f} {per}/workload (at n={lo}: {first:7.2f} {per}/workload)")
    finally:
        cap.stop()
        cd.stop()
        harness.unmount_under(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
