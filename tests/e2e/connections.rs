//! Connections on the real control plane: a namespace's own connections (the `default` one and
//! a named one, to two stand-ins with their own tokens), token rotation with no restart, and a
//! cluster connection that admits namespaces by label (0 calls while refused; a relabel noticed
//! without touching the object; losing permission deletes nothing).

use crate::harness::*;
use crate::support::standin;
use chroma_sync_operator::crd::{ChromaSyncConnection, ClusterChromaSyncConnection};
use chroma_sync_standin::Tokens;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const TOKEN_B: &str = "team-b-token";
const TOKEN_B_ROTATED: &str = "team-b-token-rotated";

/// A GitHub source spec in the stand-ins' database with no token of its own.
fn bare(repo: &str) -> Value {
    json!({"databaseName": DATABASE, "github": {"repository": repo}})
}

fn ready_of(conditions: Option<&Value>) -> Option<(String, String)> {
    let ready = conditions?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?;
    Some((
        ready["status"].as_str()?.to_owned(),
        ready["reason"].as_str()?.to_owned(),
    ))
}

async fn apply<K>(api: &Api<K>, name: &str, mut body: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    body["metadata"]["name"] = json!(name);
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .expect("apply");
}

/// Waits until connection `name` reads Ready with `reason`.
async fn wait_connection<K>(api: &Api<K>, name: &str, status: &str, reason: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    wait_for(&format!("connection {name}: {reason}"), SOON, || async {
        let c = serde_json::to_value(api.get(name).await.ok()?).ok()?;
        let found = ready_of(c["status"].get("conditions"))?;
        (found == (status.to_owned(), reason.to_owned())).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_connections_route_each_object_to_its_endpoint_with_its_token() {
    let env = Env::start("conns").await;
    let (team_b, url_b) = standin::start(TOKEN_B, &[]).await;
    env.put_secret("token-b", TOKEN_B).await;
    let api: Api<ChromaSyncConnection> = Api::namespaced(env.client.clone(), &env.ns);
    let connection = |url: &str, secret: &str| {
        json!({
            "apiVersion": "chromasync.dev/v1alpha1", "kind": "ChromaSyncConnection",
            "spec": {"url": url, "tokenSecretRef": {"name": secret}, "timeout": "5s"}
        })
    };
    apply(&api, "default", connection(&env.chroma_url, TOKEN_SECRET)).await;
    apply(&api, "team-b", connection(&url_b, "token-b")).await;
    wait_connection(&api, "default", "True", "Connected").await;
    wait_connection(&api, "team-b", "True", "Connected").await;
    // Both in the condition gauge the alerts read.
    let metrics = env.scrape_metrics().await;
    for name in ["default", "team-b"] {
        let series = format!(
            "chroma_sync_operator_condition{{kind=\"ChromaSyncConnection\",namespace=\"{}\",name=\"{name}\",type=\"Ready\",status=\"True\",reason=\"Connected\"}} 1",
            env.ns
        );
        assert!(metrics.contains(&series), "{series} in:\n{metrics}");
    }

    // No reference: the namespace's `default`. A reference: that connection.
    env.create("a", bare("acme/a")).await;
    let mut spec = bare("acme/b");
    spec["connectionRef"] = json!({"name": "team-b"});
    env.create("b", spec).await;
    let a = env.wait_reason("a", "SourceReady", SOON).await;
    let b = env.wait_reason("b", "SourceReady", SOON).await;
    let recorded = |o: &chroma_sync_operator::crd::SyncSource| {
        o.status.as_ref().and_then(|s| s.connection.clone())
    };
    assert_eq!(
        recorded(&a).as_deref(),
        Some("ChromaSyncConnection/default")
    );
    assert_eq!(recorded(&b).as_deref(), Some("ChromaSyncConnection/team-b"));
    // Each stand-in accepts only its own token, and holds only its object's source.
    let held = |s: &chroma_sync_standin::StandIn| -> Vec<String> {
        s.sources(DATABASE).into_iter().map(|(id, _)| id).collect()
    };
    let a_id = a.status.unwrap().source_id.unwrap();
    let b_id = b.status.unwrap().source_id.unwrap();
    assert_eq!(held(&env.standin), std::slice::from_ref(&a_id));
    assert_eq!(held(&team_b), std::slice::from_ref(&b_id));
    for endpoint in ["create_source", "list_sources"] {
        let refused = env.standin.calls(endpoint, "401") + team_b.calls(endpoint, "401");
        assert_eq!(refused, 0, "{endpoint}");
    }

    // Rotation: the stand-in takes only the new token from now on; the Secret changes; the
    // next object's calls carry it, with no restart and nothing new for `b`.
    team_b.set_tokens(Tokens {
        admin: [TOKEN_B_ROTATED.to_owned()].into(),
        viewer: Default::default(),
    });
    env.put_secret("token-b", TOKEN_B_ROTATED).await;
    let mut spec = bare("acme/b2");
    spec["connectionRef"] = json!({"name": "team-b"});
    env.create("b2", spec).await;
    env.wait_reason("b2", "SourceReady", SOON).await;
    assert_eq!(
        held(&team_b).len(),
        2,
        "b2's source is on team-b's stand-in"
    );
    assert_eq!(
        env.get("b").await.status.unwrap().source_id,
        Some(b_id.clone())
    );
    wait_connection(&api, "team-b", "True", "Connected").await;

    // Deleting `b` deletes its source through its own connection.
    env.delete("b").await;
    env.wait_gone("b", SOON).await;
    assert!(!held(&team_b).contains(&b_id));
    assert_eq!(held(&env.standin), [a_id]);

    // Pointing an object with a source at another connection is refused, with no call.
    let creates = team_b.calls("create_source", "*");
    let a = env
        .merge_spec("a", json!({"connectionRef": {"name": "team-b"}}))
        .await;
    assert!(a.status.is_some());
    env.wait_reason("a", "ConnectionChanged", SOON).await;
    assert_eq!(team_b.calls("create_source", "*"), creates);

    // A connection that does not exist: the object waits, naming it, with no call.
    let mut spec = bare("acme/c");
    spec["connectionRef"] = json!({"name": "nowhere"});
    env.create("c", spec).await;
    let c = env.wait_reason("c", "ConnectionNotReady", SOON).await;
    assert_eq!(condition(&c, "Reconciling").as_deref(), Some("True"));
    let (_, _, message) = ready(&c).unwrap();
    assert!(message.contains("nowhere"), "{message}");

    // A token the service refuses stalls the connection (reason Unauthorized).
    env.put_secret("token-b", "not-a-token").await;
    wait_connection(&api, "team-b", "False", "Unauthorized").await;
    // Each flip of Ready is an Event.
    env.wait_event("team-b", "Connected", &[url_b.as_str()])
        .await;
    env.wait_event("team-b", "Unauthorized", &["401"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_connection_serves_only_the_namespaces_it_admits() {
    let env = Env::start("cconn").await;
    let name = format!("platform-{}", env.ns);
    let label = format!("tenant-{}", env.ns);
    let api: Api<ClusterChromaSyncConnection> = Api::all(env.client.clone());
    let body = json!({
        "apiVersion": "chromasync.dev/v1alpha1", "kind": "ClusterChromaSyncConnection",
        "spec": {
            "url": env.chroma_url,
            "tokenSecretRef": {"name": TOKEN_SECRET, "namespace": env.ns},
            "namespaceSelector": {"matchLabels": {(label.clone()): "yes"}},
        }
    });
    apply(&api, &name, body).await;
    wait_connection(&api, &name, "True", "Connected").await;
    // A cluster-scoped object's Event goes to `default`.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(env.client.clone(), "default");
    wait_for("the cluster connection's Connected Event", SOON, || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str())
                    && e.reason.as_deref() == Some("Connected")
            })
            .then_some(())
    })
    .await;

    // (B) Not admitted: Stalled, ConnectionNotPermitted, and no call for the object.
    let mut spec = bare("acme/platform");
    spec["connectionRef"] = json!({"kind": "ClusterChromaSyncConnection", "name": name});
    env.create("s", spec).await;
    let s = env.wait_reason("s", "ConnectionNotPermitted", SOON).await;
    assert_eq!(condition(&s, "Stalled").as_deref(), Some("True"));
    for endpoint in ["create_source", "get_source", "delete_source"] {
        assert_eq!(env.standin.calls(endpoint, "*"), 0, "{endpoint}");
    }

    // (C) Labelling the namespace admits it: Ready without touching the object.
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    let relabel = |value: Option<&str>| {
        let patch = json!({"metadata": {"labels": {(label.clone()): value}}});
        let (namespaces, ns) = (namespaces.clone(), env.ns.clone());
        async move {
            namespaces
                .patch(&ns, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("label the namespace");
        }
    };
    let generation = env.get("s").await.metadata.generation;
    let labelled = Instant::now();
    relabel(Some("yes")).await;
    let s = env
        .wait_reason("s", "SourceReady", Duration::from_secs(10))
        .await;
    eprintln!("admitted after relabel in {:?}", labelled.elapsed());
    assert_eq!(
        s.metadata.generation, generation,
        "the object was not edited"
    );
    let id = s.status.as_ref().unwrap().source_id.clone().unwrap();
    assert_eq!(
        s.status.unwrap().connection,
        Some(format!("ClusterChromaSyncConnection/{name}"))
    );

    // (D) Removing the label: the reason returns, and nothing is deleted.
    relabel(None).await;
    env.wait_reason("s", "ConnectionNotPermitted", Duration::from_secs(10))
        .await;
    assert_eq!(env.standin.calls("delete_source", "*"), 0);
    let held: Vec<String> = env
        .standin
        .sources(DATABASE)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(held, std::slice::from_ref(&id));
    // Deleting the object while refused deletes nothing either: it waits for permission.
    env.delete("s").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.standin.calls("delete_source", "*"), 0);
    relabel(Some("yes")).await;
    env.wait_gone("s", SOON).await;
    assert_eq!(env.standin.calls("delete_source", "204"), 1);
    api.delete(&name, &DeleteParams::default())
        .await
        .expect("delete the cluster connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_trusts_its_ca_bundle_and_says_tls_failed_without_it() {
    use crate::support::tls::{TestCa, tls_front};
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    let env = Env::start("conntls").await;
    let ca = TestCa::new(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")), "conntls");
    let backend = env
        .chroma_url
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let (port, handshakes) = tls_front(&ca, backend).await;
    let url = format!("https://localhost:{port}");
    let pem = std::fs::read_to_string(&ca.ca_pem).unwrap();
    let bundle = json!({"ca.crt": pem});
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    apply(
        &secrets,
        "corp-ca",
        json!({"apiVersion": "v1", "kind": "Secret", "stringData": bundle}),
    )
    .await;
    let maps: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    apply(
        &maps,
        "corp-ca",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "data": bundle}),
    )
    .await;

    let api: Api<ChromaSyncConnection> = Api::namespaced(env.client.clone(), &env.ns);
    let connection = |ca: Value| {
        let mut spec = json!({"url": url, "tokenSecretRef": {"name": TOKEN_SECRET}});
        if !ca.is_null() {
            spec["caBundle"] = ca;
        }
        json!({"apiVersion": "chromasync.dev/v1alpha1", "kind": "ChromaSyncConnection", "spec": spec})
    };
    apply(&api, "untrusted", connection(Value::Null)).await;
    apply(
        &api,
        "by-secret",
        connection(json!({"secretName": "corp-ca"})),
    )
    .await;
    apply(
        &api,
        "by-configmap",
        connection(json!({"configMapName": "corp-ca"})),
    )
    .await;
    wait_connection(&api, "untrusted", "False", "TlsFailed").await;
    wait_connection(&api, "by-secret", "True", "Connected").await;
    wait_connection(&api, "by-configmap", "True", "Connected").await;
    let untrusted = serde_json::to_value(api.get("untrusted").await.unwrap()).unwrap();
    let stalled = untrusted["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Stalled" && c["status"] == "True");
    assert!(
        stalled,
        "a certificate the operator does not trust needs a person"
    );

    // An object through the trusted connection is made over TLS.
    let mut spec = bare("acme/tls");
    spec["connectionRef"] = json!({"name": "by-secret"});
    env.create("t", spec).await;
    env.wait_reason("t", "SourceReady", SOON).await;
    use std::sync::atomic::Ordering;
    // One handshake per trusted connection's client (the create reuses its pooled connection).
    assert!(
        handshakes.ok.load(Ordering::SeqCst) >= 2,
        "both trusted connections went over TLS"
    );
    assert!(
        handshakes.failed.load(Ordering::SeqCst) >= 1,
        "the untrusted check failed its handshake"
    );
    assert_eq!(env.standin.calls("create_source", "201"), 1);
}
