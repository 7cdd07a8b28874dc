/* A microVM's network: the same CNI attachment a container gets, handed to the VM's NIC.
 *
 * cni_setup gives every workload a network namespace whose eth0 (a veth on the bridge capsule0)
 * holds the workload's address, and portmap DNATs published ports to that address. A container
 * uses eth0 directly. A microVM cannot, so vmnet_attach rewires the namespace: a bridge `br0`
 * enslaves eth0 and a persistent tap `tap0`, and eth0's address is taken off (the guest kernel
 * configures the same address on its virtio-net NIC from the command line). Packets for the
 * workload's address then cross veth -> br0 -> tap0 -> QEMU -> the guest, so ports publish
 * exactly as for containers. QEMU opens tap0 by name from inside the namespace. Everything lives in
 * the namespace: cni_teardown's removal of it removes the bridge and the tap too. */
#pragma once

#include "common/error.h"

#define VMNET_TAP "tap0"
#define VMNET_BRIDGE "br0"

/* Rewires the namespace at netns_path for a VM whose guest takes ip/prefix_len (dotted quad).
 * Idempotent: an already rewired namespace (adoption after a restart) is left as it is. */
int vmnet_attach(const char *netns_path, const char *ip, int prefix_len, struct cap_error *err);

/* A locally administered MAC for the VM's NIC, stable per workload name: "52:54:xx:xx:xx:xx"
 * (out: at least 18 bytes). */
void vmnet_mac(const char *name, char *out);
