#!/usr/bin/env python3
"""CNI networking with the real plugins (Debian's containernetworking-plugins), as root, through
cni-tool (a thin CLI over src/capsuled/net/cni.c): a workload namespace on its own bridge and
subnet, `busybox httpd` inside it, a published port answered on 127.0.0.1 and on the host's
address; teardown leaves no veth, no iptables rule naming the container id, no IPAM lease.
Everything the test creates (namespace mounts, processes, bridge, shared portmap chains it
created, ip_forward) is removed by the test, even on failure."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import harness

CNI_TOOL = os.path.join(harness.BUILD_DIR, "tests", "integration", "cni-tool")
BRIDGE = "capt%d" % (os.getpid() % 10000)
SUBNET = "10.213.%d.0/24" % (os.getpid() % 250)
HOSTPORT = 18080 + os.getpid() % 1000


def sh(*args, check=True):
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


def nat_rules():
    return sh("iptables-save", "-t", "nat").stdout


def mounts_under(path):
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == path or mp.startswith(path + "/"):
                out.append(mp)
    return out


def host_address():
    """The host's first non-loopback IPv4 address, or None."""
    for line in sh("ip", "-o", "-4", "addr", "show", "scope", "global").stdout.splitlines():
        parts = line.split()
        if parts[1] != BRIDGE and not parts[1].startswith("capt"):
            return parts[3].split("/")[0]
    return None


def http_get(addr, port, timeout=5):
    p = subprocess.run(["curl", "-sS", "-m", str(timeout), f"http://{addr}:{port}/"],
                       capture_output=True, text=True)
    return p.returncode, p.stdout


@unittest.skipUnless(os.geteuid() == 0, "needs root")
@unittest.skipUnless(os.path.exists("/usr/lib/cni/bridge"), "needs containernetworking-plugins")
class CniTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.had_hostport_chains = "CNI-HOSTPORT-DNAT" in nat_rules()
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            cls.ip_forward = f.read().strip()

    @classmethod
    def tearDownClass(cls):
        # Shared portmap chains: remove only if this test created them and nobody else uses them.
        rules = nat_rules()
        if not cls.had_hostport_chains and "CNI-DN-" not in rules:
            for args in (["-D", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"],
                         ["-D", "OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"],
                         ["-D", "POSTROUTING", "-m", "comment", "--comment", "CNI portfwd requiring masquerade",
                          "-j", "CNI-HOSTPORT-MASQ"]):
                sh("iptables", "-w", "-t", "nat", *args, check=False)
            for chain in ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK"):
                sh("iptables", "-w", "-t", "nat", "-F", chain, check=False)
                sh("iptables", "-w", "-t", "nat", "-X", chain, check=False)
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write(cls.ip_forward)

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="capsule-cni-")
        self.netns_dir = os.path.join(self.tmp, "netns")
        self.state_dir = os.path.join(self.tmp, "state")
        self.procs = []
        self.setups = []  # (workload, id) to tear down

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for wl, cid in self.setups:
            self.tool("teardown", wl, cid, check=False)
        for mp in reversed(mounts_under(self.tmp)):
            sh("umount", "-l", mp, check=False)
        sh("ip", "link", "del", BRIDGE, check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def tool(self, *args, check=True):
        p = subprocess.run([CNI_TOOL, "--netns-dir", self.netns_dir, "--state-dir", self.state_dir,
                            "--bridge", BRIDGE, "--subnet", SUBNET] + list(args),
                           capture_output=True, text=True, timeout=120)
        if check and p.returncode != 0:
            raise AssertionError(f"cni-tool {' '.join(args)}: exit {p.returncode}\n{p.stderr}")
        return p

    def setup_workload(self, wl, cid, *ports):
        self.setups.append((wl, cid))
        p = self.tool("setup", wl, cid, *ports)
        return json.loads(p.stdout)

    def start_httpd(self, netns, body):
        www = os.path.join(self.tmp, "www-" + os.path.basename(netns))
        os.makedirs(www, exist_ok=True)
        with open(os.path.join(www, "index.html"), "w") as f:
            f.write(body)
        p = subprocess.Popen(["nsenter", f"--net={netns}", "busybox", "httpd", "-f", "-p", "80", "-h", www],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        ip = None
        harness.wait_for(lambda: sh("nsenter", f"--net={netns}", "sh", "-c",
                                    "busybox netstat -ltn | grep -q ':80 '", check=False).returncode == 0,
                         timeout=10, what="httpd to listen")
        return p

    def leases(self):
        d = os.path.join(self.state_dir, "ipam", "capsule")
        if not os.path.isdir(d):
            return []
        return [n for n in os.listdir(d) if not n.startswith("last_reserved_ip") and n != "lock"]

    def masquerade_rule(self):
        """The network's one masquerade rule (instead of the bridge plugin's ipMasq chains)."""
        return f"-A POSTROUTING -s {SUBNET} ! -o {BRIDGE} " in nat_rules()

    def assert_clean(self, wl, cid, ip):
        """After the teardown of the last workload of the network."""
        self.assertFalse(self.masquerade_rule(), "the masquerade rule outlived the last workload")
        links = sh("ip", "-o", "link").stdout
        self.assertNotIn(f"master {BRIDGE}", links, "a veth is still on the bridge")
        rules = nat_rules()
        self.assertNotIn(cid, rules, "an iptables rule still names the container id")
        self.assertNotIn(f"{ip}/32", rules)
        self.assertNotIn(f"--dport {HOSTPORT} ", rules)
        self.assertEqual(self.leases(), [], "an IPAM lease is left")
        self.assertFalse(os.path.exists(os.path.join(self.netns_dir, wl)), "the netns file is left")
        self.assertFalse(os.path.exists(os.path.join(self.state_dir, "cache", cid + ".json")))
        self.assertFalse(os.path.exists(os.path.join(self.state_dir, "etc", wl)))

    def test_publish_port_and_teardown(self):
        cid = "test%08x" % os.getpid()
        t0 = time.monotonic()
        a = self.setup_workload("web", cid, f"{HOSTPORT}:80")
        setup_s = time.monotonic() - t0
        self.assertEqual(a["netns"], os.path.join(self.netns_dir, "web"))
        self.assertTrue(a["ip"].startswith(SUBNET.rsplit(".", 1)[0] + "."), a)
        self.assertEqual(a["prefix"], 24)
        self.assertEqual(a["gateway"], SUBNET.rsplit(".", 1)[0] + ".1")
        self.assertEqual(len(self.leases()), 1)
        self.assertTrue(self.masquerade_rule())
        # /etc/hosts and /etc/resolv.conf for the container driver to bind-mount
        with open(a["hosts"]) as f:
            self.assertIn(f"{a['ip']}\tweb\n", f.read())
        with open(a["resolv"]) as f:
            resolv = f.read()
        self.assertIn("nameserver ", resolv)
        self.assertNotIn("nameserver 127.", resolv)
        # lo is up inside (brought up by cni.c), eth0 has the address
        addrs = sh("nsenter", f"--net={a['netns']}", "ip", "-o", "-4", "addr").stdout
        self.assertIn("127.0.0.1/8", addrs)
        self.assertIn(a["ip"] + "/24", addrs)
        self.start_httpd(a["netns"], "hello from web\n")
        # the workload's own address, 127.0.0.1 (portmap: route_localnet + masquerade) and the host's address
        self.assertEqual(http_get(a["ip"], 80), (0, "hello from web\n"))
        self.assertEqual(http_get("127.0.0.1", HOSTPORT), (0, "hello from web\n"))
        host = host_address()
        if host:
            self.assertEqual(http_get(host, HOSTPORT), (0, "hello from web\n"))
        # the workload reaches the host through the bridge (gateway)
        self.assertEqual(sh("nsenter", f"--net={a['netns']}", "busybox", "ping", "-c1", "-W2", a["gateway"],
                            check=False).returncode, 0)
        self.assertEqual(self.tool("check", "web", cid).returncode, 0)
        # setup again with the same id adopts (no second veth, same address)
        b = self.tool("setup", "web", cid, f"{HOSTPORT}:80")
        self.assertEqual(json.loads(b.stdout)["ip"], a["ip"])
        self.assertEqual(sh("ip", "-o", "link").stdout.count(f"master {BRIDGE}"), 1)
        # teardown with httpd still running inside (its process pins the namespace)
        t0 = time.monotonic()
        self.tool("teardown", "web", cid)
        teardown_s = time.monotonic() - t0
        self.assert_clean("web", cid, a["ip"])
        self.assertNotEqual(http_get("127.0.0.1", HOSTPORT, timeout=2)[0], 0)
        # idempotent
        self.tool("teardown", "web", cid)
        print(f"\ntiming: cni setup {setup_s * 1000:.0f} ms, teardown {teardown_s * 1000:.0f} ms",
              file=sys.stderr)

    def test_vm_attach(self):
        """net/vmnet.c: the namespace of a microVM: eth0 and tap0 on br0, the address handed to the guest."""
        cid = "vm%08x" % os.getpid()
        a = self.setup_workload("vm", cid)
        b = json.loads(self.tool("vm-attach", "vm", cid).stdout)
        self.assertEqual(b["ip"], a["ip"])
        ns = ["nsenter", f"--net={a['netns']}"]
        links = sh(*ns, "ip", "-o", "link").stdout
        self.assertRegex(links, r"eth0@\S+: <[^>]*UP[^>]*> .* master br0")
        self.assertRegex(links, r"tap0: <[^>]*> .* master br0")
        self.assertRegex(links, r"br0: <[^>]*UP[^>]*>")
        self.assertIn("tun", sh(*ns, "ip", "-d", "link", "show", "tap0").stdout)
        # the hairpinned veth reflects the VM's broadcasts: br0 must not learn the VM's MAC on eth0
        self.assertIn("learning off", sh(*ns, "bridge", "-d", "link", "show", "dev", "eth0").stdout)
        self.assertNotIn(a["ip"] + "/", sh(*ns, "ip", "-o", "-4", "addr").stdout,
                         "the address stays on eth0 instead of going to the guest")
        # again (adoption after a restart): no error, nothing doubled
        self.tool("vm-attach", "vm", cid)
        self.assertEqual(sh(*ns, "ip", "-o", "link").stdout.count("master br0"), 2)
        self.tool("teardown", "vm", cid)
        self.assert_clean("vm", cid, a["ip"])

    def test_teardown_of_half_setup(self):
        """A namespace whose setup was interrupted after the plugins ran but before the result
        was recorded (simulated: set up, then delete the cache and the namespace mount) is still
        swept clean: rules by container id, leases by container id."""
        cid = "half%08x" % os.getpid()
        a = self.setup_workload("half", cid, f"{HOSTPORT}:80")
        os.unlink(os.path.join(self.state_dir, "cache", cid + ".json"))
        ns = a["netns"]
        sh("umount", ns)        # the namespace (and its veth) vanish without DEL
        self.assertIn(cid, nat_rules())
        self.tool("teardown", "half", cid)
        self.assert_clean("half", cid, a["ip"])

    def test_two_workloads(self):
        a = self.setup_workload("one", "one%08x" % os.getpid(), f"{HOSTPORT}:80")
        b = self.setup_workload("two", "two%08x" % os.getpid(), f"{HOSTPORT + 1}:80")
        self.assertNotEqual(a["ip"], b["ip"])
        self.start_httpd(a["netns"], "one\n")
        self.start_httpd(b["netns"], "two\n")
        self.assertEqual(http_get("127.0.0.1", HOSTPORT), (0, "one\n"))
        self.assertEqual(http_get("127.0.0.1", HOSTPORT + 1), (0, "two\n"))
        # workload to workload over the bridge
        rc = sh("nsenter", f"--net={a['netns']}", "curl", "-sS", "-m", "5", f"http://{b['ip']}/",
                check=False)
        self.assertEqual(rc.stdout, "two\n")
        self.tool("teardown", "one", "one%08x" % os.getpid())
        self.assertEqual(http_get("127.0.0.1", HOSTPORT + 1), (0, "two\n"))
        self.assertTrue(self.masquerade_rule(), "removed while a workload still needs it")

    def test_bad_names(self):
        p = self.tool("setup", "Bad_Name", "x1", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("workload", p.stderr)
        p = self.tool("setup", "ok", "../evil", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("container id", p.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.netns_dir, "ok")))


if __name__ == "__main__":
    harness.main()
