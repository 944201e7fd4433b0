//! Admission: the CRD's schema and validation rules refuse invalid SyncSources before the
//! operator sees them, with messages that name the field.

use crate::harness::*;
use kube::api::PostParams;

/// Every case of `tests/corpus/invalid/` is refused at admission with a message that names the
/// field (the case's `expect`). Prints the table of case -> outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_refuses_the_invalid_corpus_with_field_messages() {
    let env = Env::without_operator("admission").await;
    let raw: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        env.client.clone(),
        &env.ns,
        &kube::api::ApiResource::erase::<chroma_sync_operator::crd::SyncSource>(&()),
    );
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/invalid");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 40, "the corpus has {} cases", files.len());
    let mut table = Vec::new();
    let mut wrong = Vec::new();
    for path in &files {
        let case: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let expected = case["expect"].as_str().unwrap();
        let obj: kube::api::DynamicObject = serde_json::from_value(case["object"].clone()).unwrap();
        let outcome = match raw.create(&PostParams::default(), &obj).await {
            Ok(_) => "ACCEPTED".to_owned(),
            Err(kube::Error::Api(status)) => format!("{} {}", status.code, status.message),
            Err(e) => format!("error {e}"),
        };
        if !(outcome.starts_with("422 ") && outcome.contains(expected)) {
            wrong.push(format!(
                "{name}: expected 422 naming {expected:?}, got {outcome}"
            ));
        }
        let shown: String = outcome.chars().take(150).collect();
        table.push(format!("{name:<42} | {shown}"));
    }
    println!("case | outcome\n{}", table.join("\n"));
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // A valid object is accepted and reads as in progress, never ready, before the operator looks.
    let ok = env.create("valid", github("acme/valid")).await;
    assert_eq!(ok.status.unwrap().observed_generation, Some(-1));
}
