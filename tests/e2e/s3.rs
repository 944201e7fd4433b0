//! S3 sources with the published API's fields: `autoSync`, and an AWS key read from a Secret
//! (`credentialsSecretRef`) and sent inline. A missing Secret or key stalls with no call; the
//! key reaches the service and nothing else (not the log at trace level, nor status, nor any of
//! the namespace's Events); a changed key replaces the source.

use crate::harness::*;
use base64::Engine;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

const KEY_ID: &str = "AKIAE2ETESTKEY7F3A9C";
const SECRET_KEY: &str = "e2e/Secret+Access/Key/9c7f3a0d1b2e4f60";
const ROTATED_SECRET_KEY: &str = "e2e/Rotated+Access/Key/55aa66bb77cc88dd";

/// Creates or updates Secret `name` with `data` (stringData).
async fn put_aws_secret(env: &Env, name: &str, data: serde_json::Value) {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "type": "Opaque", "stringData": data
    }))
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), &env.ns)
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .expect("apply the AWS Secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_source_sends_auto_sync_and_the_aws_key_of_its_secret_and_nothing_leaks() {
    let mut env = Env::without_operator("s3src").await;
    env.log_filter = "trace".into();
    let env = env.with_operator();
    let spec = json!({
        "databaseName": DATABASE,
        "tokenSecretRef": {"name": TOKEN_SECRET},
        "s3": {"bucketName": "acme-reports", "region": "eu-west-1", "collectionName": "reports",
               "pathPrefix": "q3/", "autoSync": "direct",
               "credentialsSecretRef": {"name": "aws", "secretAccessKeyKey": "secret"}}
    });
    env.create("reports", spec).await;

    // No Secret: stalled on credentials, naming the reference, and no call.
    let o = env.wait_reason("reports", "MissingCredentials", SOON).await;
    let (_, _, message) = ready(&o).unwrap();
    assert!(
        message.contains("aws") && message.contains("s3.credentialsSecretRef"),
        "{message}"
    );
    assert_eq!(condition(&o, "Stalled").as_deref(), Some("True"));

    // The Secret without its secret key (under the overridden name): still no call; the message
    // names the missing key. The Secret's appearance wakes the object.
    put_aws_secret(&env, "aws", json!({"accessKeyId": KEY_ID})).await;
    wait_for("the message to name the missing key", SOON, || async {
        let o = env.get("reports").await;
        let (_, reason, message) = ready(&o)?;
        (reason == "MissingCredentials" && message.contains("\"secret\"")).then_some(())
    })
    .await;
    assert_eq!(env.standin.calls("create_source", "*"), 0);

    // The whole key: Ready; the service got auto_sync and the key, and holds a credential id.
    put_aws_secret(
        &env,
        "aws",
        json!({"accessKeyId": KEY_ID, "secret": SECRET_KEY}),
    )
    .await;
    let o = env.wait_reason("reports", "SourceReady", SOON).await;
    let id = o.status.as_ref().unwrap().source_id.clone().unwrap();
    let held = env.standin.sources(DATABASE);
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].0, id);
    let s3 = &held[0].1["s3"];
    assert_eq!(s3["auto_sync"], json!("direct"), "{s3}");
    assert_eq!(s3["path_prefix"], json!("q3/"));
    assert!(s3["aws_credential_id"].is_i64(), "{s3}");
    assert!(s3.get("aws_secret_access_key").is_none(), "{s3}");
    let received = env.standin.aws_credentials();
    assert_eq!(received.len(), 1);
    assert_eq!(
        (
            received[0].access_key_id.as_str(),
            received[0].secret_access_key.as_str()
        ),
        (KEY_ID, SECRET_KEY)
    );

    // A rewrite of the Secret with the same values changes nothing.
    put_aws_secret(
        &env,
        "aws",
        json!({"accessKeyId": KEY_ID, "secret": SECRET_KEY, "note": "relabelled"}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(env.standin.calls("create_source", "*"), 1);
    assert_eq!(env.standin.calls("delete_source", "*"), 0);

    // A rotated key replaces the source (there is no update call), at once.
    put_aws_secret(
        &env,
        "aws",
        json!({"accessKeyId": KEY_ID, "secret": ROTATED_SECRET_KEY}),
    )
    .await;
    env.wait_event("reports", "Replaced", &[&id]).await;
    let o = env.wait_reason("reports", "SourceReady", SOON).await;
    let new_id = o.status.as_ref().unwrap().source_id.clone().unwrap();
    assert_ne!(new_id, id);
    assert_eq!(env.standin.sources(DATABASE).len(), 1);
    let received = env.standin.aws_credentials();
    assert_eq!(received.len(), 2);
    assert_eq!(received[1].secret_access_key, ROTATED_SECRET_KEY);

    // Deleted: the source goes, and no cleanup needs the key.
    env.delete("reports").await;
    env.wait_gone("reports", SOON).await;
    assert!(env.standin.sources(DATABASE).is_empty());

    // No value of the key anywhere it could leak: the trace log, the object's status (as last
    // seen), every Event of the namespace.
    let log = env.operator_log();
    assert!(log.lines().count() > 200, "trace logging is on");
    let status = serde_json::to_string(&o).unwrap();
    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    let events = events.list(&ListParams::default()).await.unwrap();
    assert!(!events.items.is_empty());
    let events = serde_json::to_string(&events.items).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    for value in [KEY_ID, SECRET_KEY, ROTATED_SECRET_KEY] {
        for form in [value.to_owned(), b64.encode(value)] {
            assert!(!log.contains(&form), "{form} is in the operator's log");
            assert!(!status.contains(&form), "{form} is in the status");
            assert!(!events.contains(&form), "{form} is in an Event");
        }
    }
}
