//! The Chroma token: missing, wrong, read-only and rotated; never in logs (even at trace level),
//! Events or status; and never another namespace's, nor sent anywhere but the
//! operator's Chroma URL.

use crate::harness::*;
use crate::support::objects::{namespace, token_secret};
use base64::Engine;
use chroma_sync_standin::Tokens;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_missing_wrong_then_rotated() {
    let env = Env::start("token").await;
    let mut spec = github("acme/tok");
    spec["tokenSecretRef"] = json!({"name": "later"});
    env.create("tok", spec).await;
    let o = env.wait_reason("tok", "MissingCredentials", SOON).await;
    assert_eq!(condition(&o, "Stalled").as_deref(), Some("True"));
    assert_eq!(env.standin.calls("create_source", "*"), 0);

    // The Secret appears, with a wrong token: 401, Stalled, retried only on the slow backoff
    // (and whenever the Secret changes). (A Secret of its own: switching the object to the
    // admin's Secret while rewriting that one would race the cache of its old value.)
    env.put_secret("later", "wrong-token").await;
    let o = env.wait_reason("tok", "Unauthorized", SOON).await;
    assert_eq!(o.status.unwrap().last_error.unwrap().http_status, Some(401));

    // A viewer's token: 403.
    env.put_secret("later", VIEWER_TOKEN).await;
    env.wait_reason("tok", "Forbidden", SOON).await;

    // Rotation to a good token takes effect at once, without a restart.
    env.put_secret("later", TOKEN).await;
    env.wait_reason("tok", "SourceReady", Duration::from_secs(20))
        .await;
    assert_eq!(env.source_ids().len(), 1);

    // No token value anywhere it could leak.
    let o = env.get("tok").await;
    let dump = serde_json::to_string(&o).unwrap();
    let log = env.operator_log();
    let events = format!("{:?}", env.events("tok").await);
    for t in [TOKEN, VIEWER_TOKEN, "wrong-token"] {
        assert!(
            !dump.contains(t) && !log.contains(t) && !events.contains(t),
            "{t} leaked"
        );
    }
    env.standin.set_tokens(Tokens::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_reaches_logs_at_trace_level_events_or_status() {
    let mut env = Env::without_operator("trace").await;
    env.log_filter = "trace".into();
    let wrong = "wrong-token-7f3a9c";
    env.put_token_secret(wrong).await;
    let env = env.with_operator();
    env.create("t", github("acme/trace")).await;
    env.wait_reason("t", "Unauthorized", SOON).await;
    // The Warning Event exists, so the search below looks at a real one.
    env.wait_event("t", "Unauthorized", &["401"]).await;
    env.put_token_secret(TOKEN).await;
    env.wait_reason("t", "SourceReady", SOON).await;
    env.delete("t").await;
    env.wait_gone("t", SOON).await;

    let log = env.operator_log();
    assert!(log.lines().count() > 200, "trace logging is on");
    let events = format!("{:?}", env.events("t").await);
    let b64 = base64::engine::general_purpose::STANDARD;
    for secret in [TOKEN, wrong] {
        for form in [secret.to_owned(), b64.encode(secret)] {
            assert!(!log.contains(&form), "{form} is in the trace log");
            assert!(!events.contains(&form), "{form} is in an event");
        }
    }
}

/// Someone who may create SyncSources but not read Secrets cannot use the operator to learn
/// one: a SyncSource names a Secret of its own namespace only (the field to name another does not
/// exist), and no field sends the token anywhere but the operator's Chroma URL. With strict field
/// validation (kubectl's default) such fields are refused; without it they are pruned, and the
/// operator, watching every namespace, still never uses another namespace's Secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_syncsource_cannot_borrow_another_namespaces_secret_or_redirect_the_token() {
    let cluster = PrivateCluster::start("borrow");
    let mut env = Env::on_private_cluster("borrow", &cluster).await;
    // The token lives only in the victim's namespace.
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    secrets
        .delete(TOKEN_SECRET, &DeleteParams::default())
        .await
        .unwrap();
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    namespaces
        .create(&PostParams::default(), &namespace("victim"))
        .await
        .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), "victim")
        .create(&PostParams::default(), &token_secret(TOKEN_SECRET, TOKEN))
        .await
        .unwrap();

    let raw: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        &env.ns,
        &kube::api::ApiResource::erase::<chroma_sync_operator::crd::SyncSource>(&()),
    );
    let object = |spec: serde_json::Value| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncSource",
            "metadata": {"name": "borrow"}, "spec": spec
        }))
        .unwrap()
    };
    let mut borrowed = github("acme/borrow");
    borrowed["tokenSecretRef"] = json!({"name": TOKEN_SECRET, "namespace": "victim"});
    let mut redirected = github("acme/borrow");
    redirected["chromaUrl"] = json!("http://127.0.0.1:9/collect");
    // Server-side apply, as kubectl --server-side, Argo CD and Flux send it.
    let strict = PatchParams::apply("e2e-tests").validation_strict();
    for (spec, field) in [
        (&borrowed, ".spec.tokenSecretRef.namespace"),
        (&redirected, ".spec.chromaUrl"),
    ] {
        let refused = raw
            .patch("borrow", &strict, &Patch::Apply(&object(spec.clone())))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains(&format!("{field}: field not declared in schema")),
            "{refused}"
        );
    }
    let mut both = borrowed.clone();
    both["chromaUrl"] = redirected["chromaUrl"].clone();
    let object = object(both);
    // Without validation: stored, with both fields pruned.
    raw.create(&PostParams::default(), &object).await.unwrap();
    let stored = serde_json::to_value(env.get("borrow").await.spec).unwrap();
    assert_eq!(
        stored["tokenSecretRef"],
        json!({"name": TOKEN_SECRET, "key": "token"})
    );
    assert!(stored.get("chromaUrl").is_none(), "{stored}");

    env.watch_all_namespaces = true;
    env.start_operator();
    let o = env.wait_reason("borrow", "MissingCredentials", SOON).await;
    let message = ready(&o).unwrap().2;
    assert!(
        message.contains(&format!("{}/{TOKEN_SECRET}", env.ns)),
        "{message}"
    );
    let calls = env.standin.all_calls();
    assert!(
        calls.values().all(|&n| n == 0),
        "calls reached Chroma: {calls:?}"
    );
}

/// `--secret-label-selector` narrows the Secret watch: a Secret without the label is invisible
/// (the object says so, naming the selector), and labelling it brings the object to Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_label_selector_narrows_what_the_operator_sees() {
    let mut env = Env::without_operator("selector").await;
    env.extra_args = vec![
        "--secret-label-selector".into(),
        "chromasync.dev/token=true".into(),
    ];
    let env = env.with_operator();
    env.create("sel", github("acme/selector")).await;
    let o = env.wait_reason("sel", "MissingCredentials", SOON).await;
    let message = ready(&o).unwrap().2;
    assert!(
        message.contains("selector \"chromasync.dev/token=true\""),
        "{message}"
    );
    assert_eq!(env.standin.calls("create_source", "*"), 0);

    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let labelled = json!({"metadata": {"labels": {"chromasync.dev/token": "true"}}});
    secrets
        .patch(
            TOKEN_SECRET,
            &PatchParams::default(),
            &Patch::Merge(labelled),
        )
        .await
        .unwrap();
    env.wait_reason("sel", "SourceReady", SOON).await;
}
