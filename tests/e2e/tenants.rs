//! Tenant access (README, "Tenant access"): the install paths ship two ClusterRoles labelled
//! `rbac.authorization.k8s.io/aggregate-to-{view,edit,admin}`, and the real
//! kube-controller-manager's ClusterRole aggregation controller (tests/controlplane/controlplane.sh
//! runs it, and nothing else of the controller-manager) folds them into the built-in `view`,
//! `edit` and `admin`. So a user bound to the built-in `edit` by a RoleBinding in one namespace
//! manages SyncSources, SyncRuns and ChromaSyncConnections there and nowhere else, never their
//! status, and never the cluster-scoped ClusterChromaSyncConnections; a user bound to `view` reads
//! them and writes nothing.

use crate::harness::{client, wait_for};
use crate::support::control_plane::kubectl;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::Client;
use kube::api::{Api, PostParams};
use std::path::Path;
use std::time::Duration;

const GROUP: &str = "chromasync.dev";
/// The namespaced kinds a tenant manages (ChromaSyncConnection's CRD need not be installed: RBAC
/// rules and reviews name resources, not kinds).
const NAMESPACED: [&str; 3] = ["syncsources", "syncruns", "chromasyncconnections"];
const STATUS: [&str; 3] = [
    "syncsources/status",
    "syncruns/status",
    "chromasyncconnections/status",
];
const CLUSTER_SCOPED: &str = "clusterchromasyncconnections";
const READ: [&str; 3] = ["get", "list", "watch"];
const WRITE: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];
/// Their names from `kubectl apply -k deploy/manifests` (the chart's: `<release>-<chart>-view`).
const VIEW_ROLE: &str = "chroma-sync-operator-view";
const EDIT_ROLE: &str = "chroma-sync-operator-edit";
const SOON: Duration = Duration::from_secs(30);

/// One access question: verb, resource (`resource/subresource` for a subresource), namespace
/// (None: cluster-wide).
type Ask = (&'static str, &'static str, Option<String>);

/// What the apiserver's authorizer answers for `user` (an authenticated user, as `kubectl --as`
/// makes one) on `ask`.
async fn allowed(client: &Client, user: &str, (verb, resource, ns): &Ask) -> bool {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_owned())),
        None => (*resource, None),
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            groups: Some(vec!["system:authenticated".to_owned()]),
            resource_attributes: Some(ResourceAttributes {
                group: Some(GROUP.to_owned()),
                resource: Some(resource.to_owned()),
                subresource,
                verb: Some((*verb).to_owned()),
                namespace: ns.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .expect("a SubjectAccessReview");
    answer.status.expect("a review's status").allowed
}

/// Each of `verbs` on each of `resources` in `ns`.
fn asks(verbs: &[&'static str], resources: &[&'static str], ns: Option<&str>) -> Vec<Ask> {
    let mut asks = Vec::new();
    for verb in verbs {
        for resource in resources {
            asks.push((*verb, *resource, ns.map(str::to_owned)));
        }
    }
    asks
}

/// The asks whose answer for `user` is not `expect`, as readable lines.
async fn wrong(client: &Client, user: &str, expect: bool, asks: &[Ask]) -> Vec<String> {
    let mut wrong = Vec::new();
    for ask in asks {
        if allowed(client, user, ask).await != expect {
            let (verb, resource, ns) = ask;
            let place = ns.as_deref().unwrap_or("the cluster scope");
            let answer = if expect { "refused" } else { "allowed" };
            wrong.push(format!("{user}: {verb} {resource} in {place} {answer}"));
        }
    }
    wrong
}

fn rules(role: &ClusterRole) -> Vec<PolicyRule> {
    role.rules.clone().unwrap_or_default()
}

/// Whether `outer` holds each of `inner`'s rules as is (aggregation copies them verbatim).
fn holds(outer: &ClusterRole, inner: &ClusterRole) -> bool {
    let outer = rules(outer);
    rules(inner).iter().all(|r| outer.contains(r))
}

fn label(role: &ClusterRole, key: &str) -> Option<String> {
    role.metadata.labels.as_ref()?.get(key).cloned()
}

fn fresh_namespace(prefix: &str, suffix: &str) -> String {
    let ns = format!("{prefix}-{suffix}");
    let (ok, out) = kubectl(&["create", "namespace", &ns]);
    assert!(ok, "{out}");
    ns
}

/// Writes `yaml` to a file and runs `kubectl --as user -n ns <verb> -f file`.
fn kubectl_as(user: &str, ns: &str, verb: &str, name: &str, yaml: &str) -> (bool, String) {
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tenants-{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    let mut args = vec!["--as", user, "-n", ns, verb, "-f", file.to_str().unwrap()];
    if verb == "delete" {
        args.push("--wait=false");
    }
    kubectl(&args)
}

const SOURCE: &str = "apiVersion: chromasync.dev/v1alpha1
kind: SyncSource
metadata: {name: tenant-docs}
spec:
  databaseName: docs
  github: {repository: acme/tenant}
  tokenSecretRef: {name: chroma-token}
";
const RUN: &str = "apiVersion: chromasync.dev/v1alpha1
kind: SyncRun
metadata: {name: tenant-run}
spec:
  sourceRef: {name: tenant-docs}
  targetCollectionName: docs
  ref: {branch: main}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_in_edit_and_view_roles_cover_the_namespaced_kinds_in_their_namespace_only() {
    // Installed as a user would: the kustomize base (install.yaml, rendered from the chart).
    let base = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/manifests");
    let (ok, out) = kubectl(&["apply", "--server-side", "--force-conflicts", "-k", base]);
    assert!(ok, "{out}");
    let client = client().await;
    let roles: Api<ClusterRole> = Api::all(client.clone());

    // The shipped roles: labelled for aggregation, and nothing for the cluster-scoped kind.
    let view = roles.get(VIEW_ROLE).await.unwrap();
    let edit = roles.get(EDIT_ROLE).await.unwrap();
    let aggregate = |to: &str| format!("rbac.authorization.k8s.io/aggregate-to-{to}");
    for to in ["view", "edit", "admin"] {
        assert_eq!(
            label(&view, &aggregate(to)).as_deref(),
            Some("true"),
            "{VIEW_ROLE} to {to}"
        );
    }
    for to in ["edit", "admin"] {
        assert_eq!(
            label(&edit, &aggregate(to)).as_deref(),
            Some("true"),
            "{EDIT_ROLE} to {to}"
        );
    }
    assert_eq!(
        label(&edit, &aggregate("view")),
        None,
        "{EDIT_ROLE} must stay out of view"
    );
    for role in [&view, &edit] {
        for rule in rules(role) {
            assert_eq!(rule.api_groups.as_deref(), Some(&[GROUP.to_owned()][..]));
            let resources = rule.resources.unwrap_or_default();
            assert!(
                !resources
                    .iter()
                    .any(|r| r.starts_with(CLUSTER_SCOPED) || r == "*"),
                "{resources:?}"
            );
        }
    }

    // The controller-manager folds them into the built-in roles: view gets only the reading
    // rules, edit and admin both.
    wait_for(
        "the built-in view, edit and admin ClusterRoles to aggregate the operator's",
        SOON,
        || async {
            let builtin_view = roles.get("view").await.ok()?;
            let builtin_edit = roles.get("edit").await.ok()?;
            let builtin_admin = roles.get("admin").await.ok()?;
            (holds(&builtin_view, &view)
                && holds(&builtin_edit, &view)
                && holds(&builtin_edit, &edit)
                && holds(&builtin_admin, &view)
                && holds(&builtin_admin, &edit))
            .then_some(())
        },
    )
    .await;
    let builtin_view = roles.get("view").await.unwrap();
    assert!(
        rules(&edit)
            .iter()
            .all(|r| !rules(&builtin_view).contains(r)),
        "the built-in view holds a rule that writes"
    );

    // Two tenants' namespaces and two users bound by RoleBindings in team-a only, to the
    // built-in roles (never to the operator's directly).
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let team_a = fresh_namespace("team-a", suffix);
    let team_b = fresh_namespace("team-b", suffix);
    let editor = format!("alice-{suffix}");
    let viewer = format!("victor-{suffix}");
    let a = Some(team_a.as_str());
    let b = Some(team_b.as_str());

    // Before any binding: nothing (so what follows is the binding's doing).
    let before = wrong(
        &client,
        &editor,
        false,
        &asks(&["get", "create"], &NAMESPACED, a),
    )
    .await;
    assert!(before.is_empty(), "{before:#?}");

    for (user, role) in [(&editor, "edit"), (&viewer, "view")] {
        let (ok, out) = kubectl(&[
            "create",
            "rolebinding",
            &format!("{user}-{role}"),
            "-n",
            &team_a,
            &format!("--clusterrole={role}"),
            &format!("--user={user}"),
        ]);
        assert!(ok, "{out}");
    }
    // The authorizer reads bindings through its own informer: wait for the first to count.
    wait_for("the editor's RoleBinding to take effect", SOON, || async {
        allowed(
            &client,
            &editor,
            &("create", "syncsources", a.map(str::to_owned)),
        )
        .await
        .then_some(())
    })
    .await;
    wait_for("the viewer's RoleBinding to take effect", SOON, || async {
        allowed(
            &client,
            &viewer,
            &("get", "syncsources", a.map(str::to_owned)),
        )
        .await
        .then_some(())
    })
    .await;

    let mut failures = Vec::new();
    // The editor: everything on the three kinds in team-a, and reads of their status.
    let mut yes = asks(&READ, &NAMESPACED, a);
    yes.extend(asks(&WRITE, &NAMESPACED, a));
    yes.extend(asks(&["get"], &STATUS, a));
    failures.extend(wrong(&client, &editor, true, &yes).await);
    // ... but no status write, nothing in team-b or across namespaces, and nothing on the
    // cluster-scoped kind.
    let mut no = asks(&["update", "patch"], &STATUS, a);
    no.extend(asks(&READ, &NAMESPACED, b));
    no.extend(asks(&WRITE, &NAMESPACED, b));
    no.extend(asks(&["list", "watch", "create"], &NAMESPACED, None));
    no.extend(asks(&READ, &[CLUSTER_SCOPED], None));
    no.extend(asks(&WRITE, &[CLUSTER_SCOPED], None));
    no.extend(asks(&["get", "create"], &[CLUSTER_SCOPED], a));
    failures.extend(wrong(&client, &editor, false, &no).await);

    // The viewer: reads in team-a (status too), no writes, nothing in team-b or cluster-wide.
    let mut yes = asks(&READ, &NAMESPACED, a);
    yes.extend(asks(&["get"], &STATUS, a));
    failures.extend(wrong(&client, &viewer, true, &yes).await);
    let mut no = asks(&WRITE, &NAMESPACED, a);
    no.extend(asks(&["update", "patch"], &STATUS, a));
    no.extend(asks(&READ, &NAMESPACED, b));
    no.extend(asks(&["get", "list", "create"], &[CLUSTER_SCOPED], None));
    failures.extend(wrong(&client, &viewer, false, &no).await);
    assert!(failures.is_empty(), "{failures:#?}");

    // And as real requests, impersonating each user through the apiserver with kubectl.
    for (yaml, kind, name) in [
        (SOURCE, "syncsource", "tenant-docs"),
        (RUN, "syncrun", "tenant-run"),
    ] {
        let (ok, out) = kubectl_as(&editor, &team_b, "create", name, yaml);
        assert!(!ok && out.contains("Forbidden"), "create in team-b: {out}");
        let (ok, out) = kubectl_as(&viewer, &team_a, "create", name, yaml);
        assert!(!ok && out.contains("Forbidden"), "viewer create: {out}");
        let (ok, out) = kubectl_as(&editor, &team_a, "create", name, yaml);
        assert!(ok, "editor create in team-a: {out}");
        let (ok, out) = kubectl(&["--as", &viewer, "-n", &team_a, "get", kind, name]);
        assert!(ok && out.contains(name), "viewer get: {out}");
        let (ok, out) = kubectl(&["--as", &viewer, "-n", &team_b, "get", kind]);
        assert!(
            !ok && out.contains("Forbidden"),
            "viewer get in team-b: {out}"
        );
        let (ok, out) = kubectl_as(&viewer, &team_a, "delete", name, yaml);
        assert!(!ok && out.contains("Forbidden"), "viewer delete: {out}");
        let (ok, out) = kubectl_as(&editor, &team_a, "delete", name, yaml);
        assert!(ok, "editor delete in team-a: {out}");
    }
}
