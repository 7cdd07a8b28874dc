#!/usr/bin/env python3
"""capsulectl as kubectl/talosctl users expect it, against two host-mode capsules: global options
anywhere on the line, fleets (--capsule a,b: NODE column, per-capsule apply, a capsule down),
`get -w`, `logs A B` and `--since`, bash completion from the live capsule, and a drift check
between every verb's --help and docs/cli.md. Capsule "a" runs workloads on a real containerd;
capsule "b" has none (its workloads stay stored, which is all the fleet checks need)."""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import harness
import mkimage_busybox
from harness import Capsule, Containerd, wait_for

IMAGE = mkimage_busybox.DEFAULT_NAME
DOCS = os.path.join(harness.SOURCE_DIR, "docs", "cli.md")


def manifest(name, script="trap 'exit 0' TERM; while true; do sleep 1; done"):
    return (f"kind: Container\nname: {name}\nimage: {IMAGE}\n"
            f"command: [\"sh\", \"-c\", {json.dumps(script)}, \"{name}\"]\nrestart: always\n")


def ctl_env(config, host=None):
    env = dict(os.environ)
    env["CAPSULECONFIG"] = config
    env.pop("CAPSULE_HOST", None)
    if host:
        env["CAPSULE_HOST"] = host
    return env


class DocsDriftTest(unittest.TestCase):
    """Every verb (and sub-verb) has a man-page-like --help, and docs/cli.md documents it and each
    of its options. No capsule needed."""

    OPT = re.compile(r"^\s{1,4}((?:-[A-Za-z](?:, )?)?(?:--[a-z][a-z0-9-]*)?)(?=[ ,=]|$)")

    def help(self, words):
        p = harness.ctl(words + ["--help"], env=ctl_env("/nonexistent"))
        self.assertEqual(p.returncode, 0, f"{words} --help: {p.stderr}")
        return p.stdout

    def verbs(self):
        text = self.help([])
        block = text.split("Verbs:\n", 1)[1].split("\n\n", 1)[0]
        return [l.split()[0] for l in block.splitlines() if l.strip()]

    def subs(self, verb):
        p = harness.ctl(["__complete", verb, ""], env=ctl_env("/nonexistent"), timeout=20)
        return [l for l in p.stdout.splitlines() if l]

    def options(self, text):
        """Options of a --help text: the option column of the lines in its Options section."""
        if "\nOptions:\n" not in text:
            return {}
        block = text.split("\nOptions:\n", 1)[1].split("\n\n", 1)[0]
        opts, last = {}, None
        for line in block.splitlines():
            m = self.OPT.match(line)
            if m and m.group(1).strip(" ,"):
                names = re.findall(r"--?[A-Za-z][a-z0-9-]*", m.group(1))
                last = tuple(names)
                opts[last] = line
            elif last:
                opts[last] += " " + line.strip()
        return opts

    def doc_section(self, docs, words):
        key = "`" + " ".join(words)
        for m in re.finditer(r"^#{2,4} .*$", docs, re.M):
            heading = m.group(0)
            if re.search(re.escape(key) + r"[ `]", heading):
                end = re.search(r"^#{2,4} ", docs[m.end():], re.M)
                return docs[m.start():m.end() + (end.start() if end else len(docs))]
        return None

    def test_help_and_docs_agree(self):
        with open(DOCS) as f:
            docs = f.read()
        verbs = self.verbs()
        for v in ["get", "logs", "completion", "exec", "image", "volume", "update"]:
            self.assertIn(v, verbs)
        problems, checked = [], 0
        for verb in verbs:
            subs = self.subs(verb) if verb in ("image", "volume", "gen", "config", "completion",
                                               "machine-config", "update") else []
            targets = [[verb, s] for s in subs if verb != "completion"] or [[verb]]
            for words in targets:
                text = self.help(words)
                checked += 1
                if not text.startswith("usage: capsulectl " + " ".join(words)):
                    problems.append(f"{' '.join(words)} --help: no synopsis")
                if not re.search(r"^Examples?:", text, re.M):
                    problems.append(f"{' '.join(words)} --help: no example")
                section = self.doc_section(docs, words)
                if section is None:
                    problems.append(f"docs/cli.md: no section for `{' '.join(words)}`")
                    continue
                for names, line in self.options(text).items():
                    if "default" not in line:
                        problems.append(f"{' '.join(words)} --help: {'/'.join(names)} has no default")
                    for n in names:
                        if not re.search(r"(?<![\w-])" + re.escape(n) + r"(?![\w-])", section):
                            problems.append(f"docs/cli.md `{' '.join(words)}`: option {n} undocumented")
        self.assertGreater(checked, 25)
        self.assertEqual(problems, [], "\n".join(problems))

    def test_global_options_documented(self):
        with open(DOCS) as f:
            docs = f.read()
        opts = re.findall(r"^  (?:-o, )?(--[a-z]+)", self.help([]), re.M)
        self.assertIn("--capsule", opts)
        for opt in opts:
            self.assertTrue(re.search(rf"`{opt}[ `=]", docs), f"docs/cli.md: global option {opt}")

    def test_unknown_option_is_named(self):
        p = harness.ctl(["get", "--bogus"], env=ctl_env("/nonexistent"))
        self.assertEqual(p.returncode, 2)
        self.assertIn("--bogus", p.stderr)


class CliTest(unittest.TestCase):
    """Two capsules: a (with containerd, runs workloads) and b (store only)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="capsule-cli-")
        cls.containerd = Containerd(cls.tmp).start()
        cls.a = Capsule(os.path.join(cls.tmp, "a"), name="home",
                        containerd=cls.containerd.sock).start()
        # b shares a's PKI so that one client config (and one fleet line) reaches both
        bdir = os.path.join(cls.tmp, "b")
        os.makedirs(bdir)
        shutil.copytree(cls.a.cfgdir, os.path.join(bdir, "cfg"))
        cls.b = Capsule(bdir, name="home").start()
        mkimage_busybox.build(cls.tmp)
        cls.a.ctl(["image", "push", os.path.join(cls.tmp, "busybox-oci.tar")], check=True)
        cls.config = cls.a.config
        cls.fleet = f"{cls.a.endpoint},{cls.b.endpoint}"

    @classmethod
    def tearDownClass(cls):
        try:
            for c in (cls.a, cls.b):
                c.stop()
        finally:
            cls.containerd.stop()
            harness.unmount_under(cls.tmp)
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def ctl(self, args, host=None, check=False, timeout=60):
        return harness.ctl(args, env=ctl_env(self.config, host), check=check, timeout=timeout)

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    # -- flags anywhere --------------------------------------------------------------------------

    def test_flags_anywhere(self):
        self.ctl(["apply", "-f", self.write("fa.yaml", manifest("fa"))], host=self.a.endpoint,
                 check=True)
        for args in (["get", "fa", "-o", "json"], ["-o", "json", "get", "fa"],
                     ["get", "-o", "json", "fa"], ["get", "--output=json", "fa"],
                     ["get", "fa", "--capsule", self.a.endpoint, "-ojson"]):
            p = self.ctl(args, host=self.a.endpoint)
            self.assertEqual(p.returncode, 0, f"{args}: {p.stderr}")
            self.assertEqual(json.loads(p.stdout)["spec"]["name"], "fa", args)
        p = self.ctl(["get", "fa", "-o", "yaml"], host=self.a.endpoint, check=True)
        self.assertRegex(p.stdout, r"(?m)^  name: fa$")
        # after "--" everything is the command's, -o included
        wait_for(lambda: "Running" in self.ctl(["get", "fa"], host=self.a.endpoint).stdout,
                 timeout=30, what="fa running")
        p = self.ctl(["exec", "fa", "-o", "json", "--", "echo", "-o", "x"], host=self.a.endpoint)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, "-o x\n")
        p = self.ctl(["get", "fa", "--bogus"], host=self.a.endpoint)
        self.assertEqual(p.returncode, 2)
        self.assertIn('"--bogus"', p.stderr)

    # -- fleets ----------------------------------------------------------------------------------

    def test_fleet_apply_and_get(self):
        path = self.write("fl.yaml", manifest("fleet1"))
        p = self.ctl(["apply", "-f", path, "--capsule", self.fleet])
        self.assertEqual(p.returncode, 0, p.stderr)
        for ep in (self.a.endpoint, self.b.endpoint):
            self.assertRegex(p.stdout, rf"(?m)^{re.escape(ep)}\s+container/fleet1 (created|unchanged)$")
        # each capsule really has it
        for c in (self.a, self.b):
            self.assertEqual(self.ctl(["get", "fleet1"], host=c.endpoint).returncode, 0)
        p = self.ctl(["--capsule", self.fleet, "get"])
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.splitlines()
        self.assertRegex(lines[0], r"^NODE\s+NAME\s+KIND\s+STATUS")
        self.assertEqual(sum(1 for l in lines if l.startswith("NODE")), 1)
        for ep in (self.a.endpoint, self.b.endpoint):
            self.assertTrue(any(re.match(rf"{re.escape(ep)}\s+fleet1\s", l) for l in lines), p.stdout)
        p = self.ctl(["get", "fleet1", "-o", "json", "--capsule", self.fleet])
        doc = json.loads(p.stdout)
        self.assertEqual([d["node"] for d in doc], [self.a.endpoint, self.b.endpoint])
        self.assertTrue(all(d["result"]["spec"]["name"] == "fleet1" for d in doc))

    def fleet_context(self, name, endpoints, extra=""):
        """A copy of the client config whose one context lists endpoints (`endpoints: [...]`)."""
        with open(self.config) as f:
            text = f.read()
        items = ", ".join(f'"{e}"' for e in endpoints)
        text, n = re.subn(r"(?m)^(\s*)endpoint: .*$",
                          lambda m: f"{m.group(1)}endpoints: [{items}]" +
                          (f"\n{m.group(1)}{extra}" if extra else ""), text)
        self.assertEqual(n, 1)
        return self.write(name, text)

    def test_fleet_context_with_endpoints(self):
        """A context holding two endpoints runs each verb on both capsules, as --capsule a,b does;
        with one of them down the other's result still comes and the exit code says so."""
        pair = self.fleet_context("pairconfig", [self.a.endpoint, self.b.endpoint])
        env = ctl_env(pair)
        p = harness.ctl(["config", "contexts", "-o", "json"], env=env, check=True)
        ctx = json.loads(p.stdout)["contexts"][0]
        self.assertEqual(ctx["endpoints"], [self.a.endpoint, self.b.endpoint])
        self.assertEqual(ctx["endpoint"], self.fleet)
        p = harness.ctl(["config", "contexts"], env=env, check=True)
        self.assertIn(self.fleet, p.stdout)
        p = harness.ctl(["apply", "-f", self.write("fc.yaml", manifest("fleetctx"))], env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        for ep in (self.a.endpoint, self.b.endpoint):
            self.assertRegex(p.stdout, rf"(?m)^{re.escape(ep)}\s+container/fleetctx (created|unchanged)$")
            self.assertEqual(self.ctl(["get", "fleetctx"], host=ep).returncode, 0)
        p = harness.ctl(["get"], env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.splitlines()
        self.assertRegex(lines[0], r"^NODE\s+NAME\s+KIND\s+STATUS")
        for ep in (self.a.endpoint, self.b.endpoint):
            self.assertTrue(any(re.match(rf"{re.escape(ep)}\s+fleetctx\s", l) for l in lines), p.stdout)
        # --capsule still overrides the context's list
        p = harness.ctl(["get", "fleetctx", "--capsule", self.b.endpoint], env=env, check=True)
        self.assertNotIn("NODE", p.stdout)

        down = f"127.0.0.1:{harness.free_port()}"
        half = self.fleet_context("halfconfig", [self.a.endpoint, down])
        p = harness.ctl(["--timeout", "5", "get"], env=ctl_env(half))
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertRegex(p.stdout, rf"(?m)^{re.escape(self.a.endpoint)}\s+fleetctx\s")
        self.assertIn(f"[{down}]", p.stderr)
        self.assertRegex(p.stderr, rf"1 of 2 capsules failed: {re.escape(down)}")
        p = harness.ctl(["--timeout", "5", "apply", "-f", self.write("fc2.yaml", manifest("fleetctx2"))],
                        env=ctl_env(half))
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertRegex(p.stdout, rf"(?m)^{re.escape(self.a.endpoint)}\s+container/fleetctx2 created$")
        self.assertRegex(p.stderr, rf"1 of 2 capsules failed: {re.escape(down)}")

        # a bad list is refused naming the field, and nothing is run
        bad = self.fleet_context("badconfig", [self.a.endpoint, f"{self.b.endpoint},{down}"])
        p = harness.ctl(["get"], env=ctl_env(bad))
        self.assertEqual(p.returncode, 1)
        self.assertIn("contexts[0].endpoints[1]", p.stderr)
        self.assertIn("is not HOST:PORT", p.stderr)
        both = self.fleet_context("bothconfig", [self.a.endpoint], extra=f"endpoint: {down}")
        p = harness.ctl(["get"], env=ctl_env(both))
        self.assertEqual(p.returncode, 1)
        self.assertIn("endpoint and endpoints are both set", p.stderr)
        for n in ("fleetctx", "fleetctx2"):
            self.ctl(["delete", n], host=self.a.endpoint)
        self.ctl(["delete", "fleetctx"], host=self.b.endpoint)

    def test_apply_prune(self):
        """apply --prune: a directory is the whole desired state; --dry-run shows and changes nothing;
        volumes are never pruned; a failed apply prunes nothing."""
        site = os.path.join(self.tmp, "site")
        os.makedirs(site)
        host = self.a.endpoint
        for n in ("keep1", "gone1"):
            with open(os.path.join(site, f"{n}.yaml"), "w") as f:
                f.write(manifest(n))
        with open(os.path.join(site, "vol.yaml"), "w") as f:
            f.write("kind: Volume\nname: prunevol\nsize: 16Mi\n")
        p = self.ctl(["apply", "-f", site], host=host)
        self.assertEqual(p.returncode, 0, p.stderr)
        os.remove(os.path.join(site, "gone1.yaml"))
        os.remove(os.path.join(site, "vol.yaml"))
        p = self.ctl(["apply", "-f", site, "--prune", "--dry-run"], host=host)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("workload/gone1 deleted (dry run: not declared)", p.stdout)
        self.assertNotIn("keep1 deleted", p.stdout)
        self.assertEqual(self.ctl(["get", "gone1"], host=host).returncode, 0, "dry run deleted nothing")
        # a manifest that fails to apply: nothing is pruned
        with open(os.path.join(site, "bad.yaml"), "w") as f:
            f.write("kind: Container\nname: badmount\nimage: x\nmounts: [{volume: nope, path: /d}]\n")
        p = self.ctl(["apply", "-f", site, "--prune"], host=host)
        self.assertNotEqual(p.returncode, 0)
        self.assertEqual(self.ctl(["get", "gone1"], host=host).returncode, 0, "a failed apply prunes nothing")
        os.remove(os.path.join(site, "bad.yaml"))
        p = self.ctl(["apply", "-f", site, "--prune"], host=host)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("workload/gone1 deleted", p.stdout)
        self.assertNotEqual(self.ctl(["get", "gone1"], host=host).returncode, 0, "gone1 was pruned")
        self.assertEqual(self.ctl(["get", "keep1"], host=host).returncode, 0, "keep1 stays")
        vols = json.loads(self.ctl(["-o", "json", "volume", "ls"], host=host).stdout)["volumes"]
        self.assertIn("prunevol", [v["name"] for v in vols], "volumes are never pruned")
        self.ctl(["delete", "keep1"], host=host)
        self.ctl(["volume", "rm", "prunevol"], host=host)

    def test_cp_into_and_out_of_a_workload(self):
        """cp through exec and the workload's tar: a tree in, the same tree out, links kept as
        links, bad paths and missing files refused with the reason."""
        host = self.a.endpoint
        p = self.ctl(["apply", "-f", self.write("cpbox.yaml", manifest("cpbox"))], host=host)
        self.assertEqual(p.returncode, 0, p.stderr)
        wait_for(lambda: self.ctl(["exec", "cpbox", "--", "true"], host=host).returncode == 0, timeout=60,
                 what="cpbox to run")
        tree = os.path.join(self.tmp, "tree")
        os.makedirs(os.path.join(tree, "sub"))
        with open(os.path.join(tree, "a.txt"), "w") as f:
            f.write("alpha\n")
        with open(os.path.join(tree, "sub", "b.bin"), "wb") as f:
            f.write(os.urandom(300000))
        os.symlink("a.txt", os.path.join(tree, "link"))
        p = self.ctl(["cp", tree, "cpbox:/srv/site"], host=host)
        self.assertNotEqual(p.returncode, 0, "no /srv in the workload yet")
        self.assertIn("tar in the workload exited", p.stderr)
        self.assertIn("/srv", p.stderr)
        self.ctl(["exec", "cpbox", "--", "mkdir", "/srv"], host=host, check=True)
        p = self.ctl(["cp", tree, "cpbox:/srv/site"], host=host)
        self.assertEqual(p.returncode, 0, p.stderr)
        p = self.ctl(["exec", "cpbox", "--", "sh", "-c", "cat /srv/site/a.txt; readlink /srv/site/link; "
                      "stat -c '%u %s' /srv/site/sub/b.bin"], host=host)
        self.assertEqual(p.stdout, "alpha\na.txt\n0 300000\n", p.stderr)
        p = self.ctl(["cp", os.path.join(tree, "a.txt"), "cpbox:/srv/"], host=host)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.ctl(["exec", "cpbox", "--", "cat", "/srv/a.txt"], host=host).stdout, "alpha\n")
        out = os.path.join(self.tmp, "out")
        p = self.ctl(["cp", "cpbox:/srv/site", out], host=host)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(os.path.join(tree, "sub", "b.bin"), "rb") as a, open(os.path.join(out, "sub", "b.bin"), "rb") as b:
            self.assertEqual(a.read(), b.read())
        self.assertEqual(os.readlink(os.path.join(out, "link")), "a.txt")
        os.makedirs(os.path.join(self.tmp, "into"))
        p = self.ctl(["cp", "cpbox:/srv/a.txt", os.path.join(self.tmp, "into")], host=host)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(os.path.join(self.tmp, "into", "a.txt")) as f:
            self.assertEqual(f.read(), "alpha\n")
        p = self.ctl(["cp", "cpbox:/nope", out], host=host)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("cpbox:/nope: tar in the workload exited", p.stderr)
        p = self.ctl(["cp", tree, "cpbox:relative"], host=host)
        self.assertEqual(p.returncode, 2)
        self.assertIn("must be absolute", p.stderr)
        p = self.ctl(["cp", tree, out], host=host)
        self.assertEqual(p.returncode, 2)
        self.assertIn("exactly one of SRC and DEST", p.stderr)
        p = self.ctl(["cp", tree, "nosuch:/x"], host=host)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("nosuch", p.stderr)
        self.ctl(["delete", "cpbox"], host=host)

    def test_fleet_with_a_capsule_down(self):
        down = f"127.0.0.1:{harness.free_port()}"
        self.ctl(["apply", "-f", self.write("dn.yaml", manifest("downtest"))],
                 host=self.a.endpoint, check=True)
        p = self.ctl(["--timeout", "5", "get", "--capsule", f"{self.a.endpoint},{down}"])
        self.assertNotEqual(p.returncode, 0)
        self.assertRegex(p.stdout, rf"(?m)^{re.escape(self.a.endpoint)}\s+downtest\s")
        self.assertIn(f"[{down}]", p.stderr)
        self.assertRegex(p.stderr, rf"1 of 2 capsules failed: {re.escape(down)}")

    def test_fleet_capsule_killed(self):
        """A third capsule, killed by PID: the others' results still come, it is named."""
        ctmp = os.path.join(self.tmp, "c")
        os.makedirs(ctmp)
        shutil.copytree(self.a.cfgdir, os.path.join(ctmp, "cfg"))
        c = Capsule(ctmp, name="home").start()
        line = f"{self.b.endpoint},{c.endpoint}"
        self.assertEqual(self.ctl(["version", "--capsule", line]).returncode, 0)
        c.stop(signal.SIGKILL)
        p = self.ctl(["version", "--capsule", line, "--timeout", "5"])
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stdout, rf"(?m)^{re.escape(self.b.endpoint)}\s+Server: capsuled")
        self.assertIn(f"[{c.endpoint}] capsulectl: version:", p.stderr)

    def test_fleet_refuses_interactive_exec(self):
        p = self.ctl(["exec", "-it", "fa", "--capsule", self.fleet, "--", "sh"])
        self.assertEqual(p.returncode, 2)
        self.assertIn("need one capsule", p.stderr)

    # -- get -w ----------------------------------------------------------------------------------

    def test_get_watch_shows_applied_workload(self):
        w = subprocess.Popen([harness.CAPSULECTL, "get", "-w"], env=ctl_env(self.config, self.b.endpoint),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(1.0)
            self.ctl(["apply", "-f", self.write("wt.yaml", manifest("watched"))],
                     host=self.b.endpoint, check=True)
            time.sleep(3.0)
        finally:
            w.send_signal(signal.SIGINT)
            out, err = w.communicate(timeout=10)
        self.assertEqual(w.returncode, 0, f"stdout: {out}\nstderr: {err}")
        lines = out.splitlines()
        self.assertRegex(lines[0], r"^NAME\s+KIND\s+STATUS")
        self.assertTrue(any(l.startswith("watched ") for l in lines[1:]), out)

    # -- logs ------------------------------------------------------------------------------------

    def test_logs_of_several_workloads_and_since(self):
        script = "echo early-$0; sleep 4; echo late-$0; trap 'exit 0' TERM; while true; do sleep 1; done"
        for n in ("lga", "lgb"):
            self.ctl(["apply", "-f", self.write(f"{n}.yaml", manifest(n, script))],
                     host=self.a.endpoint, check=True)
        wait_for(lambda: all(f"late-{n}" in self.ctl(["logs", n], host=self.a.endpoint).stdout
                             for n in ("lga", "lgb")), timeout=40, what="late lines")
        p = self.ctl(["logs", "lga", "lgb"], host=self.a.endpoint)
        self.assertEqual(p.returncode, 0, p.stderr)
        for n in ("lga", "lgb"):
            self.assertIn(f"{n} | early-{n}\n", p.stdout)
            self.assertIn(f"{n} | late-{n}\n", p.stdout)
        self.assertTrue(all(re.match(r"^lg[ab] \| ", l) for l in p.stdout.splitlines()), p.stdout)
        # --since: the early lines are >= 4 s older than the late ones
        p = self.ctl(["logs", "--timestamps", "lga"], host=self.a.endpoint, check=True)
        stamps = {m.group(2): m.group(1) for m in
                  re.finditer(r"^(\S+)Z (early|late)-lga$", p.stdout, re.M)}
        late = stamps["late"][:19] + "Z"  # whole seconds: the late line's second
        p = self.ctl(["logs", "lga", "--since", late], host=self.a.endpoint, check=True)
        self.assertIn("late-lga", p.stdout)
        self.assertNotIn("early-lga", p.stdout)
        p = self.ctl(["logs", "lga", "--since", "1h"], host=self.a.endpoint, check=True)
        self.assertIn("early-lga", p.stdout)
        p = self.ctl(["logs", "lga", "--since", "yesterday"], host=self.a.endpoint)
        self.assertEqual(p.returncode, 2)

    # -- completion ------------------------------------------------------------------------------

    def complete(self, words):
        script = self.ctl(["completion", "bash"], check=True).stdout
        path = self.write("completion.bash", script)
        env = ctl_env(self.config, self.a.endpoint)
        env["PATH"] = os.path.dirname(harness.CAPSULECTL) + ":" + env["PATH"]
        quoted = " ".join("'" + w + "'" for w in ["capsulectl"] + words)
        cmd = (f"source {path}; COMP_WORDS=({quoted}); COMP_CWORD={len(words)}; "
               "_capsulectl; printf '%s\\n' \"${COMPREPLY[@]}\"")
        p = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout.split()

    def test_bash_completion(self):
        self.ctl(["apply", "-f", self.write("cw.yaml", manifest("complete-me"))],
                 host=self.a.endpoint, check=True)
        self.assertIn("get", self.complete([""]))
        self.assertNotIn("__complete", self.complete([""]))
        self.assertEqual(self.complete(["des"]), ["describe"])
        self.assertIn("--output", self.complete(["get", "--"]))
        self.assertIn("--watch", self.complete(["get", "--"]))
        self.assertIn("complete-me", self.complete(["get", ""]))
        self.assertIn("complete-me", self.complete(["logs", "-f", "comp"]))
        self.assertEqual(self.complete(["image", "p"]), ["push", "pull"])
        self.assertEqual(self.complete(["get", "-o", "j"]), ["json"])
        self.assertEqual(self.complete(["volume", "re"]), ["resize", "restore"])
        self.assertIn("backup", self.complete(["volume", ""]))
        # `volume backup -o FILE`: a file, not an output format
        self.assertNotIn("json", self.complete(["volume", "backup", "site", "-o", "j"]))
        self.assertIn(IMAGE, self.complete(["image", "rm", ""]))
        # nothing after "--": that is the command's
        self.assertEqual(self.complete(["exec", "complete-me", "--", ""]), [])
        # debug: its options, workloads after --target, images after --image
        self.assertIn("debug", self.complete(["deb"]))
        for opt in ("--image", "--target", "--env"):
            self.assertIn(opt, self.complete(["debug", "--"]))
        self.assertEqual(self.complete(["debug", "--target", "comp"]), ["complete-me"])
        self.assertIn(IMAGE, self.complete(["debug", "--image", ""]))
        self.assertNotIn("complete-me", self.complete(["debug", "--image", ""]))
        self.assertEqual(self.complete(["debug", "--target", "complete-me", "--", ""]), [])

    def complete_in(self, shell, line):
        """What `capsulectl completion SHELL` offers for the command line `line` (its last word
        being completed), run in the real shell against the live capsule."""
        path = self.write(f"completion.{shell}", self.ctl(["completion", shell], check=True).stdout)
        env = ctl_env(self.config, self.a.endpoint)
        env["PATH"] = os.path.dirname(harness.CAPSULECTL) + ":" + env["PATH"]
        words = line.split(" ")
        if shell == "zsh":
            # zsh's completion widgets need a terminal; call the function as the completion
            # system would, with compadd and _files recording what they were given
            arr = " ".join("'" + w + "'" for w in words)
            cmd = (f"compdef() {{ : }}; compadd() {{ print -l -- \"${{(@P)2}}\" }}; _files() {{ print FILES }}; "
                   f"source {path}; words=({arr}); CURRENT={len(words)}; _capsulectl")
            argv = ["zsh", "-f", "-c", cmd]
        else:
            argv = ["fish", "--no-config", "-c", f"source {path}; complete -C '{line}'"]
        p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        return [l.split("\t")[0] for l in p.stdout.splitlines() if l]

    def test_zsh_and_fish_completion(self):
        """The zsh and fish scripts hand the line to `capsulectl __complete` as bash's does."""
        self.ctl(["apply", "-f", self.write("zf.yaml", manifest("zsh-fish-me"))],
                 host=self.a.endpoint, check=True)
        for shell in ("zsh", "fish"):
            if not shutil.which(shell):
                self.fail(f"{shell} is not installed (scripts/deps.sh installs it)")
            self.assertEqual(self.complete_in(shell, "capsulectl des"), ["describe"], shell)
            self.assertIn("zsh-fish-me", self.complete_in(shell, "capsulectl logs -f zsh"), shell)
            self.assertIn("--output", self.complete_in(shell, "capsulectl get --"), shell)
            self.assertEqual(sorted(self.complete_in(shell, "capsulectl image p")), ["pull", "push"], shell)
        # nothing to offer: zsh falls back to file names
        self.assertEqual(self.complete_in("zsh", "capsulectl exec zsh-fish-me -- "), ["FILES"])


if __name__ == "__main__":
    harness.main()
