#!/usr/bin/env python3
"""Builds a tiny, deterministic container image from the host's /bin/busybox (Debian's
busybox-static) as a docker-archive and an oci-archive tarball, for every test that needs an image.

    mkimage_busybox.py OUTDIR [--name capsule.local/busybox:latest] [--busybox /bin/busybox]

writes OUTDIR/busybox-docker.tar (the legacy `docker save` layout: manifest.json, <id>.json,
<id>/layer.tar) and OUTDIR/busybox-oci.tar (oci-layout, index.json, blobs/sha256/..., gzip layer).
Pure Python standard library; the same input gives byte-identical output. Tests import it and use
build() / the helpers to craft variants (malicious archives, registry uploads)."""

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

DEFAULT_NAME = "capsule.local/busybox:latest"
APPLETS = ["sh", "ls", "cat", "echo", "sleep", "true", "false", "env", "id", "hostname", "ps",
           "mkdir", "rm", "touch", "wc", "head", "tail", "grep", "sed", "date", "uname", "df",
           "mount", "nc", "wget", "vi", "tee", "kill", "test", "[", "httpd", "tr", "stty", "tty", "tar",
           "readlink", "stat"]
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def jdump(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _info(name, kind=tarfile.REGTYPE, size=0, mode=0o644, link=""):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.size = size
    ti.mode = mode
    ti.mtime = 0
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.linkname = link
    return ti


def tar_bytes(entries):
    """entries: list of (TarInfo, data-bytes-or-None). Deterministic USTAR/GNU tar in memory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for ti, data in entries:
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def file_entry(name, data, mode=0o644):
    return (_info(name, size=len(data), mode=mode), data)


def dir_entry(name):
    return (_info(name, tarfile.DIRTYPE, mode=0o755), None)


def symlink_entry(name, target):
    return (_info(name, tarfile.SYMTYPE, mode=0o777, link=target), None)


def hardlink_entry(name, target):
    return (_info(name, tarfile.LNKTYPE, link=target), None)


def gzip_bytes(data):
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=6, filename="") as g:
        g.write(data)
    return buf.getvalue()


def make_layer(busybox="/bin/busybox", extra=None):
    with open(busybox, "rb") as f:
        bb = f.read()
    entries = [dir_entry("bin"), file_entry("bin/busybox", bb, 0o755)]
    if extra is not None:
        entries.append(file_entry("bin/.variant", extra))
    entries += [symlink_entry("bin/" + a, "busybox") for a in sorted(APPLETS)]
    entries += [dir_entry("etc"),
                file_entry("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
                file_entry("etc/group", b"root:x:0:\nnogroup:x:65534:\n"),
                dir_entry("root"), dir_entry("tmp"), dir_entry("usr"), dir_entry("usr/bin")]
    entries[-4][0].mode = 0o700
    entries[-3][0].mode = 0o1777
    return tar_bytes(entries)


def make_config(layer_diff_ids):
    return jdump({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": list(layer_diff_ids)},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "mkimage_busybox.py"}],
    })


def make_manifest(config, layers, layer_mt=MT_LAYER_GZIP):
    return jdump({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": layer_mt, "digest": sha256(l), "size": len(l)} for l in layers],
    })


class Image:
    """The parts of the busybox image: layer (uncompressed tar), its gzip form, config, OCI
    manifest (gzip layer), all as bytes. `extra` adds a file, for a variant with other digests;
    `layer` (an uncompressed tar) replaces the busybox layer."""

    def __init__(self, busybox="/bin/busybox", extra=None, layer=None):
        self.layer = layer if layer is not None else make_layer(busybox, extra)
        self.layer_gz = gzip_bytes(self.layer)
        self.diff_id = sha256(self.layer)
        self.config = make_config([self.diff_id])
        self.manifest = make_manifest(self.config, [self.layer_gz])
        self.manifest_digest = sha256(self.manifest)


def docker_archive_entries(img, name=DEFAULT_NAME, repo_tags=None):
    lid = hashlib.sha256(img.layer).hexdigest()
    cfg_name = hashlib.sha256(img.config).hexdigest() + ".json"
    tags = [name] if repo_tags is None else repo_tags
    manifest = jdump([{"Config": cfg_name, "RepoTags": tags, "Layers": [lid + "/layer.tar"]}])
    entries = [file_entry(cfg_name, img.config), dir_entry(lid), file_entry(lid + "/VERSION", b"1.0"),
               file_entry(lid + "/json", jdump({"id": lid})), file_entry(lid + "/layer.tar", img.layer),
               file_entry("manifest.json", manifest)]
    if tags:
        repo, _, tag = tags[0].rpartition(":")
        entries.append(file_entry("repositories", jdump({repo: {tag: lid}})))
    return entries


def oci_archive_entries(img, name=DEFAULT_NAME):
    ann = {"org.opencontainers.image.ref.name": name} if name else {}
    index = jdump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                   "manifests": [{"mediaType": MT_MANIFEST, "digest": img.manifest_digest,
                                  "size": len(img.manifest), "annotations": ann,
                                  "platform": {"architecture": "amd64", "os": "linux"}}]})
    blobs = [img.layer_gz, img.config, img.manifest]
    entries = [file_entry("oci-layout", jdump({"imageLayoutVersion": "1.0.0"})), file_entry("index.json", index),
               dir_entry("blobs"), dir_entry("blobs/sha256")]
    entries += [file_entry("blobs/sha256/" + sha256(b)[7:], b) for b in blobs]
    return entries


def build(outdir, name=DEFAULT_NAME, busybox="/bin/busybox"):
    """Writes both archives; returns (Image, docker_path, oci_path)."""
    os.makedirs(outdir, exist_ok=True)
    img = Image(busybox)
    docker = os.path.join(outdir, "busybox-docker.tar")
    oci = os.path.join(outdir, "busybox-oci.tar")
    with open(docker, "wb") as f:
        f.write(tar_bytes(docker_archive_entries(img, name)))
    with open(oci, "wb") as f:
        f.write(tar_bytes(oci_archive_entries(img, name)))
    return img, docker, oci


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--name", default=DEFAULT_NAME)
    ap.add_argument("--busybox", default="/bin/busybox")
    a = ap.parse_args()
    img, docker, oci = build(a.outdir, a.name, a.busybox)
    print(docker)
    print(oci)
    print("manifest (oci-archive):", img.manifest_digest, file=sys.stderr)


if __name__ == "__main__":
    main()
