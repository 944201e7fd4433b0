//! The committed CRD is exactly what the Rust types generate (regenerate with `make crd`).

#[test]
fn committed_crds_match_the_types() {
    for (plural, generated) in chroma_sync_operator::crd::all_crds_yaml() {
        let path = format!(
            "{}/crds/{plural}.chromasync.dev.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{path} is stale: run `make crd` and commit the result"
        );
        // The chart's copy, which templates/crds.yaml renders.
        let chart = format!(
            "{}/deploy/helm/chroma-sync-operator/files/crds/{plural}.chromasync.dev.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        let copy = std::fs::read_to_string(&chart).unwrap_or_default();
        assert!(copy == generated, "{chart} is stale: run `make crd`");
    }
}

/// No tool deletes a CRD by accident: Helm keeps it on uninstall and rollback, Flux never prunes
/// it, Argo CD neither prunes it nor deletes it with its Application.
#[test]
fn every_crd_is_kept_by_helm_flux_and_argo_cd() {
    let mut names = Vec::new();
    for (plural, yaml) in chroma_sync_operator::crd::all_crds_yaml() {
        let crd: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
        let annotations = &crd["metadata"]["annotations"];
        assert_eq!(annotations["helm.sh/resource-policy"], "keep", "{plural}");
        assert_eq!(
            annotations["kustomize.toolkit.fluxcd.io/prune"], "disabled",
            "{plural}"
        );
        let argo = annotations["argocd.argoproj.io/sync-options"]
            .as_str()
            .unwrap_or_default();
        let options: Vec<&str> = argo.split(',').map(str::trim).collect();
        assert!(
            options.contains(&"Delete=false") && options.contains(&"Prune=false"),
            "{plural}: {argo:?}"
        );
        names.push(plural);
    }
    assert_eq!(
        names,
        [
            "syncsources",
            "syncruns",
            "chromasyncconnections",
            "clusterchromasyncconnections"
        ]
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

#[test]
fn the_syncrun_crd_makes_runs_immutable_and_reads_in_progress_when_new() {
    let crd = serde_json::to_value(chroma_sync_operator::crd::run::crd()).unwrap();
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["subresources"]["status"], serde_json::json!({}));
    let root = &version["schema"]["openAPIV3Schema"]["properties"];
    assert_eq!(root["status"]["default"]["observedGeneration"], -1);
    let rules = root["spec"]["x-kubernetes-validations"].to_string();
    assert!(rules.contains("self == oldSelf"), "{rules}");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "syncrun");
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Source",
            "Phase",
            "Ready",
            "Reason",
            "Age",
            "Invocation",
            "Duration (ms)",
            "Message"
        ]
    );
    assert_eq!(
        crd["spec"]["names"]["categories"],
        serde_json::json!(["chromasync"])
    );
}

/// `kubectl explain` has something to say for every field of every kind: each named property
/// (spec and status, all the way down) carries a description. List items and map values are
/// described by the field that holds them.
#[test]
fn every_field_of_every_crd_is_described() {
    fn undescribed(node: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        if let Some(properties) = node["properties"].as_object() {
            for (name, child) in properties {
                let child_path = format!("{path}.{name}");
                if child["description"].as_str().is_none_or(str::is_empty) {
                    out.push(child_path.clone());
                }
                undescribed(child, &child_path, out);
            }
        }
        if node["items"].is_object() {
            undescribed(&node["items"], &format!("{path}[]"), out);
        }
        if node["additionalProperties"].is_object() {
            undescribed(&node["additionalProperties"], &format!("{path}{{}}"), out);
        }
    }
    for (plural, yaml) in chroma_sync_operator::crd::all_crds_yaml() {
        let crd: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
        let mut missing = Vec::new();
        for version in crd["spec"]["versions"].as_array().unwrap() {
            let schema = &version["schema"]["openAPIV3Schema"];
            undescribed(schema, "", &mut missing);
        }
        // metadata and apiVersion/kind are Kubernetes' own, described by kubectl itself.
        missing.retain(|p| ![".apiVersion", ".kind", ".metadata"].contains(&p.as_str()));
        assert!(
            missing.is_empty(),
            "{plural}: fields without a description: {missing:?}"
        );
    }
}
