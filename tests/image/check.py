#!/usr/bin/env python3
"""Checks the image `make image` built (an OCI layout): its config, that it holds the binary and
the CA bundle and nothing else, its size, that the binary is static, and that it runs from the
unpacked root filesystem as the image's user with nothing else there (chroot)."""
import hashlib
import json
import os
import pathlib
import shutil
import struct
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXPECTED_FILES = {"chroma-sync-operator", "etc/ssl/certs/ca-certificates.crt"}
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"
failures = []


def check(ok, what):
    print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        failures.append(what)


def blob(layout, digest):
    algo, hexdigest = digest.split(":")
    data = (layout / "blobs" / algo / hexdigest).read_bytes()
    assert hashlib.sha256(data).hexdigest() == hexdigest, f"blob {digest} is corrupt"
    return data


def is_static_elf(path):
    """True when the ELF file has no PT_INTERP program header (no dynamic loader, no libc)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    types = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    return 3 not in types


def run_in_rootfs(rootfs, *args):
    return subprocess.run(
        [CHROOT, "--userspec=65532:65532", str(rootfs), "/chroma-sync-operator", *args],
        capture_output=True, text=True, env={}, timeout=30)


def main(ref):
    layout_ref = ref.removeprefix("oci:")
    layout, tag = layout_ref.rsplit(":", 1)
    layout = pathlib.Path(layout)
    version = tag
    print(f"image {ref}")

    index = json.loads((layout / "index.json").read_text())
    [manifest_desc] = [m for m in index["manifests"]
                       if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
    manifest = json.loads(blob(layout, manifest_desc["digest"]))
    config = json.loads(blob(layout, manifest["config"]["digest"]))["config"]
    check(config.get("User") == "65532:65532", f"runs as 65532:65532 (User={config.get('User')!r})")
    check(config.get("Entrypoint") == ["/chroma-sync-operator"],
          f"entrypoint is the operator ({config.get('Entrypoint')})")
    check(not config.get("Cmd"), "no default command (the entrypoint's default is to run)")
    check("SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" in config.get("Env", []),
          "SSL_CERT_FILE points at the bundled CA roots")
    check("8080/tcp" in config.get("ExposedPorts", {}), "exposes the metrics port 8080")
    compressed = sum(layer["size"] for layer in manifest["layers"])

    with tempfile.TemporaryDirectory() as work:
        bundle = pathlib.Path(work) / "bundle"
        subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)],
                       check=True, capture_output=True)
        rootfs = bundle / "rootfs"
        files = {str(p.relative_to(rootfs)) for p in rootfs.rglob("*") if not p.is_dir()}
        check(files == EXPECTED_FILES, f"holds only the binary and the CA bundle ({sorted(files)})")
        unpacked = sum((rootfs / f).stat().st_size for f in files)
        binary = rootfs / "chroma-sync-operator"
        check(is_static_elf(binary), "the binary is static (no ELF interpreter)")
        check(os.stat(binary).st_mode & 0o111 != 0, "the binary is executable")

        out = run_in_rootfs(rootfs, "--version")
        check(out.returncode == 0 and out.stdout.strip() == f"chroma-sync-operator {version}",
              f"--version in the bare root filesystem prints the version ({out.stdout.strip()!r})")
        out = run_in_rootfs(rootfs, "crd")
        golden = "---\n".join((ROOT / "crds" / f"{plural}.chromasync.dev.yaml").read_text()
                               for plural in ("syncsources", "syncruns"))
        check(out.returncode == 0 and out.stdout == golden,
              "`crd` in the bare root filesystem prints every CRD of crds/")
        out = run_in_rootfs(rootfs, "--chroma-url", "http://example.invalid")
        check(out.returncode != 0 and "refusing plain http" in out.stderr,
              "the operator starts, parses its flags and refuses a plain-http URL")

    print(f"  size: {compressed / 2**20:.1f} MiB compressed, {unpacked / 2**20:.1f} MiB unpacked "
          f"({len(manifest['layers'])} layer(s))")
    if failures:
        sys.exit(f"image check failed: {len(failures)} of the checks above")


if __name__ == "__main__":
    main(sys.argv[1])
