#!/usr/bin/env python3
"""A release consumed as users consume it (`make test`, after `make image`; run by tests/run.sh,
which starts the control plane and sets KUBECONFIG and HELM):

- `make release`'s refusals: a version without a CHANGELOG section, a dirty work tree, a RustSec
  advisory matching Cargo.lock (a snapshot of the database with one made-up advisory added);
- the release built from the current image (deploy/release.sh, signed with a key made for this
  run) into target/release-check/: every file listed in SHA256SUMS and checking, the chart
  pinned to the digest with version = appVersion = the crate's, install.yaml pinned too,
  crds.yaml the CRDs of crds/, release notes from CHANGELOG.md;
- pushed to a registry on loopback (`crane registry serve`) with deploy/publish-release.sh: the
  image index keeps its digest, `cosign verify --key` passes for it and fails for a modified
  image carrying a copy of its signature, for an unsigned image and with another key;
- each platform's SBOM, downloaded from the registry, names every crate that
  `cargo tree -p chroma-sync-operator -e normal,no-proc-macro --target <that platform>` lists
  (the crates the binary links; the SBOM also lists the procedural macros it is compiled with);
- `helm install` from oci:// into the control plane: the Deployment runs the digest;
- the image pulled back from the registry: each platform's binary prints the release's version
  (chroot, qemu for the other architecture, as tests/image/check.py), and the amd64 binary,
  started against the control plane, exports build_info with that version.
- the release workflow passes actionlint (which fails a copy with a misspelt step id).
Prints one line per check and `N passed, N failed` last; any failure exits non-zero."""
import base64
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.dont_write_bytecode = True  # no __pycache__ in the work tree the release checks is clean
sys.path.insert(0, str(ROOT / "tests" / "image"))
import check as image_check  # noqa: E402  (unpack and run a platform's image: tests/image/check.py)

passed = []
failed = []


def check(ok, what):
    print(f"  {'ok  ' if ok else 'FAIL'} {what}", flush=True)
    (passed if ok else failed).append(what)
    return ok


def run(*args, env=None, cwd=ROOT, timeout=600):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=timeout)


def tool(name):
    out = run(ROOT / "tests/release/tools.sh", name)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cargo_version():
    return image_check.cargo_field("version")


def refusals(version):
    print("make release refuses")
    release = ROOT / "deploy/release.sh"
    out = run(release, "--preflight", env={"VERSION": "99.0.0"})
    check(out.returncode != 0 and 'CHANGELOG.md has no section "## [99.0.0]"' in out.stderr,
          f"a version without a CHANGELOG section ({out.stderr.strip().splitlines()[-1:]})")

    # The snapshot .ci/cargo-deny.sh finds from this work tree; the clone below is elsewhere, so
    # it is told where.
    snapshot = None
    for candidate in (os.environ.get("ADVISORY_DB"), ROOT.parent / "shared/advisory-db",
                      "/work/shared/advisory-db"):
        if candidate and (pathlib.Path(candidate) / "crates").is_dir():
            snapshot = pathlib.Path(candidate)
            break
    if not check(snapshot is not None, "the RustSec snapshot is there (ADVISORY_DB)"):
        return
    with tempfile.TemporaryDirectory() as work:
        clone = pathlib.Path(work) / "clone"
        out = run("git", "clone", "--quiet", "--local", "--no-hardlinks", ROOT, clone)
        assert out.returncode == 0, out.stderr
        out = run(clone / "deploy/release.sh", "--preflight", cwd=clone,
                  env={"ADVISORY_DB": str(snapshot)})
        check(out.returncode == 0 and f"preflight ok for {version}" in out.stderr
              and "advisories ok" in out.stderr,
              "a clean clone of HEAD passes the preflight (CHANGELOG section, clean tree, advisories)"
              + ("" if out.returncode == 0 else f": {out.stderr[-2000:]}"))
        (clone / "stray.txt").write_text("not committed\n")
        out = run(clone / "deploy/release.sh", "--preflight", cwd=clone)
        check(out.returncode != 0 and "the work tree is dirty" in out.stderr,
              "a dirty work tree (an untracked file)")
        out = run(clone / "deploy/release.sh", "--preflight", cwd=clone,
                  env={"RELEASE_ALLOW_DIRTY": "1", "ADVISORY_DB": str(snapshot)})
        check(out.returncode == 0, "... unless RELEASE_ALLOW_DIRTY=1")
        (clone / "stray.txt").unlink()

        # The advisory database snapshot with one more advisory: every version of a crate the
        # operator links (itoa) is affected.
        fake = pathlib.Path(work) / "advisory-db"
        shutil.copytree(snapshot, fake)
        run("chmod", "-R", "u+w", fake)
        (fake / "crates/itoa").mkdir(exist_ok=True)
        (fake / "crates/itoa/RUSTSEC-2099-0001.md").write_text(
            '```toml\n[advisory]\nid = "RUSTSEC-2099-0001"\npackage = "itoa"\n'
            'date = "2099-01-01"\nurl = "https://example.invalid/"\ncategories = ["memory-corruption"]\n\n'
            '[versions]\npatched = [">= 99.0.0"]\n```\n\n# A made-up advisory of the release test\n\n'
            'Every version of itoa is affected.\n')
        out = run(clone / "deploy/release.sh", "--preflight", cwd=clone,
                  env={"ADVISORY_DB": str(fake)})
        check(out.returncode != 0 and "RUSTSEC-2099-0001" in out.stderr
              and "RustSec advisories match Cargo.lock" in out.stderr,
              "a RustSec advisory matching Cargo.lock (a made-up one for itoa)")
        out = run(clone / "deploy/release.sh", "--preflight", cwd=clone,
                  env={"ADVISORY_DB": str(pathlib.Path(work) / "nowhere")})
        check(out.returncode != 0 and "holds no RustSec advisory database" in out.stderr,
              "no advisory database where ADVISORY_DB points (never a skipped check)")


def workflow(work):
    """The release workflow passes actionlint, and actionlint is live: a copy with a misspelt
    step id fails."""
    print("the release workflow")
    actionlint = tool("actionlint")
    wf = ROOT / ".github/workflows/release.yml"
    out = run(actionlint, "-no-color", wf)
    check(out.returncode == 0, f"actionlint passes {wf.relative_to(ROOT)}" + (f": {out.stdout}" if out.stdout else ""))
    broken = pathlib.Path(work) / "broken/.github/workflows/release.yml"
    broken.parent.mkdir(parents=True)
    text = wf.read_text()
    broken.write_text(text.replace("steps.version.outputs.image", "steps.versoin.outputs.image"))
    out = run(actionlint, "-no-color", broken, cwd=broken.parents[2])
    check(text.count("steps.version.outputs.image") > 0 and out.returncode != 0
          and "versoin" in out.stdout, "actionlint fails a copy that names a step that does not exist")


def build_release(registry, version, work):
    print("the release")
    cosign = tool("cosign")
    keys = pathlib.Path(work) / "keys"
    keys.mkdir()
    out = run(cosign, "generate-key-pair", cwd=keys, env={"COSIGN_PASSWORD": "release-test"})
    assert out.returncode == 0, out.stderr
    image = f"{registry}/chroma-sync-operator/chroma-sync-operator"
    dist = ROOT / "target/release-check/dist"
    started = time.monotonic()
    out = run(ROOT / "deploy/release.sh", env={
        "VERSION": version, "RELEASE_DIR": str(dist), "RELEASE_IMAGE": image,
        "COSIGN_KEY": str(keys / "cosign.key"), "COSIGN_PASSWORD": "release-test",
        "RELEASE_ALLOW_DIRTY": "1"})
    print(out.stderr, end="")
    if not check(out.returncode == 0, f"deploy/release.sh builds the release ({time.monotonic() - started:.0f} s)"):
        return None
    name = f"chroma-sync-operator-{version}"
    expected = {f"{name}.oci.tar", f"{name}.digest", f"{name}.sig", f"{name}.sig.payload",
                f"{name}.amd64.cdx.json", f"{name}.arm64.cdx.json", f"{name}.amd64.cdx.att.json",
                f"{name}.arm64.cdx.att.json", f"{name}.tgz", "install.yaml",
                "crds.yaml", "RELEASE-NOTES.md", "cosign.pub", "SHA256SUMS", "SHA256SUMS.sig"}
    files = {p.name for p in dist.iterdir()}
    check(files == expected, f"the release's files ({sorted(files ^ expected) or 'as listed'})")
    for path in sorted(dist.iterdir()):
        print(f"    {path.stat().st_size:>10,}  {path.name}")
    sums = (dist / "SHA256SUMS").read_text().split("\n")
    listed = {line.split("  ", 1)[1] for line in sums if line}
    check(listed == expected - {"SHA256SUMS", "SHA256SUMS.sig"}, "SHA256SUMS lists every other file")
    check(run("sha256sum", "--quiet", "-c", "SHA256SUMS", cwd=dist).returncode == 0, "SHA256SUMS checks")
    out = run(cosign, "verify-blob", "--key", dist / "cosign.pub", "--insecure-ignore-tlog",
              "--signature", dist / "SHA256SUMS.sig", dist / "SHA256SUMS")
    check(out.returncode == 0, "cosign verify-blob: SHA256SUMS.sig is SHA256SUMS's signature")
    check(run("cmp", "-s", dist / "cosign.pub", keys / "cosign.pub").returncode == 0,
          "cosign.pub is the key COSIGN_KEY named")
    digest = (dist / f"{name}.digest").read_text().strip()
    check(digest.startswith("sha256:") and len(digest) == 71, f"the image's digest ({digest})")

    helm = os.environ["HELM"]
    out = run(helm, "show", "chart", dist / f"{name}.tgz")
    check(f"\nversion: {version}\n" in out.stdout and f'\nappVersion: "{version}"\n' in out.stdout
          or f"\nappVersion: {version}\n" in out.stdout,
          f"the packaged chart's version and appVersion are {version}")
    out = run(helm, "show", "values", dist / f"{name}.tgz")
    check(f"repository: {image}\n" in out.stdout and f'digest: "{digest}"' in out.stdout,
          "the packaged chart's values pin the image by digest")
    install = (dist / "install.yaml").read_text()
    check(f"image: {image}@{digest}" in install and install.count("image: ") == 1,
          "install.yaml runs the image by digest")
    golden = "---\n".join((ROOT / "crds" / f"{p}.chromasync.dev.yaml").read_text()
                          for p in ("syncsources", "syncruns", "chromasyncconnections",
                                    "clusterchromasyncconnections"))
    check((dist / "crds.yaml").read_text() == golden, "crds.yaml holds the four CRDs of crds/")
    notes = (dist / "RELEASE-NOTES.md").read_text()
    changelog = (ROOT / "CHANGELOG.md").read_text()
    section = changelog.split(f"\n## [{version}]", 1)[1].split("\n## [", 1)[0]
    body = section.split("\n", 1)[1].strip()
    check(body and body in notes and digest in notes, "RELEASE-NOTES.md: CHANGELOG.md's section and the digest")
    return dist, image, digest, keys


def platform_digests(crane, image, digest):
    out = run(crane, "--insecure", "manifest", f"{image}@{digest}")
    index = json.loads(out.stdout)
    return {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]}


def registry_checks(dist, image, digest, keys, version, work):
    print("the release pushed to a registry on loopback")
    crane, cosign = tool("crane"), tool("cosign")
    out = run(ROOT / "deploy/publish-release.sh", dist, "--plain-http")
    print(out.stderr, end="")
    if not check(out.returncode == 0, "deploy/publish-release.sh pushes image, signature, SBOMs and chart"):
        return
    out = run(crane, "--insecure", "digest", f"{image}:{version}")
    check(out.stdout.strip() == digest, f"{image}:{version} is the release's digest")
    platforms = platform_digests(crane, image, digest)
    check(sorted(platforms) == ["amd64", "arm64"], f"the pushed index holds amd64 and arm64 ({sorted(platforms)})")

    http = ["--allow-http-registry", "--allow-insecure-registry", "--insecure-ignore-tlog"]
    pub = dist / "cosign.pub"
    out = run(cosign, "verify", "--key", pub, *http, f"{image}@{digest}")
    verified = json.loads(out.stdout or "[]") if out.returncode == 0 else []
    check(out.returncode == 0 and any(v["critical"]["image"]["docker-manifest-digest"] == digest
                                      for v in verified),
          "cosign verify --key cosign.pub passes for the release's digest"
          + ("" if out.returncode == 0 else f": {out.stderr[-800:]}"))

    # A modified image (one label more on the amd64 image), re-tagged, carrying a copy of the
    # release's signature: the signature names another digest.
    out = run(crane, "--insecure", "mutate", f"{image}@{platforms['amd64']}", "--label",
              "tampered=yes", "-t", f"{image}:{version}-tampered")
    tampered = out.stdout.strip().rsplit("@", 1)[-1]
    check(out.returncode == 0 and tampered.startswith("sha256:") and tampered != digest,
          f"a modified image pushed as {version}-tampered ({tampered[:19]})")
    sig_tag = lambda d: f"{image}:{d.replace(':', '-')}.sig"
    out = run(crane, "--insecure", "copy", sig_tag(digest), sig_tag(tampered))
    check(out.returncode == 0, "the release's signature copied onto the modified image")
    out = run(cosign, "verify", "--key", pub, *http, f"{image}@{tampered}")
    check(out.returncode != 0 and "invalid or missing digest in claim" in out.stderr,
          "cosign verify fails for the modified image: its signature names the release's digest"
          + (f" ({out.stderr.strip().splitlines()[-1]})" if out.stderr.strip() else ""))
    out = run(cosign, "verify", "--key", pub, *http, f"{image}@{platforms['arm64']}")
    check(out.returncode != 0 and "no signatures found" in out.stderr,
          "cosign verify fails for an unsigned image (the arm64 image alone)")
    other = pathlib.Path(work) / "other-key"
    other.mkdir()
    run(cosign, "generate-key-pair", cwd=other, env={"COSIGN_PASSWORD": ""})
    out = run(cosign, "verify", "--key", other / "cosign.pub", *http, f"{image}@{digest}")
    check(out.returncode != 0 and "no matching signatures" in out.stderr,
          "cosign verify fails for the release's digest with another key")

    print("the SBOMs")
    for arch, target in (("amd64", "x86_64-unknown-linux-musl"), ("arm64", "aarch64-unknown-linux-musl")):
        out = run(cosign, "download", "sbom", "--allow-http-registry", "--allow-insecure-registry",
                  f"{image}@{platforms[arch]}")
        attached = out.stdout.strip()
        release_sbom = (dist / f"chroma-sync-operator-{version}.{arch}.cdx.json").read_text().strip()
        check(out.returncode == 0 and json.loads(attached) == json.loads(release_sbom),
              f"the {arch} image carries the release's {arch} SBOM")
        out = run(cosign, "verify-attestation", "--key", dist / "cosign.pub", "--type", "cyclonedx",
                  *http, f"{image}@{platforms[arch]}")
        statements = [json.loads(base64.b64decode(json.loads(line)["payload"]))
                      for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []
        check(out.returncode == 0 and any(st.get("predicate") == json.loads(release_sbom)
                                          and st["subject"][0]["digest"]["sha256"] == platforms[arch].split(":")[1]
                                          for st in statements),
              f"cosign verify-attestation --key: the {arch} SBOM is a signed attestation of the {arch} image"
              + ("" if out.returncode == 0 else f": {out.stderr[-600:]}"))
        out = run(cosign, "verify-attestation", "--key", dist / "cosign.pub", "--type", "cyclonedx",
                  *http, f"{image}@{tampered}")
        check(out.returncode != 0, f"... and verify-attestation fails for the modified image")
        sbom = json.loads(release_sbom)
        listed = {(c["name"], c["version"]) for c in sbom.get("components", [])}
        # The crates linked into the binary: its normal dependencies resolved for the target,
        # without procedural macros and what only they use (compiled for the build host). The
        # SBOM lists those macros too (build inputs): reported, not required.
        tree = run("cargo", "tree", "--locked", "--offline", "-p", "chroma-sync-operator",
                   "-e", "normal,no-proc-macro", "--target", target, "--prefix", "none", "--format", "{p}")
        assert tree.returncode == 0, tree.stderr
        linked = set()
        for line in tree.stdout.splitlines():
            crate, ver = line.split()[:2]
            if crate != "chroma-sync-operator":
                linked.add((crate, ver.lstrip("v")))
        missing = sorted(linked - listed)
        check(linked and not missing,
              f"the {arch} SBOM lists all {len(linked)} crates the binary links (cargo tree -p "
              f"chroma-sync-operator -e normal,no-proc-macro --target {target}); it has "
              f"{len(listed)} components, {len(listed - linked)} of them build-time macros and their crates"
              + (f"; missing {missing[:10]}" if missing else ""))
        purls = {c.get("purl") for c in sbom.get("components", [])}
        check(all(f"pkg:cargo/{c}@{v}" in purls for c, v in linked),
              f"the {arch} SBOM names each linked crate by its cargo purl")
        check(sbom["metadata"]["component"]["name"] == "chroma-sync-operator"
              and sbom["metadata"]["component"]["version"] == version,
              f"the {arch} SBOM describes chroma-sync-operator {version}")


def helm_install(image, digest, version, registry):
    print("helm install from oci://")
    helm = os.environ["HELM"]
    env = {"HELM_CACHE_HOME": "/tmp/release-check-helm/cache",
           "HELM_CONFIG_HOME": "/tmp/release-check-helm/config",
           "HELM_DATA_HOME": "/tmp/release-check-helm/data"}
    ns = f"release-{os.getpid()}"
    chart = f"oci://{registry}/chroma-sync-operator/charts/chroma-sync-operator"
    out = run(helm, "install", "op", chart, "--version", version, "--plain-http", "-n", ns,
              "--create-namespace", env=env)
    check(out.returncode == 0 and "STATUS: deployed" in out.stdout,
          f"helm install op {chart} --version {version}" + ("" if out.returncode == 0 else f": {out.stderr}"))
    kubectl = ROOT / "target/controlplane-test/kubectl"
    out = run(kubectl, "get", "deployment", "op-chroma-sync-operator", "-n", ns, "-o",
              "jsonpath={.spec.template.spec.containers[0].image}")
    check(out.stdout == f"{image}@{digest}", f"the Deployment runs {out.stdout or out.stderr}")
    out = run(helm, "list", "-n", ns, "-o", "json", env=env)
    releases = json.loads(out.stdout or "[]")
    check([(r["chart"], r["app_version"]) for r in releases] == [(f"chroma-sync-operator-{version}", version)],
          f"helm list: chart chroma-sync-operator-{version}, app version {version}")
    run(helm, "uninstall", "op", "-n", ns, env=env)
    run(kubectl, "delete", "namespace", ns, "--wait=false")


def pulled_binary(crane, image, digest, version, work):
    print("the binary pulled from the registry")
    layout = pathlib.Path(work) / "pulled"
    out = run(crane, "--insecure", "pull", "--format", "oci", f"{image}@{digest}", layout)
    if not check(out.returncode == 0, f"crane pull {image}@{digest[:19]}"):
        return
    top = json.loads((layout / "index.json").read_text())
    index_desc = next(m for m in top["manifests"] if m["digest"] == digest)
    index = json.loads(image_check.blob(layout, index_desc["digest"]))
    for manifest_desc in index["manifests"]:
        arch = manifest_desc["platform"]["architecture"]
        bundle = pathlib.Path(work) / f"unpack-{arch}" / "bundle"
        bundle.parent.mkdir()
        image_check.unpack(layout, manifest_desc, bundle)
        rootfs = bundle / "rootfs"
        prefix = image_check.runner(rootfs, arch)
        if not check(prefix is not None, f"{arch}: the binary can run here"):
            continue
        out = subprocess.run(prefix + ["--version"], capture_output=True, text=True, env={}, timeout=60)
        check(out.returncode == 0 and out.stdout.strip() == f"chroma-sync-operator {version}",
              f"{arch}: --version prints {out.stdout.strip()!r}")
        if arch == "amd64" or prefix[-2] != "/qemu-static":
            build_info(prefix, rootfs, version, arch)


def build_info(prefix, rootfs, version, arch):
    """Starts the pulled binary against the control plane (an inline-credentials kubeconfig in
    its root filesystem) and reads build_info from /metrics."""
    kubeconfig = os.environ["KUBECONFIG"]
    pki = pathlib.Path(kubeconfig).parent / "pki"
    server = next(line.split("server: ", 1)[1] for line in open(kubeconfig) if "server: " in line)
    data = lambda p: base64.b64encode((pki / p).read_bytes()).decode()
    (rootfs / "kubeconfig").write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server.strip(),
                                                  "certificate-authority-data": data("ca.crt")}}],
        "users": [{"name": "admin", "user": {"client-certificate-data": data("admin.crt"),
                                             "client-key-data": data("admin.key")}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}]}))
    os.chmod(rootfs / "kubeconfig", 0o644)
    port = free_port()
    proc = subprocess.Popen(prefix + ["--leader-election=false", f"--metrics-address=127.0.0.1:{port}",
                                      "--namespaces=default", "--chroma-url=https://sync.example.invalid"],
                            env={"KUBECONFIG": "/kubeconfig"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    metrics = ""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    metrics = r.read().decode()
                    break
            except OSError:
                time.sleep(0.5)
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    line = f'chroma_sync_operator_build_info{{version="{version}"}} 1'
    check(line in metrics.splitlines(), f"{arch}: /metrics of the pulled binary has {line}"
          + ("" if metrics else f" (no /metrics; stderr: {err[-800:]})"))


def main():
    version = cargo_version()
    print(f"release check of {version}")
    refusals(version)
    crane = tool("crane")
    port = free_port()
    registry = f"127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as work:
        blobs = pathlib.Path(work) / "registry"
        blobs.mkdir()
        server = subprocess.Popen([crane, "registry", "serve", "--address", registry,
                                   "--disk", str(blobs)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"http://{registry}/v2/", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            check(server.poll() is None, f"crane registry serve on {registry}")
            workflow(work)
            built = build_release(registry, version, work)
            if built:
                dist, image, digest, keys = built
                registry_checks(dist, image, digest, keys, version, work)
                helm_install(image, digest, version, registry)
                pulled_binary(crane, image, digest, version, work)
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(f"release: {len(passed)} passed, {len(failed)} failed")
    if failed or not passed:
        sys.exit(1)


if __name__ == "__main__":
    main()
