//! The committed CRD is exactly what the Rust types generate (regenerate with `make crd`).

#[test]
fn committed_crd_matches_the_types() {
    let committed = include_str!("../crds/syncsources.chromasync.dev.yaml");
    let generated = chroma_sync_operator::crd::crd_yaml();
    assert!(
        committed == generated,
        "crds/syncsources.chromasync.dev.yaml is stale: run `make crd` and commit the result"
    );
}

#[test]
fn the_crd_carries_the_admission_rules_and_status_default() {
    let crd = serde_json::to_value(chroma_sync_operator::crd::crd()).unwrap();
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["subresources"]["status"], serde_json::json!({}));
    let root = &version["schema"]["openAPIV3Schema"]["properties"];
    assert_eq!(root["status"]["default"]["observedGeneration"], -1);
    let rules = root["spec"]["x-kubernetes-validations"].to_string();
    assert!(
        rules.contains("exactly one of github, webScrape or s3"),
        "{rules}"
    );
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "syncsrc");
}
