#!/usr/bin/env python3
"""Checks the image `make image` built (an OCI layout): that its tag is an index of exactly
linux/amd64 and linux/arm64, and for each platform: its config and OCI labels, that it holds the
binary and the CA bundle and nothing else, its size, that the binary is static and built for that
platform, and that it runs from the unpacked root filesystem as the image's user with nothing else
there (chroot). A binary of another architecture than the host's runs under qemu user-mode
emulation (qemu-<arch>-static, put into the root filesystem after its contents are checked), so
no kernel binfmt support is needed."""
import hashlib
import json
import os
import pathlib
import platform
import re
import shutil
import struct
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXPECTED_FILES = {"chroma-sync-operator", "etc/ssl/certs/ca-certificates.crt"}
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
# OCI architecture: (ELF e_machine, qemu's name for it, `uname -m` names).
ARCHES = {"amd64": (0x3E, "x86_64", {"x86_64", "amd64"}),
          "arm64": (0xB7, "aarch64", {"aarch64", "arm64"})}
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


def elf_machine(path):
    """The ELF machine of a static 64-bit little-endian executable, or None when the file is not
    one (not ELF64 LE, or it has a PT_INTERP program header: a dynamic loader, a libc)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    machine, = struct.unpack_from("<H", data, 0x12)
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    types = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    return None if 3 in types else machine


def cargo_field(name):
    return re.search(rf'^{name} = "([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)


def git_head():
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def check_labels(labels, where, version):
    expected = {
        "org.opencontainers.image.title": "chroma-sync-operator",
        "org.opencontainers.image.description": cargo_field("description"),
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.revision": git_head(),
        "org.opencontainers.image.licenses": cargo_field("license"),
    }
    wrong = {k: labels.get(k) for k, v in expected.items() if labels.get(k) != v}
    check(not wrong, f"{where}: OCI title, description, version, revision, licenses"
                     + (f" (wrong: {wrong})" if wrong else ""))
    source = labels.get("org.opencontainers.image.source", "")
    check(source.startswith("https://"), f"{where}: OCI source is a URL ({source!r})")


def unpack(layout, manifest_desc, bundle):
    """umoci unpacks a tag that names one manifest: a one-entry layout beside the real one (its
    blobs shared) names this platform's."""
    single = pathlib.Path(bundle).parent / "layout"
    single.mkdir()
    (single / "oci-layout").write_text((layout / "oci-layout").read_text())
    (single / "blobs").symlink_to((layout / "blobs").resolve())
    desc = dict(manifest_desc, annotations={"org.opencontainers.image.ref.name": "platform"})
    (single / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [desc]}))
    subprocess.run(["umoci", "unpack", "--image", f"{single}:platform", str(bundle)],
                   check=True, capture_output=True)


def runner(rootfs, arch):
    """The command prefix that runs the image's entrypoint in the root filesystem as its user:
    directly on a host of the same architecture, else under qemu user-mode emulation (the static
    qemu copied into the root filesystem, as the chroot has nothing else)."""
    prefix = [CHROOT, "--userspec=65532:65532", str(rootfs)]
    _, qemu_arch, host_names = ARCHES[arch]
    if platform.machine() in host_names:
        return prefix + ["/chroma-sync-operator"]
    qemu = shutil.which(f"qemu-{qemu_arch}-static")
    check(qemu is not None, f"qemu-{qemu_arch}-static is installed (Debian qemu-user-static)")
    if qemu is None:
        return None
    shutil.copy(qemu, rootfs / "qemu-static")
    os.chmod(rootfs / "qemu-static", 0o755)
    return prefix + ["/qemu-static", "/chroma-sync-operator"]


def check_platform(layout, manifest_desc, arch, version):
    print(f" linux/{arch}")
    check(manifest_desc.get("mediaType") == MANIFEST, f"an OCI image manifest ({manifest_desc.get('mediaType')})")
    manifest = json.loads(blob(layout, manifest_desc["digest"]))
    image = json.loads(blob(layout, manifest["config"]["digest"]))
    config = image["config"]
    check((image.get("os"), image.get("architecture")) == ("linux", arch),
          f"config platform is linux/{arch} ({image.get('os')}/{image.get('architecture')})")
    check(config.get("User") == "65532:65532", f"runs as 65532:65532 (User={config.get('User')!r})")
    check(config.get("Entrypoint") == ["/chroma-sync-operator"],
          f"entrypoint is the operator ({config.get('Entrypoint')})")
    check(not config.get("Cmd"), "no default command (the entrypoint's default is to run)")
    check("SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" in config.get("Env", []),
          "SSL_CERT_FILE points at the bundled CA roots")
    check("8080/tcp" in config.get("ExposedPorts", {}), "exposes the metrics port 8080")
    check_labels(config.get("Labels") or {}, "config labels", version)
    check_labels(manifest.get("annotations") or {}, "manifest annotations", version)
    compressed = sum(layer["size"] for layer in manifest["layers"])

    with tempfile.TemporaryDirectory() as work:
        bundle = pathlib.Path(work) / "bundle"
        unpack(layout, manifest_desc, bundle)
        rootfs = bundle / "rootfs"
        files = {str(p.relative_to(rootfs)) for p in rootfs.rglob("*") if not p.is_dir()}
        check(files == EXPECTED_FILES, f"holds only the binary and the CA bundle ({sorted(files)})")
        unpacked = sum((rootfs / f).stat().st_size for f in files)
        binary = rootfs / "chroma-sync-operator"
        machine = elf_machine(binary)
        check(machine is not None, "the binary is static (no ELF interpreter)")
        check(machine == ARCHES[arch][0], f"the binary is built for {arch} (ELF machine {machine})")
        check(os.stat(binary).st_mode & 0o111 != 0, "the binary is executable")

        run = runner(rootfs, arch)
        if run is not None:
            how = "" if run[-2:] == [str(rootfs), "/chroma-sync-operator"] else " under qemu"
            def run_in_rootfs(*args):
                return subprocess.run(run + list(args), capture_output=True, text=True, env={}, timeout=60)

            out = run_in_rootfs("--version")
            check(out.returncode == 0 and out.stdout.strip() == f"chroma-sync-operator {version}",
                  f"--version in the bare root filesystem{how} prints the version ({out.stdout.strip()!r})")
            out = run_in_rootfs("crd")
            golden = "---\n".join((ROOT / "crds" / f"{plural}.chromasync.dev.yaml").read_text()
                                   for plural in ("syncsources", "syncruns", "chromasyncconnections",
                                                  "clusterchromasyncconnections"))
            check(out.returncode == 0 and out.stdout == golden,
                  f"`crd` in the bare root filesystem{how} prints every CRD of crds/")
            keep = ("helm.sh/resource-policy: keep", "kustomize.toolkit.fluxcd.io/prune: disabled",
                    "argocd.argoproj.io/sync-options: Prune=false,Delete=false")
            check(all(out.stdout.count(a) == 4 for a in keep),
                  f"each of the four CRDs{how} carries the keep annotations of Helm, Flux and Argo CD")
            out = run_in_rootfs("--chroma-url", "http://example.invalid")
            check(out.returncode != 0 and "refusing plain http" in out.stderr,
                  f"the operator starts{how}, parses its flags and refuses a plain-http URL")

    print(f"  size (linux/{arch}): {compressed / 2**20:.1f} MiB compressed, "
          f"{unpacked / 2**20:.1f} MiB unpacked ({len(manifest['layers'])} layer(s))")


def main(ref):
    layout_ref = ref.removeprefix("oci:")
    layout, tag = layout_ref.rsplit(":", 1)
    layout = pathlib.Path(layout)
    version = tag
    print(f"image {ref}")

    top = json.loads((layout / "index.json").read_text())
    [index_desc] = [m for m in top["manifests"]
                    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
    check(index_desc.get("mediaType") == INDEX, f"the tag names an OCI image index ({index_desc.get('mediaType')})")
    index = json.loads(blob(layout, index_desc["digest"]))
    platforms = sorted(f"{m.get('platform', {}).get('os')}/{m.get('platform', {}).get('architecture')}"
                       for m in index["manifests"])
    check(platforms == ["linux/amd64", "linux/arm64"],
          f"the index holds exactly linux/amd64 and linux/arm64 ({platforms})")
    for manifest_desc in index["manifests"]:
        arch = manifest_desc.get("platform", {}).get("architecture")
        if arch in ARCHES:
            check_platform(layout, manifest_desc, arch, version)

    if failures:
        sys.exit(f"image check failed: {len(failures)} of the checks above")


if __name__ == "__main__":
    main(sys.argv[1])
