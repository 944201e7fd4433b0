//! Which connection an object calls the service through, whether it may, and the client of each
//! connection: the one place every kind asks before a call.
//!
//! A route is decided from caches alone (the connections, the namespaces' labels): deciding
//! costs no call. When the watch brings a change of a connection or of a namespace's labels,
//! the objects it concerns are reconciled ([`Connections::woken`]): one refused comes back,
//! and one at rest that lost its permission says so. Each connection's client (its URL, CA, timeout and limits, so one
//! rate limiter for all its callers) is built by the connection's own check
//! ([`crate::connection`]) and used here only once that check succeeded.

use super::credentials::TokenFrom;
use crate::chroma::{ChromaClient, Token};
use crate::crd::connection::{
    ChromaSyncConnection, ClusterChromaSyncConnection, DEFAULT_CONNECTION,
};
use crate::crd::{ConnectionKind, ConnectionRef, SyncSource};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Mutex;

/// A connection, as status records it: `operator` (the operator's own flags),
/// `ChromaSyncConnection/<name>` (of the object's namespace) or
/// `ClusterChromaSyncConnection/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Via {
    Operator,
    Namespaced { namespace: String, name: String },
    Cluster { name: String },
}

impl Via {
    /// The connection an object of `namespace` names in `reference`.
    pub fn named(namespace: &str, reference: &ConnectionRef) -> Self {
        match reference.kind {
            ConnectionKind::ChromaSyncConnection => Via::Namespaced {
                namespace: namespace.to_owned(),
                name: reference.name.clone(),
            },
            ConnectionKind::ClusterChromaSyncConnection => Via::Cluster {
                name: reference.name.clone(),
            },
        }
    }

    /// What `status.connection` of an object of `namespace` records, read back.
    pub fn recorded(namespace: &str, recorded: &str) -> Option<Self> {
        match recorded.split_once('/') {
            None if recorded == "operator" => Some(Via::Operator),
            Some(("ChromaSyncConnection", name)) => Some(Via::Namespaced {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            }),
            Some(("ClusterChromaSyncConnection", name)) => Some(Via::Cluster {
                name: name.to_owned(),
            }),
            _ => None,
        }
    }

    /// The metric label of the connection's client.
    pub fn label(&self) -> String {
        match self {
            Via::Operator => "operator".into(),
            Via::Namespaced { namespace, name } => format!("{namespace}/{name}"),
            Via::Cluster { name } => format!("cluster/{name}"),
        }
    }
}

/// As `status.connection` records it (the namespace is the object's own).
impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Via::Operator => f.write_str("operator"),
            Via::Namespaced { name, .. } => write!(f, "ChromaSyncConnection/{name}"),
            Via::Cluster { name } => write!(f, "ClusterChromaSyncConnection/{name}"),
        }
    }
}

/// Why an object cannot call through its connection now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The connection does not exist (yet): wait for it.
    NotFound,
    /// The connection exists and is not Ready (not checked yet, or failing its check): wait.
    NotReady,
    /// A ClusterChromaSyncConnection that does not admit the object's namespace: a person must
    /// change the namespace's labels, the connection, or the object.
    NotPermitted,
    /// The object's source was created through another connection: it is never deleted or
    /// looked at through this one.
    Changed,
}

/// A refusal and its words (naming the connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub refusal: Refusal,
    pub via: Via,
    pub message: String,
    /// Ready by its status, not checked by this process yet.
    pub unchecked: bool,
}

/// How long a route waits for the first check of a connection Ready by its status.
const FIRST_CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Where an object's calls go: the connection and its client.
#[derive(Clone)]
pub struct Route {
    pub via: Via,
    pub chroma: ChromaClient,
}

/// A route and the token to call it with. Two endpoints are equal when they reach the same URL
/// with the same token (lookups that would read the same listing share it).
#[derive(Clone)]
pub struct Endpoint {
    pub via: Via,
    pub chroma: ChromaClient,
    pub token: Token,
}

impl PartialEq for Endpoint {
    fn eq(&self, other: &Self) -> bool {
        self.chroma.base() == other.chroma.base() && self.token == other.token
    }
}

impl Eq for Endpoint {}

impl std::hash::Hash for Endpoint {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.chroma.base().hash(state);
        self.token.hash(state);
    }
}

type Sender<K> = futures::channel::mpsc::UnboundedSender<ObjectRef<K>>;
type Receiver<K> = futures::channel::mpsc::UnboundedReceiver<ObjectRef<K>>;

/// The receivers of connections to check again, by kind.
pub type Rechecks = (
    Receiver<ChromaSyncConnection>,
    Receiver<ClusterChromaSyncConnection>,
);

/// A connection's client, and the generation of the spec it was built from.
struct Client {
    generation: Option<i64>,
    chroma: ChromaClient,
}

pub struct Connections {
    operator: ChromaClient,
    /// One cache per watched scope.
    namespaced: Vec<Store<ChromaSyncConnection>>,
    cluster: Store<ClusterChromaSyncConnection>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    clients: Mutex<HashMap<Via, Client>>,
    wake: futures::channel::mpsc::UnboundedSender<ObjectRef<SyncSource>>,
    woken: Mutex<Option<futures::channel::mpsc::UnboundedReceiver<ObjectRef<SyncSource>>>>,
    /// Connections to check again at once (their Secret changed), and their receivers (taken
    /// once, by the connection controller).
    recheck: (
        Sender<ChromaSyncConnection>,
        Sender<ClusterChromaSyncConnection>,
    ),
    rechecks: Mutex<Option<Rechecks>>,
    synced: tokio::sync::watch::Sender<bool>,
    /// Bumped at the end of every connection check.
    checked: tokio::sync::watch::Sender<u64>,
}

impl Connections {
    pub fn new(
        operator: ChromaClient,
        namespaced: Vec<Store<ChromaSyncConnection>>,
        cluster: Store<ClusterChromaSyncConnection>,
        namespaces: Store<PartialObjectMeta<Namespace>>,
    ) -> Self {
        let (wake, woken) = futures::channel::mpsc::unbounded();
        let (own, own_rechecks) = futures::channel::mpsc::unbounded();
        let (shared, shared_rechecks) = futures::channel::mpsc::unbounded();
        Self {
            recheck: (own, shared),
            rechecks: Mutex::new(Some((own_rechecks, shared_rechecks))),
            operator,
            namespaced,
            cluster,
            namespaces,
            clients: Mutex::default(),
            wake,
            woken: Mutex::new(Some(woken)),
            synced: tokio::sync::watch::Sender::new(false),
            checked: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Every connection cache has listed.
    pub fn set_synced(&self) {
        self.synced.send_replace(true);
    }

    /// Waits until every connection cache has listed: until then, "no `default` connection"
    /// may only mean "not listed yet".
    pub async fn synced(&self) {
        let _ = self.synced.subscribe().wait_for(|synced| *synced).await;
    }

    /// The SyncSources woken by a change they wait for (taken once, by their controller).
    pub fn woken(
        &self,
    ) -> Option<futures::channel::mpsc::UnboundedReceiver<ObjectRef<SyncSource>>> {
        self.woken.lock().expect("woken").take()
    }

    /// The connections to check again at once (taken once, by the connection controller).
    pub fn rechecks(&self) -> Option<Rechecks> {
        self.rechecks.lock().expect("rechecks").take()
    }

    /// Secret `namespace/name` changed: the connections that read it are checked again.
    pub fn secret_changed(&self, namespace: &str, name: &str) {
        let (own, shared) =
            crate::connection::reading_secret(&self.namespaced, &self.cluster, namespace, name);
        for c in own {
            let _ = self.recheck.0.unbounded_send(c);
        }
        for c in shared {
            let _ = self.recheck.1.unbounded_send(c);
        }
    }

    /// The route of an object of `namespace` that names `reference` (if any) and whose source,
    /// if it has one, was made through `recorded` (if known). Decided from caches alone.
    pub async fn route(
        &self,
        namespace: &str,
        reference: Option<&ConnectionRef>,
        recorded: Option<&Via>,
    ) -> Result<Route, Blocked> {
        self.synced().await;
        let via = match reference {
            Some(reference) => Via::named(namespace, reference),
            None if self
                .namespaced_connection(namespace, DEFAULT_CONNECTION)
                .is_some() =>
            {
                Via::Namespaced {
                    namespace: namespace.to_owned(),
                    name: DEFAULT_CONNECTION.to_owned(),
                }
            }
            None => Via::Operator,
        };
        if let Some(recorded) = recorded.filter(|r| **r != via) {
            return Err(Blocked {
                unchecked: false,
                refusal: Refusal::Changed,
                message: format!(
                    "the source was created through {recorded}; this object now names {via}. A \
                     source is never deleted or looked at through another connection: name {recorded} \
                     again, or delete this object (with deletionPolicy Retain to keep the source) and \
                     create it anew"
                ),
                via,
            });
        }
        // A connection Ready by its status but not checked by this process yet (it has just
        // started): wait a little for the first check rather than flap every object's status.
        let deadline = tokio::time::Instant::now() + FIRST_CHECK_WAIT;
        let mut checked = self.checked.subscribe();
        loop {
            match self.route_to(namespace, via.clone()) {
                Err(b) if b.unchecked && tokio::time::Instant::now() < deadline => {
                    let _ = tokio::time::timeout_at(deadline, checked.changed()).await;
                }
                decided => return decided,
            }
        }
    }

    /// A connection's check ended (whatever it found): routes waiting for it decide again.
    pub fn note_checked(&self) {
        self.checked.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The route through `via` for an object of `namespace`, if it exists, admits the namespace
    /// and is Ready.
    pub fn route_to(&self, namespace: &str, via: Via) -> Result<Route, Blocked> {
        let blocked = |refusal, message: String| Blocked {
            refusal,
            message,
            via: via.clone(),
            unchecked: false,
        };
        let ready = match &via {
            Via::Operator => {
                return Ok(Route {
                    via: Via::Operator,
                    chroma: self.operator.clone(),
                });
            }
            Via::Namespaced { namespace, name } => {
                let Some(c) = self.namespaced_connection(namespace, name) else {
                    return Err(blocked(
                        Refusal::NotFound,
                        format!("ChromaSyncConnection {namespace}/{name} does not exist"),
                    ));
                };
                ready_of(
                    c.status.as_ref().map(|s| s.conditions.as_slice()),
                    c.metadata.generation,
                )
            }
            Via::Cluster { name } => {
                let Some(c) = self.cluster.get(&ObjectRef::new(name)) else {
                    return Err(blocked(
                        Refusal::NotFound,
                        format!("ClusterChromaSyncConnection {name} does not exist"),
                    ));
                };
                let labels = self
                    .namespaces
                    .get(&ObjectRef::new(namespace))
                    .map(|ns| ns.labels().clone())
                    .unwrap_or_default();
                let spec = &c.spec;
                if !admits(
                    spec.namespace_selector.as_ref(),
                    spec.namespaces.as_deref(),
                    namespace,
                    &labels,
                ) {
                    return Err(blocked(
                        Refusal::NotPermitted,
                        format!(
                            "ClusterChromaSyncConnection {name} does not admit namespace \
                             {namespace} (its namespaceSelector and namespaces); no call was made"
                        ),
                    ));
                }
                ready_of(
                    c.status.as_ref().map(|s| s.conditions.as_slice()),
                    c.metadata.generation,
                )
            }
        };
        let client = {
            let clients = self.clients.lock().expect("connection clients");
            clients
                .get(&via)
                .filter(|c| {
                    ready
                        .as_ref()
                        .is_ok_and(|generation| c.generation == *generation)
                })
                .map(|c| c.chroma.clone())
        };
        match (ready, client) {
            (Ok(_), Some(chroma)) => Ok(Route { via, chroma }),
            (Err(why), _) => Err(blocked(
                Refusal::NotReady,
                format!("{via} is not Ready: {why}"),
            )),
            (Ok(_), None) => Err(Blocked {
                unchecked: true,
                ..blocked(
                    Refusal::NotReady,
                    format!("{via} is not checked by this operator yet"),
                )
            }),
        }
    }

    fn namespaced_connection(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<std::sync::Arc<ChromaSyncConnection>> {
        let key = ObjectRef::new(name).within(namespace);
        self.namespaced.iter().find_map(|s| s.get(&key))
    }

    /// Where the token of calls through `via` comes from (the operator's default token for the
    /// operator's own route, or a connection not cached: its check will say why).
    pub fn token_from(&self, via: &Via) -> TokenFrom {
        let (namespace, reference) = match via {
            Via::Operator => return TokenFrom::Default,
            Via::Namespaced { namespace, name } => {
                match self.namespaced_connection(namespace, name) {
                    Some(c) => (namespace.clone(), c.spec.endpoint.token_secret_ref.clone()),
                    None => return TokenFrom::Default,
                }
            }
            Via::Cluster { name } => match self.cluster.get(&ObjectRef::new(name)) {
                Some(c) => {
                    let reference = c.spec.endpoint.token_secret_ref.clone();
                    (reference.namespace.clone().unwrap_or_default(), reference)
                }
                None => return TokenFrom::Default,
            },
        };
        TokenFrom::secret(
            &namespace,
            &reference.name,
            &reference.key,
            "the connection's tokenSecretRef",
        )
    }

    /// Records the client a connection's successful check built (for its spec's `generation`).
    pub fn set_client(&self, via: Via, generation: Option<i64>, chroma: ChromaClient) {
        let mut clients = self.clients.lock().expect("connection clients");
        clients.insert(via, Client { generation, chroma });
    }

    /// The client a connection's check built before, if it was for `generation` (its limiter's
    /// state is kept across checks).
    pub fn client(&self, via: &Via, generation: Option<i64>) -> Option<ChromaClient> {
        let clients = self.clients.lock().expect("connection clients");
        clients
            .get(via)
            .filter(|c| c.generation == generation)
            .map(|c| c.chroma.clone())
    }

    /// Forgets a deleted connection's client.
    pub fn forget(&self, via: &Via) {
        self.clients.lock().expect("connection clients").remove(via);
    }

    /// Reconciles `obj` now (a change of its connection, or of its namespace's labels).
    pub fn wake(&self, obj: ObjectRef<SyncSource>) {
        let _ = self.wake.unbounded_send(obj);
    }
}

/// Whether `obj` routes through `via`: it names it (or, naming none, `via` is its namespace's
/// `default`), or its source was made through it.
pub fn uses(obj: &SyncSource, via: &Via) -> bool {
    let namespace = obj.metadata.namespace.as_deref().unwrap_or_default();
    let declared = match &obj.spec.connection_ref {
        Some(reference) => Via::named(namespace, reference) == *via,
        None => {
            *via == Via::Namespaced {
                namespace: namespace.to_owned(),
                name: DEFAULT_CONNECTION.to_owned(),
            }
        }
    };
    let recorded = obj.status.as_ref().and_then(|s| s.connection.as_deref());
    declared || recorded.and_then(|r| Via::recorded(namespace, r)).as_ref() == Some(via)
}

/// Whether a connection's status says Ready for its `generation` (the generation), or why not.
fn ready_of(
    conditions: Option<&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]>,
    generation: Option<i64>,
) -> Result<Option<i64>, String> {
    let ready = conditions
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == super::conditions::READY);
    match ready {
        Some(c) if c.status == "True" && c.observed_generation == generation => Ok(generation),
        Some(c) if c.status == "True" => Err("its latest spec is not checked yet".into()),
        Some(c) => Err(format!("{}: {}", c.reason, c.message)),
        None => Err("not checked yet".into()),
    }
}

/// Whether a cluster connection admits `namespace` (with `labels`): by its selector or its list;
/// with neither, every namespace.
pub fn admits(
    selector: Option<&LabelSelector>,
    names: Option<&[String]>,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    if selector.is_none() && names.is_none() {
        return true;
    }
    names.is_some_and(|names| names.iter().any(|n| n == namespace))
        || selector.is_some_and(|s| selects(s, labels))
}

/// Whether a label selector selects `labels` (an empty selector selects everything).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            // An operator Kubernetes does not know selects nothing (refusing is the safe side).
            _ => false,
        }
    });
    by_labels && by_expressions
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_cluster_connection_admits_by_list_or_selector_and_everyone_without_either() {
        let team = LabelSelector {
            match_labels: Some(labels(&[("chroma-sync/tenant", "yes")])),
            ..Default::default()
        };
        let tenant = labels(&[("chroma-sync/tenant", "yes")]);
        let other = labels(&[("chroma-sync/tenant", "no")]);
        assert!(admits(None, None, "a", &other));
        assert!(admits(Some(&team), None, "a", &tenant));
        assert!(!admits(Some(&team), None, "a", &other));
        let names = ["b".to_owned()];
        assert!(admits(Some(&team), Some(&names), "b", &other));
        assert!(!admits(None, Some(&names), "a", &tenant));
        assert!(!admits(None, Some(&[]), "a", &tenant));
    }

    #[test]
    fn selector_expressions_follow_kubernetes() {
        let req = |op: &str, values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "env".into(),
                operator: op.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            ..Default::default()
        };
        let prod = labels(&[("env", "prod")]);
        let none = labels(&[]);
        assert!(selects(&req("In", &["prod", "stage"]), &prod));
        assert!(!selects(&req("In", &["stage"]), &prod));
        assert!(!selects(&req("In", &["prod"]), &none));
        assert!(selects(&req("NotIn", &["stage"]), &prod));
        assert!(selects(&req("NotIn", &["prod"]), &none));
        assert!(selects(&req("Exists", &[]), &prod));
        assert!(!selects(&req("DoesNotExist", &[]), &prod));
        assert!(!selects(&req("Sometimes", &[]), &prod));
        assert!(selects(&LabelSelector::default(), &none));
    }

    #[test]
    fn status_connection_reads_back() {
        for via in [
            Via::Operator,
            Via::Namespaced {
                namespace: "team-a".into(),
                name: "default".into(),
            },
            Via::Cluster {
                name: "platform".into(),
            },
        ] {
            assert_eq!(Via::recorded("team-a", &via.to_string()), Some(via));
        }
        assert_eq!(Via::recorded("team-a", "Secret/x"), None);
    }
}
