//! The CRDs through the chart, on a control plane of the test's own (it installs, changes and
//! deletes CRDs): a plain `helm install` installs them, `helm upgrade` upgrades them, `helm
//! uninstall` and `helm rollback` keep them and every object; and from a release of the previous
//! chart (CRDs from its crds/ directory, no Helm ownership) the README's upgrade steps work as
//! written, where the old step (`kubectl apply --server-side` of the CRDs) is refused.

use crate::harness::release::{
    CHART, CRDS, RELEASE, RELEASE_NS, ROOT, crd_metadata, helm_at, kubectl_at, previous_chart,
    previous_release, previous_tag, run_readme_upgrade,
};
use crate::harness::{PrivateCluster, github};
use crate::support::control_plane::client_for;
use crate::support::objects::{namespace, sync_source};
use chroma_sync_operator::crd::run::SyncRun;
use chroma_sync_operator::crd::{KEEP_ANNOTATIONS, SyncSource};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use serde_json::json;
use std::path::Path;

fn assert_kept_annotations(kubeconfig: &Path) {
    for crd in CRDS {
        let metadata = crd_metadata(kubeconfig, crd);
        for (key, value) in KEEP_ANNOTATIONS {
            assert_eq!(
                metadata["annotations"][key].as_str(),
                Some(value),
                "{crd}: {key}"
            );
        }
    }
}

/// True when every CRD exists.
fn crds_exist(kubeconfig: &Path) -> bool {
    let mut args = vec!["get", "crd"];
    args.extend(CRDS);
    kubectl_at(kubeconfig, &args).0
}

/// The objects left in namespace `ns`: (SyncSources, SyncRuns).
async fn objects(client: &kube::Client, ns: &str) -> (usize, usize) {
    let sources: Api<SyncSource> = Api::namespaced(client.clone(), ns);
    let runs: Api<SyncRun> = Api::namespaced(client.clone(), ns);
    let lp = Default::default();
    (
        sources
            .list(&lp)
            .await
            .expect("list SyncSources")
            .items
            .len(),
        runs.list(&lp).await.expect("list SyncRuns").items.len(),
    )
}

async fn create_objects(client: &kube::Client, ns: &str) {
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace(ns))
        .await
        .expect("create the namespace");
    Api::<SyncSource>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &sync_source("docs", github("acme/docs")),
        )
        .await
        .expect("create a SyncSource");
    let run: SyncRun = serde_json::from_value(json!({
        "apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncRun",
        "metadata": {"name": "docs-1"},
        "spec": {"sourceRef": {"name": "docs"}, "targetCollectionName": "docs"},
    }))
    .unwrap();
    Api::<SyncRun>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &run)
        .await
        .expect("create a SyncRun");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_installs_upgrades_and_keeps_the_crds_and_the_readme_upgrades_from_the_previous_release()
 {
    let cluster = PrivateCluster::start("crds");
    let kubeconfig = cluster.kubeconfig();
    let client = client_for(&kubeconfig).await;
    let ns_args = ["-n", RELEASE_NS];

    // A plain `helm install` installs the CRDs, owned by the release, with the keep annotations.
    let (ok, out) = helm_at(
        &kubeconfig,
        &[
            &["install", RELEASE, CHART, "--create-namespace"],
            &ns_args[..],
        ]
        .concat(),
    );
    assert!(ok, "{out}");
    assert!(crds_exist(&kubeconfig), "helm install made no CRDs");
    assert_kept_annotations(&kubeconfig);
    for crd in CRDS {
        let metadata = crd_metadata(&kubeconfig, crd);
        assert_eq!(
            metadata["annotations"]["meta.helm.sh/release-name"].as_str(),
            Some(RELEASE),
            "{crd}"
        );
    }
    create_objects(&client, "team-a").await;

    // `helm upgrade` upgrades them: a chart whose SyncSource CRD says something new.
    let changed = Path::new(env!("CARGO_TARGET_TMPDIR")).join("crds-changed-chart");
    let _ = std::fs::remove_dir_all(&changed);
    std::fs::create_dir_all(&changed).unwrap();
    let status = std::process::Command::new("cp")
        .args(["-r", CHART])
        .arg(&changed)
        .status()
        .unwrap();
    assert!(status.success());
    let chart = changed.join("chroma-sync-operator");
    let crd_file = chart.join("files/crds/syncsources.chromasync.dev.yaml");
    let text = std::fs::read_to_string(&crd_file).unwrap();
    let marker = "A Chroma Sync source, managed by chroma-sync-operator.";
    assert!(text.contains(marker));
    std::fs::write(
        &crd_file,
        text.replace(
            marker,
            "A Chroma Sync source (upgraded), managed by chroma-sync-operator.",
        ),
    )
    .unwrap();
    let (ok, out) = helm_at(
        &kubeconfig,
        &[
            &[
                "upgrade",
                RELEASE,
                chart.to_str().unwrap(),
                "--reset-then-reuse-values",
            ],
            &ns_args[..],
        ]
        .concat(),
    );
    assert!(ok, "{out}");
    let description = |kubeconfig: &Path| {
        let (ok, out) = kubectl_at(
            kubeconfig,
            &[
                "get",
                "crd",
                CRDS[0],
                "-o",
                "jsonpath={.spec.versions[0].schema.openAPIV3Schema.description}",
            ],
        );
        assert!(ok, "{out}");
        out
    };
    assert!(description(&kubeconfig).contains("(upgraded)"));

    // `helm rollback` and `helm uninstall` keep the CRDs and every object.
    let (ok, out) = helm_at(
        &kubeconfig,
        &[&["rollback", RELEASE, "1"], &ns_args[..]].concat(),
    );
    assert!(ok, "{out}");
    let (ok, out) = helm_at(
        &kubeconfig,
        &[&["uninstall", RELEASE], &ns_args[..]].concat(),
    );
    assert!(
        ok && out.contains("kept due to the resource policy"),
        "{out}"
    );
    assert!(crds_exist(&kubeconfig), "helm uninstall deleted the CRDs");
    assert_eq!(objects(&client, "team-a").await, (1, 1));

    // The previous release's chart, which installs the CRDs from its crds/ directory: first
    // remove this chart's CRDs (and the objects with them).
    let mut delete = vec!["delete", "crd", "--wait=true"];
    delete.extend(CRDS);
    let (ok, out) = kubectl_at(&kubeconfig, &delete);
    assert!(ok, "{out}");
    let previous = previous_release(true);
    let previous_chart = previous_chart(&previous);
    let (ok, out) = helm_at(
        &kubeconfig,
        &[
            &["install", RELEASE, previous_chart.to_str().unwrap()],
            &ns_args[..],
        ]
        .concat(),
    );
    assert!(ok, "helm install of {}: {out}", previous_tag());
    assert!(crds_exist(&kubeconfig));
    let metadata = crd_metadata(&kubeconfig, CRDS[0]);
    assert!(
        metadata["annotations"]["meta.helm.sh/release-name"].is_null(),
        "the previous chart's CRDs are not the release's: {metadata}"
    );
    create_objects(&client, "team-b").await;

    // The old documented step is refused as soon as a release changes a CRD's schema: Helm's
    // create owns its fields (this release's CRDs differ from the previous one's only in the
    // annotations, which nobody owned; a schema change stands for the next release's).
    let crds = std::fs::read_to_string(format!("{ROOT}/crds/syncsources.chromasync.dev.yaml"))
        .unwrap()
        .replace(
            marker,
            "A Chroma Sync source (next), managed by chroma-sync-operator.",
        );
    let next = changed.join("next-syncsources.yaml");
    std::fs::write(&next, crds).unwrap();
    let next = next.to_str().unwrap();
    let (ok, out) = kubectl_at(&kubeconfig, &["apply", "--server-side", "-f", next]);
    assert!(
        !ok && out.contains(r#"conflict with "helm""#) && out.contains(".spec.versions"),
        "the apply without --force-conflicts: {out}"
    );
    let (ok, out) = kubectl_at(
        &kubeconfig,
        &["apply", "--server-side", "--force-conflicts", "-f", next],
    );
    assert!(ok, "{out}");
    assert!(description(&kubeconfig).contains("(next)"));

    // The README's steps, as written: the CRDs, their adoption, helm upgrade.
    run_readme_upgrade(&kubeconfig);
    assert_kept_annotations(&kubeconfig);
    assert!(!description(&kubeconfig).contains("(next)"));
    let (ok, manifest) = helm_at(
        &kubeconfig,
        &[&["get", "manifest", RELEASE], &ns_args[..]].concat(),
    );
    assert!(ok, "{manifest}");
    assert_eq!(
        manifest.matches("kind: CustomResourceDefinition").count(),
        4,
        "the release owns the CRDs"
    );
    assert_eq!(objects(&client, "team-b").await, (1, 1));

    // Back to the previous release: its manifest has no CRDs, and the rollback keeps them.
    let (ok, out) = helm_at(
        &kubeconfig,
        &[&["rollback", RELEASE, "1"], &ns_args[..]].concat(),
    );
    assert!(ok, "{out}");
    assert!(crds_exist(&kubeconfig), "helm rollback deleted the CRDs");
    assert_eq!(objects(&client, "team-b").await, (1, 1));
    // Forward with --reuse-values, which carries the previous chart's values (no crds.*): the
    // chart still owns and keeps the CRDs.
    let (ok, out) = helm_at(
        &kubeconfig,
        &[&["upgrade", RELEASE, CHART, "--reuse-values"], &ns_args[..]].concat(),
    );
    assert!(ok, "{out}");
    let (ok, manifest) = helm_at(
        &kubeconfig,
        &[&["get", "manifest", RELEASE], &ns_args[..]].concat(),
    );
    assert!(ok, "{manifest}");
    assert_eq!(manifest.matches("helm.sh/resource-policy: keep").count(), 4);
    // And again as the README says: its steps are safe to repeat.
    run_readme_upgrade(&kubeconfig);
    let (ok, out) = helm_at(
        &kubeconfig,
        &[&["uninstall", RELEASE], &ns_args[..]].concat(),
    );
    assert!(ok, "{out}");
    assert!(crds_exist(&kubeconfig), "helm uninstall deleted the CRDs");
    assert_eq!(objects(&client, "team-b").await, (1, 1));
}
