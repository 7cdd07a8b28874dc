#!/usr/bin/env python3
"""capsule-dhcp-hook, the program dhcpcd runs on lease events on a Capsule, run here as dhcpcd runs
it (its environment: reason, interface, new_domain_name_servers, new_ntp_servers, ...) under a
temporary root (the CAPSULE_DHCP_HOOK_ROOT test seam prefixes every path it touches).

What a lease's values may do is checked: only addresses and DNS names get through; the NTP servers
become chrony sources only when the machine config left time.servers unset (PID 1 then makes the
sourcedir); chronyd is restarted when they change, and a pidfile that names another program does
not get it signalled."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

BUILD = os.environ.get("CAPSULE_BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
HOOK = os.path.join(BUILD, "src", "capsuled", "capsule-dhcp-hook")


class DhcpHookTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="capsule-dhcp-hook-")
        os.makedirs(os.path.join(self.root, "etc"))
        self.sources = os.path.join(self.root, "run/capsule/chrony/sources.d")
        os.makedirs(self.sources)
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def hook(self, reason="BOUND", **env):
        e = {"PATH": os.environ.get("PATH", ""), "CAPSULE_DHCP_HOOK_ROOT": self.root, "reason": reason,
             "interface": "eth0", **env}
        return subprocess.run([HOOK], env=e, capture_output=True, text=True, timeout=10)

    def read(self, rel):
        try:
            with open(os.path.join(self.root, rel)) as f:
                return f.read()
        except FileNotFoundError:
            return None

    def fake_chronyd(self):
        """A process whose name is chronyd, and its pidfile."""
        exe = os.path.join(self.root, "chronyd")
        shutil.copy("/bin/sleep", exe)
        p = subprocess.Popen([exe, "60"])
        self.procs.append(p)
        with open(os.path.join(self.root, "run/capsule/chrony/chronyd.pid"), "w") as f:
            f.write(f"{p.pid}\n")
        time.sleep(0.1)
        return p

    def test_lease_writes_resolv_conf_and_ntp_sources(self):
        r = self.hook(new_domain_name_servers="10.0.0.53 not-an-address 10.0.0.54",
                      new_domain_search="home.arpa bad;name", new_ntp_servers="10.0.0.123 10.0.0.124")
        self.assertEqual(r.returncode, 0, r.stderr)
        resolv = self.read("etc/resolv.conf")
        self.assertIn("nameserver 10.0.0.53\nnameserver 10.0.0.54\n", resolv)
        self.assertIn("search home.arpa\n", resolv)
        self.assertNotIn("not-an-address", resolv)
        self.assertEqual(self.read("run/capsule/chrony/sources.d/dhcp.sources"),
                         "server 10.0.0.123 iburst\nserver 10.0.0.124 iburst\n")

    def test_only_addresses_become_sources(self):
        self.hook(new_ntp_servers="pool.ntp.org 10.0.0.1;reboot 10.0.0.9 2001:db8::1")
        self.assertEqual(self.read("run/capsule/chrony/sources.d/dhcp.sources"),
                         "server 10.0.0.9 iburst\nserver 2001:db8::1 iburst\n")

    def test_chronyd_restarted_only_when_sources_change(self):
        c = self.fake_chronyd()
        self.hook(new_ntp_servers="10.0.0.1")
        self.assertIsNotNone(c.wait(timeout=5), "new sources: chronyd is asked to restart")
        self.assertEqual(c.returncode, -signal.SIGTERM)
        c2 = self.fake_chronyd()
        self.hook(reason="RENEW", new_ntp_servers="10.0.0.1")
        time.sleep(0.3)
        self.assertIsNone(c2.poll(), "same sources on renew: chronyd keeps running")
        self.hook(reason="RENEW")  # the lease no longer offers NTP servers: the file goes
        self.assertIsNone(self.read("run/capsule/chrony/sources.d/dhcp.sources"))
        self.assertEqual(c2.wait(timeout=5), -signal.SIGTERM)

    def test_pidfile_naming_another_program_is_not_signalled(self):
        p = subprocess.Popen(["sleep", "60"])
        self.procs.append(p)
        with open(os.path.join(self.root, "run/capsule/chrony/chronyd.pid"), "w") as f:
            f.write(f"{p.pid}\n")
        self.hook(new_ntp_servers="10.0.0.2")
        time.sleep(0.3)
        self.assertIsNone(p.poll(), "a pidfile cannot aim the hook's signal at another program")

    def test_time_servers_set_in_machine_config_wins(self):
        shutil.rmtree(self.sources)  # PID 1 makes no sourcedir when time.servers is set
        r = self.hook(new_ntp_servers="10.0.0.1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(os.path.exists(self.sources))

    def test_static_dns_kept_ntp_still_taken(self):
        with open(os.path.join(self.root, "etc/resolv.conf"), "w") as f:
            f.write("# Written by capsuled init from the machine config.\nnameserver 1.1.1.1\n")
        self.hook(new_domain_name_servers="10.0.0.53", new_ntp_servers="10.0.0.1")
        self.assertIn("nameserver 1.1.1.1", self.read("etc/resolv.conf"))
        self.assertEqual(self.read("run/capsule/chrony/sources.d/dhcp.sources"), "server 10.0.0.1 iburst\n")

    def test_other_events_change_nothing(self):
        self.hook(reason="EXPIRE", new_domain_name_servers="10.0.0.53", new_ntp_servers="10.0.0.1")
        self.assertIsNone(self.read("etc/resolv.conf"))
        self.assertIsNone(self.read("run/capsule/chrony/sources.d/dhcp.sources"))


if __name__ == "__main__":
    if not os.access(HOOK, os.X_OK):
        print(f"SKIP: {HOOK} not built")
        sys.exit(77)
    unittest.main(verbosity=2)
