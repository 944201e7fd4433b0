//! The Chroma client against the stand-in's faults, over real HTTP: each kind of failure is
//! sorted the way the reconciler relies on. Also drives the stand-in's control endpoints.

use chroma_sync_operator::chroma::{ChromaClient, ChromaError, Deleted, Token, TransportKind};
use chroma_sync_test_support as support;
use serde_json::{Value, json};
use std::time::Duration;
use support::chroma::{client, github_payload};

/// A stand-in that accepts token `t`; its URL, a client of it that gives up after 800 ms, and a
/// plain HTTP client for its control endpoints.
async fn standin() -> (String, ChromaClient, reqwest::Client) {
    let (_, base) = support::standin::start("t", &[]).await;
    let client = client(base.clone(), Duration::from_millis(800), None);
    (base, client, reqwest::Client::new())
}

async fn faults(http: &reqwest::Client, base: &str, faults: Value) {
    let r = http
        .put(format!("{base}/_standin/faults"))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

/// An answer lost after the work was done (the connection cut mid-answer, or a body that does not
/// decode): neither an API error nor a sign that nothing was made.
fn lost_answer(e: &ChromaError) -> bool {
    matches!(
        e,
        ChromaError::Transport {
            kind: TransportKind::Other,
            ..
        } | ChromaError::Decode { .. }
    )
}

#[tokio::test]
async fn failures_are_sorted_for_the_reconciler() {
    let (base, client, http) = standin().await;
    let token = Token::new("t").unwrap();

    faults(&http, &base, json!({"fail_next": 1, "error_status": 502})).await;
    let e = client
        .create_source(&token, &github_payload("a/1"))
        .await
        .unwrap_err();
    assert!(matches!(e, ChromaError::Api { status: 502, .. }), "{e:?}");

    // A Retry-After longer than the client waits within one call (its timeout, 800 ms here)
    // reaches the caller; shorter ones the client waits out itself (`limited_mode` below).
    faults(
        &http,
        &base,
        json!({"rate_limit_next": 1, "retry_after_secs": 2}),
    )
    .await;
    let e = client
        .create_source(&token, &github_payload("a/1"))
        .await
        .unwrap_err();
    let ChromaError::Api {
        status: 429,
        retry_after,
        ..
    } = e
    else {
        panic!("{e:?}")
    };
    assert_eq!(retry_after, Some(Duration::from_secs(2)));

    // Cut mid-answer, after the source was committed: not an API error, and not "nothing created".
    faults(&http, &base, json!({"drop_next": 1})).await;
    let e = client
        .create_source(&token, &github_payload("a/dropped"))
        .await
        .unwrap_err();
    assert!(lost_answer(&e), "{e:?}");

    faults(&http, &base, json!({"latency_ms": 2000})).await;
    let e = client
        .create_source(&token, &github_payload("a/slow"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ChromaError::Transport {
                kind: TransportKind::Timeout,
                ..
            }
        ),
        "{e:?}"
    );
    faults(&http, &base, json!({})).await;

    let e = client
        .create_source(&Token::new("nope").unwrap(), &github_payload("a/2"))
        .await
        .unwrap_err();
    assert!(matches!(e, ChromaError::Api { status: 401, .. }), "{e:?}");

    let id = client
        .create_source(&token, &github_payload("a/2"))
        .await
        .unwrap();
    let e = client
        .create_source(&token, &github_payload("a/2"))
        .await
        .unwrap_err();
    let ChromaError::Api {
        status: 409,
        message,
        error,
        ..
    } = e
    else {
        panic!("{e:?}")
    };
    assert_eq!(
        (message.as_str(), error.as_deref()),
        ("Source exists", Some("Conflict"))
    );

    let listed = client
        .list_sources_while(&token, "docs", |_| true)
        .await
        .unwrap();
    assert_eq!(
        listed.len(),
        2,
        "the dropped create was committed, the slow one was not"
    );
    assert_eq!(listed[0].id, id, "newest first");
    assert_eq!(
        client.delete_source(&token, &id).await.unwrap(),
        Deleted::Now
    );
    assert_eq!(
        client.delete_source(&token, &id).await.unwrap(),
        Deleted::AlreadyGone
    );

    let counters: Value = http
        .get(format!("{base}/_standin/counters"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        counters["answered"]["delete_source"],
        json!({"204": 1, "404": 1})
    );
    assert_eq!(counters["received"]["create_source"], json!(7));
    assert_eq!(counters["sources"], json!(1));
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let e = client(base, Duration::from_secs(2), None)
        .create_source(&Token::new("t").unwrap(), &github_payload("a/b"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ChromaError::Transport {
                kind: TransportKind::Connect,
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn listing_pages_until_told_to_stop() {
    let (_, client, _) = standin().await;
    let token = Token::new("t").unwrap();
    for i in 0..250 {
        client
            .create_source(&token, &github_payload(&format!("a/{i}")))
            .await
            .unwrap();
    }
    let all = client
        .list_sources_while(&token, "docs", |_| true)
        .await
        .unwrap();
    assert_eq!(all.len(), 250);
    let first_page = client
        .list_sources_while(&token, "docs", |_| false)
        .await
        .unwrap();
    assert_eq!(first_page.len(), 100);
}

/// An answer larger than the client reads (not the service's: a proxy's, say) is an unreadable
/// answer, without reading it whole; a small one from the same server decodes.
#[tokio::test]
async fn an_oversized_answer_is_refused_unread() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        for padding in [64 << 20, 0] {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let body = format!(
                "{{\"source_id\": \"s-1\", \"padding\": \"{}\"}}",
                "x".repeat(padding)
            );
            let head = format!(
                "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body.as_bytes()).await;
        }
    });
    let client = client(base, Duration::from_secs(20), None);
    let token = Token::new("t").unwrap();
    let e = client
        .create_source(&token, &github_payload("a/b"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ChromaError::Decode { status: 201, message } if message.contains("larger than")),
        "{e:?}"
    );
    let id = client
        .create_source(&token, &github_payload("a/b"))
        .await
        .unwrap();
    assert_eq!(id, "s-1");
}

// Invocations (sync runs), each call against the stand-in's rules and faults.

mod invocations {
    use super::*;
    use chroma_sync_operator::chroma::wire::{
        CreateJobPayload, CreateSourcePayload, GitRef, JobStatus, S3Config, SourceConfig,
        WebScrapeConfig,
    };
    use chroma_sync_operator::chroma::{Cancelled, ClientConfig};
    use chroma_sync_operator::metrics::Metrics;
    use chroma_sync_standin::{RunPlan, StandIn};

    struct Env {
        standin: StandIn,
        client: ChromaClient,
        metrics: Metrics,
        token: Token,
        github: String,
        web: String,
        s3: String,
    }

    /// A stand-in with one source of each kind in `docs` (the S3 one under `docs/`).
    async fn env() -> Env {
        let (standin, base) = support::standin::start("t", &["v"]).await;
        let config = ClientConfig {
            name: "test".into(),
            api_url: base.clone(),
            base_url: base,
            timeout: Duration::from_millis(800),
            extra_ca_pem: None,
            limits: Default::default(),
        };
        let metrics = Metrics::new();
        let client = ChromaClient::new(&config, metrics.clone()).unwrap();
        let token = Token::new("t").unwrap();
        let mut ids = Vec::new();
        for source in [
            github_payload("o/repo").source,
            SourceConfig::WebScrape(WebScrapeConfig {
                starting_url: "https://docs.example.dev".into(),
                max_depth: None,
                page_limit: None,
                include_path_regexes: None,
                exclude_path_regexes: None,
            }),
            SourceConfig::S3(S3Config {
                bucket_name: "bucket".into(),
                region: "eu-west-1".into(),
                collection_name: "files".into(),
                aws_credential_id: Some(1),
                path_prefix: Some("docs/".into()),
                auto_sync: None,
                inline_credentials: None,
            }),
        ] {
            let body = CreateSourcePayload {
                source,
                ..github_payload("unused")
            };
            ids.push(client.create_source(&token, &body).await.unwrap());
        }
        let [github, web, s3] = ids.try_into().unwrap();
        Env {
            standin,
            client,
            metrics,
            token,
            github,
            web,
            s3,
        }
    }

    fn plan(pending_ms: u64, processing_ms: u64, fail_with: Option<&str>) -> RunPlan {
        RunPlan {
            pending_ms,
            processing_ms,
            fail_with: fail_with.map(str::to_owned),
        }
    }

    fn github_run(collection: &str, git_ref: GitRef) -> CreateJobPayload {
        CreateJobPayload {
            target_collection_name: Some(collection.into()),
            ref_identifier: Some(git_ref),
            ..Default::default()
        }
    }

    fn s3_run(key: &str) -> CreateJobPayload {
        CreateJobPayload {
            object_key: Some(key.into()),
            ..Default::default()
        }
    }

    fn api_status(e: &ChromaError) -> Option<u16> {
        match e {
            ChromaError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The message of `e`, which must be an API error with `status`.
    fn api_message(e: &ChromaError, status: u16) -> &str {
        match e {
            ChromaError::Api {
                status: s, message, ..
            } if *s == status => message,
            _ => panic!("expected a {status}: {e:?}"),
        }
    }

    #[tokio::test]
    async fn a_run_is_followed_through_both_status_forms() {
        let env = env().await;
        let (c, t) = (&env.client, &env.token);
        let main = GitRef::Branch("main".into());

        // Pending (a plain string), then cancelled; a second cancel finds it not pending.
        env.standin.set_run_plan(plan(60_000, 0, None));
        let pending = c
            .create_invocation(t, &env.github, &github_run("a", main.clone()))
            .await
            .unwrap();
        let job = c.get_invocation(t, &pending).await.unwrap();
        assert_eq!(job.status, JobStatus::Pending);
        assert_eq!(job.id, pending);
        assert_eq!(job.source_id.as_deref(), Some(env.github.as_str()));
        assert_eq!(job.metadata.collection_name.as_deref(), Some("a"));
        assert_eq!(job.metadata.database_name.as_deref(), Some("docs"));
        assert_eq!(job.metadata.git_ref, Some(main.clone()));
        assert!(job.created_at.is_some());
        assert_eq!(c.cancel_invocation(t, &pending).await, Ok(Cancelled::Now));
        let job = c.get_invocation(t, &pending).await.unwrap();
        assert_eq!(job.status, JobStatus::Cancelled);
        assert!(job.status.is_terminal());
        assert_eq!(
            c.cancel_invocation(t, &pending).await,
            Ok(Cancelled::NotPending)
        );

        // Processing cannot be cancelled.
        env.standin.set_run_plan(plan(0, 60_000, None));
        let processing = c
            .create_invocation(t, &env.github, &github_run("b", main.clone()))
            .await
            .unwrap();
        let job = c.get_invocation(t, &processing).await.unwrap();
        assert_eq!(job.status, JobStatus::Processing);
        assert!(!job.status.is_terminal());
        assert_eq!(
            c.cancel_invocation(t, &processing).await,
            Ok(Cancelled::NotPending)
        );

        // Complete and failed are objects, with their details.
        env.standin.set_run_plan(plan(0, 0, None));
        let sha = GitRef::Sha("0123abcd".into());
        let done = c
            .create_invocation(t, &env.github, &github_run("c", sha.clone()))
            .await
            .unwrap();
        let job = c.get_invocation(t, &done).await.unwrap();
        let JobStatus::Complete {
            finished_at: Some(finished_at),
            duration_ms: Some(0),
        } = job.status
        else {
            panic!("{:?}", job.status)
        };
        assert_eq!(
            Some(finished_at),
            job.created_at,
            "no time pending or processing"
        );
        assert_eq!(job.metadata.git_ref, Some(sha));
        env.standin
            .set_run_plan(plan(0, 0, Some("repository not reachable")));
        let failed = c
            .create_invocation(
                t,
                &env.web,
                &CreateJobPayload {
                    target_collection_name: Some("site".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            c.get_invocation(t, &failed).await.unwrap().status,
            JobStatus::Failed {
                error: "repository not reachable".into()
            }
        );

        // An unknown run and an unknown source.
        let e = c.get_invocation(t, "no-such-run").await.unwrap_err();
        assert_eq!(api_message(&e, 404), "Invocation not found");
        assert_eq!(
            c.cancel_invocation(t, "no-such-run").await,
            Ok(Cancelled::AlreadyGone)
        );
        let e = c
            .create_invocation(t, "no-such-source", &github_run("d", main.clone()))
            .await
            .unwrap_err();
        assert_eq!(api_message(&e, 404), "Source not found");

        // Newest first.
        let listed = c
            .list_invocations_while(t, &env.github, |_| true)
            .await
            .unwrap();
        let ids: Vec<&str> = listed.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, [done.as_str(), &processing, &pending]);

        assert_eq!(env.standin.calls("cancel_invocation", "202"), 1);
        assert_eq!(env.standin.calls("cancel_invocation", "412"), 2);
        assert_eq!(env.standin.calls("cancel_invocation", "404"), 1);
        assert_eq!(env.standin.calls("get_invocation", "200"), 5);
        assert_eq!(env.standin.invocations(&env.github).len(), 3);
        let metrics = env.metrics.render();
        for line in [
            r#"endpoint="cancel_invocation",code="412"} 2"#,
            r#"endpoint="get_invocation",code="404"} 1"#,
            r#"endpoint="create_invocation",code="201"} 4"#,
            r#"endpoint="list_invocations",code="200"} 1"#,
        ] {
            assert!(metrics.contains(line), "{line} in\n{metrics}");
        }
    }

    #[tokio::test]
    async fn a_finished_collection_refuses_another_sync_but_s3_appends() {
        let env = env().await;
        let (c, t) = (&env.client, &env.token);
        // A second of processing: margin for the second create on a loaded machine.
        env.standin.set_run_plan(plan(0, 1000, None));
        let run = github_run("kb", GitRef::Branch("main".into()));
        c.create_invocation(t, &env.github, &run).await.unwrap();
        // Still processing: the collection is appended to.
        c.create_invocation(t, &env.github, &run).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let e = c.create_invocation(t, &env.github, &run).await.unwrap_err();
        assert_eq!(api_message(&e, 409), "Invocation exists");
        // The web source into the same collection of the same database is refused too.
        let into_kb = CreateJobPayload {
            target_collection_name: Some("kb".into()),
            ..Default::default()
        };
        let e = c
            .create_invocation(t, &env.web, &into_kb)
            .await
            .unwrap_err();
        assert_eq!(api_status(&e), Some(409), "{e:?}");

        // S3: the same key twice, both finished, is indexed twice.
        env.standin.set_run_plan(plan(0, 0, None));
        let key = s3_run("docs/a.md");
        let first = c.create_invocation(t, &env.s3, &key).await.unwrap();
        let second = c.create_invocation(t, &env.s3, &key).await.unwrap();
        assert_ne!(first, second);
        let job = c.get_invocation(t, &second).await.unwrap();
        assert_eq!(job.metadata.collection_name.as_deref(), Some("files"));
        assert_eq!(job.metadata.object_key.as_deref(), Some("docs/a.md"));
        assert_eq!(env.standin.calls("create_invocation", "409"), 2);
    }

    #[tokio::test]
    async fn the_kind_rules_are_400s_naming_the_field() {
        let env = env().await;
        let (c, t) = (&env.client, &env.token);
        for (source, payload, field) in [
            (
                &env.github,
                CreateJobPayload::default(),
                "target_collection_name",
            ),
            (
                &env.github,
                CreateJobPayload {
                    target_collection_name: Some("c".into()),
                    ..Default::default()
                },
                "ref_identifier",
            ),
            (
                &env.web,
                CreateJobPayload::default(),
                "target_collection_name",
            ),
            (&env.web, s3_run("docs/a"), "object_key"),
            (&env.s3, CreateJobPayload::default(), "object_key"),
            (&env.s3, s3_run("other/a"), "object_key"),
            (
                &env.s3,
                CreateJobPayload {
                    custom_id: Some("x".repeat(121)),
                    ..s3_run("docs/a")
                },
                "custom_id",
            ),
        ] {
            let e = c.create_invocation(t, source, &payload).await.unwrap_err();
            let ChromaError::Api {
                status: 400,
                message,
                ..
            } = &e
            else {
                panic!("{payload:?}: {e:?}")
            };
            assert!(message.starts_with(field), "{payload:?}: {message}");
        }
        // S3 with a custom id and metadata is recorded as sent.
        let mut metadata = serde_json::Map::new();
        metadata.insert("team".into(), json!("docs"));
        let id = c
            .create_invocation(
                t,
                &env.s3,
                &CreateJobPayload {
                    custom_id: Some("x".repeat(120)),
                    metadata: Some(metadata),
                    target_collection_name: Some("other".into()),
                    ..s3_run("docs/b.md")
                },
            )
            .await
            .unwrap();
        let job = c.get_invocation(t, &id).await.unwrap();
        assert_eq!(job.metadata.custom_id, Some("x".repeat(120)));
        assert_eq!(job.metadata.collection_name.as_deref(), Some("other"));
        let stored = env.standin.invocations(&env.s3);
        assert_eq!(stored.len(), 1, "nothing refused was created");
        assert_eq!(
            stored[0]["metadata"]["s3"]["additional_metadata"],
            json!({"team": "docs"})
        );
    }

    #[tokio::test]
    async fn a_viewer_reads_but_may_not_create_or_cancel() {
        let env = env().await;
        let viewer = Token::new("v").unwrap();
        let c = &env.client;
        env.standin.set_run_plan(plan(60_000, 0, None));
        let id = c
            .create_invocation(&env.token, &env.s3, &s3_run("docs/a"))
            .await
            .unwrap();
        let e = c
            .create_invocation(&viewer, &env.s3, &s3_run("docs/a"))
            .await
            .unwrap_err();
        assert_eq!(api_status(&e), Some(403), "{e:?}");
        let e = c.cancel_invocation(&viewer, &id).await.unwrap_err();
        assert_eq!(api_status(&e), Some(403), "{e:?}");
        assert_eq!(
            c.get_invocation(&viewer, &id).await.unwrap().status,
            JobStatus::Pending,
            "the viewer's cancel changed nothing"
        );
        assert_eq!(
            c.list_invocations_while(&viewer, &env.s3, |_| true)
                .await
                .unwrap()
                .len(),
            1
        );
        let e = c
            .get_invocation(&Token::new("wrong").unwrap(), &id)
            .await
            .unwrap_err();
        assert_eq!(api_status(&e), Some(401), "{e:?}");
    }

    #[tokio::test]
    async fn a_lost_created_answer_leaves_one_run_to_find_by_listing() {
        let env = env().await;
        let (c, t) = (&env.client, &env.token);
        env.standin.set_faults(chroma_sync_standin::Faults {
            endpoints: vec!["create_invocation".into()],
            drop_next: 1,
            ..Default::default()
        });
        let run = github_run("lost", GitRef::Sha("feed".into()));
        let e = c.create_invocation(t, &env.github, &run).await.unwrap_err();
        assert!(lost_answer(&e), "{e:?}");
        assert_eq!(env.standin.invocations(&env.github).len(), 1, "committed");
        let listed = c
            .list_invocations_while(t, &env.github, |_| true)
            .await
            .unwrap();
        let found: Vec<_> = listed
            .iter()
            .filter(|j| {
                j.metadata.collection_name.as_deref() == Some("lost")
                    && j.metadata.git_ref == Some(GitRef::Sha("feed".into()))
            })
            .collect();
        assert_eq!(found.len(), 1, "{listed:?}");
        assert_eq!(env.standin.calls("create_invocation", "201"), 1);
        assert_eq!(env.standin.injected().get("drop"), Some(&1));
    }

    /// The Chroma API calls of `keepCollections` go through the same client: the tenant from
    /// the identity, a delete that answers 200 then 404 (already gone), a viewer's token refused
    /// (403), a 429 beyond the call's timeout handed back with its Retry-After, a garbled
    /// identity an unreadable answer, and each call counted under its endpoint label.
    #[tokio::test]
    async fn collection_calls_are_sorted_like_every_other_call() {
        use chroma_sync_operator::chroma::Deleted;
        let env = env().await;
        let (c, t) = (&env.client, &env.token);
        let tenant = c.tenant(t).await.unwrap();
        assert_eq!(tenant, chroma_sync_standin::TENANT);
        env.standin.insert_collection("docs", "docs-1");
        assert_eq!(
            c.delete_collection(t, &tenant, "docs", "docs-1").await,
            Ok(Deleted::Now)
        );
        assert_eq!(
            c.delete_collection(t, &tenant, "docs", "docs-1").await,
            Ok(Deleted::AlreadyGone)
        );
        let viewer = Token::new("v").unwrap();
        env.standin.insert_collection("docs", "docs-2");
        let e = c
            .delete_collection(&viewer, &tenant, "docs", "docs-2")
            .await
            .unwrap_err();
        api_message(&e, 403);
        env.standin.set_faults(chroma_sync_standin::Faults {
            endpoints: vec!["delete_collection".into()],
            rate_limit_next: 1,
            retry_after_secs: 1,
            ..Default::default()
        });
        let e = c
            .delete_collection(t, &tenant, "docs", "docs-2")
            .await
            .unwrap_err();
        assert!(
            matches!(e, ChromaError::Api { status: 429, retry_after: Some(d), .. } if d == Duration::from_secs(1)),
            "{e:?}"
        );
        env.standin.set_faults(chroma_sync_standin::Faults {
            endpoints: vec!["get_identity".into()],
            garble_next: 1,
            ..Default::default()
        });
        let e = c.tenant(t).await.unwrap_err();
        assert!(
            matches!(e, ChromaError::Decode { status: 200, .. }),
            "{e:?}"
        );
        assert_eq!(env.standin.collections("docs"), ["docs-2"]);
        let metrics = env.metrics.render();
        for line in [
            r#"endpoint="get_identity",code="200"} 2"#,
            r#"endpoint="delete_collection",code="200"} 1"#,
            r#"endpoint="delete_collection",code="404"} 1"#,
            r#"endpoint="delete_collection",code="403"} 1"#,
            r#"endpoint="delete_collection",code="429"} 1"#,
        ] {
            assert!(metrics.contains(line), "{line} in\n{metrics}");
        }
    }

    #[tokio::test]
    async fn rate_limits_and_garbled_answers_are_sorted() {
        let env = env().await;
        let (c, t) = (&env.client, &env.token);
        env.standin.set_run_plan(plan(60_000, 0, None));
        let id = c
            .create_invocation(t, &env.s3, &s3_run("docs/a"))
            .await
            .unwrap();
        for endpoint in [
            "create_invocation",
            "get_invocation",
            "list_invocations",
            "latest_invocations_by_keys",
            "cancel_invocation",
        ] {
            env.standin.set_faults(chroma_sync_standin::Faults {
                endpoints: vec![endpoint.into()],
                // Longer than the client's timeout (800 ms): it goes back to the caller.
                rate_limit_next: 1,
                retry_after_secs: 1,
                ..Default::default()
            });
            let e = match endpoint {
                "create_invocation" => c
                    .create_invocation(t, &env.s3, &s3_run("docs/b"))
                    .await
                    .unwrap_err(),
                "get_invocation" => c.get_invocation(t, &id).await.unwrap_err(),
                "list_invocations" => c
                    .list_invocations_while(t, &env.s3, |_| true)
                    .await
                    .unwrap_err(),
                "latest_invocations_by_keys" => c
                    .latest_by_keys(t, &env.s3, &["docs/a".into()])
                    .await
                    .unwrap_err(),
                _ => c.cancel_invocation(t, &id).await.unwrap_err(),
            };
            let ChromaError::Api {
                status: 429,
                retry_after,
                ..
            } = e
            else {
                panic!("{endpoint}: {e:?}")
            };
            assert_eq!(retry_after, Some(Duration::from_secs(1)), "{endpoint}");
            assert_eq!(env.standin.calls(endpoint, "429"), 1, "{endpoint}");
        }
        assert_eq!(
            env.standin.invocations(&env.s3).len(),
            1,
            "a rate-limited create made nothing"
        );
        assert_eq!(
            c.get_invocation(t, &id).await.unwrap().status,
            JobStatus::Pending,
            "a rate-limited cancel changed nothing"
        );

        // A 200 whose body is cut is an unreadable answer, not an API error.
        env.standin.set_faults(chroma_sync_standin::Faults {
            endpoints: vec!["get_invocation".into()],
            garble_next: 1,
            ..Default::default()
        });
        let e = c.get_invocation(t, &id).await.unwrap_err();
        assert!(
            matches!(e, ChromaError::Decode { status: 200, .. }),
            "{e:?}"
        );
        env.standin.set_faults(chroma_sync_standin::Faults {
            endpoints: vec!["latest_invocations_by_keys".into()],
            garble_next: 1,
            ..Default::default()
        });
        let e = c
            .latest_by_keys(t, &env.s3, &["docs/a".into()])
            .await
            .unwrap_err();
        assert!(
            matches!(e, ChromaError::Decode { status: 200, .. }),
            "{e:?}"
        );
        let by_key = c.latest_by_keys(t, &env.s3, &["docs/a".into()]).await;
        assert_eq!(
            by_key.unwrap()["docs/a"].id,
            id,
            "and read whole, the newest"
        );
        // A 5xx on the create: nothing committed.
        env.standin.set_faults(chroma_sync_standin::Faults {
            endpoints: vec!["create_invocation".into()],
            fail_next: 1,
            error_status: 500,
            ..Default::default()
        });
        let e = c
            .create_invocation(t, &env.s3, &s3_run("docs/c"))
            .await
            .unwrap_err();
        assert_eq!(api_status(&e), Some(500), "{e:?}");
        assert_eq!(env.standin.invocations(&env.s3).len(), 1);
    }

    #[tokio::test]
    async fn listing_invocations_pages_until_told_to_stop() {
        let env = env().await;
        let (c, t) = (&env.client, &env.token);
        for i in 0..205 {
            c.create_invocation(t, &env.s3, &s3_run(&format!("docs/{i}")))
                .await
                .unwrap();
        }
        let mut pages = 0;
        let all = c
            .list_invocations_while(t, &env.s3, |_| {
                pages += 1;
                true
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 205);
        assert_eq!(pages, 2, "asked about the two full pages only");
        assert_eq!(all[0].metadata.object_key.as_deref(), Some("docs/204"));
        assert_eq!(all[204].metadata.object_key.as_deref(), Some("docs/0"));
        let first_page = c
            .list_invocations_while(t, &env.s3, |_| false)
            .await
            .unwrap();
        assert_eq!(first_page.len(), 100);
        assert_eq!(env.standin.calls("list_invocations", "200"), 4);
        // Another source's listing is its own.
        assert!(
            c.list_invocations_while(t, &env.github, |_| true)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

// The client's limiter against the stand-in's limited mode: one limiter per client, shared by
// its clones and every caller.

mod limited_mode {
    use super::*;
    use chroma_sync_operator::chroma::{ClientConfig, Limits};
    use chroma_sync_operator::metrics::Metrics;
    use chroma_sync_standin::{Faults, StandIn};
    use futures::future::join_all;
    use std::time::Instant;

    /// A stand-in at `rate` calls per second for token `t` (its burst one second's worth; 0: no
    /// limit) answering after `latency_ms`, and a client of it with `limits` whose calls give
    /// up after 10 s (so that it waits out a `Retry-After: 1` itself).
    async fn limited(
        rate: f64,
        latency_ms: u64,
        limits: Limits,
    ) -> (StandIn, ChromaClient, Metrics) {
        let (standin, base) = support::standin::start("t", &[]).await;
        standin.set_faults(Faults {
            calls_per_second: rate,
            latency_ms,
            ..Default::default()
        });
        let config = ClientConfig {
            name: "limited".into(),
            api_url: base.clone(),
            base_url: base,
            timeout: Duration::from_secs(10),
            extra_ca_pem: None,
            limits,
        };
        let metrics = Metrics::new();
        let client = ChromaClient::new(&config, metrics.clone()).unwrap();
        (standin, client, metrics)
    }

    /// `k` list calls at once, from clones of `client`; how many succeeded.
    async fn calls_at_once(client: &ChromaClient, k: usize) -> usize {
        let token = Token::new("t").unwrap();
        let calls = (0..k).map(|_| {
            let (client, token) = (client.clone(), token.clone());
            async move { client.list_sources_page(&token, "docs", 0).await }
        });
        let results = join_all(calls).await;
        for r in &results {
            if let Err(e) = r {
                eprintln!("a call failed: {e}");
            }
        }
        results.iter().filter(|r| r.is_ok()).count()
    }

    fn series(metrics: &Metrics, name: &str) -> f64 {
        let text = metrics.render();
        let prefix = format!("chroma_sync_operator_{name}{{connection=\"limited\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_the_services_rate_every_call_goes_without_a_429() {
        let limits = Limits {
            calls_per_second: Some(20.0),
            ..Limits::default()
        };
        let (standin, client, metrics) = limited(20.0, 20, limits).await;
        let started = Instant::now();
        assert_eq!(calls_at_once(&client, 60).await, 60);
        // At 20 a second after a burst of 1: 59 / 20 s at least, whatever the machine.
        assert!(
            started.elapsed() >= Duration::from_millis(2900),
            "{:?}",
            started.elapsed()
        );
        // Calls sent at the service's rate: the service's burst (20) less the client's (1)
        // absorbs up to 0.95 s of jitter; without the limiter about 40 of the 60 were refused.
        let refused = standin.calls("list_sources", "429");
        assert!(refused <= 1, "{refused} calls answered 429");
        assert_eq!(
            series(&metrics, "chroma_rate_limited_total"),
            refused as f64
        );
        assert!(standin.max_in_flight() <= 16);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unconfigured_the_client_learns_the_rate_and_every_call_succeeds() {
        let (standin, client, metrics) = limited(20.0, 20, Limits::default()).await;
        assert_eq!(client.rate(), None, "unlimited until a 429");
        assert_eq!(
            calls_at_once(&client, 200).await,
            200,
            "all succeed, 429s retried inside"
        );
        let ok = standin.calls("list_sources", "200");
        let refused = standin.calls("list_sources", "429");
        assert_eq!(ok, 200);
        // The first round overruns the service's burst (16 in flight); after that the rate
        // learnt keeps calls near the limit. Without adapting, every pause would end in 16 calls
        // at once and most of them refused again.
        let share = refused as f64 / (ok + refused) as f64;
        eprintln!(
            "{refused} of {} answered 429; rate learnt {:?}",
            ok + refused,
            client.rate()
        );
        assert!(share <= 0.15, "{refused} of {} answered 429", ok + refused);
        let rate = client.rate().expect("a rate learnt from the 429");
        assert!(
            rate > 5.0 && rate < 40.0,
            "learnt {rate} calls/s for a limit of 20"
        );
        assert_eq!(series(&metrics, "chroma_rate_limit"), rate);
        assert_eq!(
            series(&metrics, "chroma_rate_limited_total"),
            refused as f64
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retry_after_pauses_every_caller_of_the_client() {
        let limits = Limits {
            calls_per_second: Some(100.0),
            ..Limits::default()
        };
        let (standin, client, metrics) = limited(0.0, 0, limits).await;
        let token = Token::new("t").unwrap();
        standin.set_faults(Faults {
            endpoints: vec!["get_source".into()],
            rate_limit_next: 1,
            retry_after_secs: 2,
            ..Default::default()
        });
        let started = Instant::now();
        // The first caller is answered 429 and retried inside the client after the pause.
        let first = tokio::spawn({
            let (client, token) = (client.clone(), token.clone());
            async move { client.get_source(&token, "nope").await }
        });
        while standin.calls("get_source", "429") == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Another caller, of another endpoint, through a clone: it waits out the same pause.
        let other = client.clone();
        other.list_sources_page(&token, "docs", 0).await.unwrap();
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(1900),
            "went after {waited:?}"
        );
        assert_eq!(
            first.await.unwrap().unwrap(),
            None,
            "the retry got its answer (404)"
        );
        assert_eq!(standin.calls("get_source", "429"), 1);
        assert_eq!(standin.calls("get_source", "404"), 1);
        assert_eq!(series(&metrics, "chroma_rate_limited_total"), 1.0);
        // A client of its own (another connection) is not paused by this one's 429.
        let separate = support::chroma::client(
            standin.start_local().await.unwrap(),
            Duration::from_secs(10),
            None,
        );
        standin.set_faults(Faults {
            endpoints: vec!["get_source".into()],
            rate_limit_next: 1,
            retry_after_secs: 2,
            ..Default::default()
        });
        let paused = tokio::spawn({
            let (client, token) = (client.clone(), token.clone());
            async move { client.get_source(&token, "nope").await }
        });
        while standin.calls("get_source", "429") < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let started = Instant::now();
        separate.list_sources_page(&token, "docs", 0).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
        assert!(!paused.is_finished(), "the first client is still paused");
        assert_eq!(paused.await.unwrap().unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_in_flight_never_exceed_the_limit() {
        let limits = Limits {
            in_flight: 4,
            ..Limits::default()
        };
        let (standin, client, metrics) = limited(0.0, 100, limits).await;
        let started = Instant::now();
        assert_eq!(calls_at_once(&client, 40).await, 40);
        // 40 calls of 100 ms, 4 at a time: 1 s at least.
        assert!(
            started.elapsed() >= Duration::from_millis(950),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(standin.max_in_flight(), 4, "the limit, and reached");
        assert_eq!(series(&metrics, "chroma_calls_in_flight"), 0.0);
        assert_eq!(standin.calls("list_sources", "429"), 0);
    }
}
