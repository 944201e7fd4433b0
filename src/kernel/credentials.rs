//! Where an object's Chroma token comes from: its `tokenSecretRef` or the operator's default
//! token; and which objects wait for which Secret, so that a Secret's change brings back exactly
//! the objects it may unblock.
//!
//! The Secret watch keeps metadata only (name, namespace, resourceVersion): in a cluster with
//! many Secrets, their data would be most of the operator's memory, and none of it is ours. The
//! data of a Secret a SyncSource references is read when a reconcile needs it ([`load`]) and
//! kept, for that Secret alone, until its resourceVersion moves on.
//!
//! [`load`]: Credentials::load

use super::Reason;
use crate::chroma::Token;
use crate::crd::SyncSource;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// The longest wait for one read of a Secret's data.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The data of one referenced Secret, as read at a resourceVersion of its metadata.
struct Loaded {
    /// The resourceVersion the metadata cache had when the data was read: the data is current
    /// while the cache still has it.
    for_version: Option<String>,
    data: BTreeMap<String, ByteString>,
}

/// Where the default token (for objects without `tokenSecretRef`) comes from.
#[derive(Clone, Default)]
pub struct DefaultToken {
    /// From the environment, read once at start.
    pub value: Option<Token>,
    /// A file, read at each use, so a mounted Secret rotates without a restart.
    pub file: Option<PathBuf>,
}

pub struct Credentials {
    client: Client,
    default_token: DefaultToken,
    /// One metadata cache per watched scope.
    secrets: Vec<Store<PartialObjectMeta<Secret>>>,
    /// The Secret watch's label selector, if any (named in "does not exist" messages).
    selector: Option<String>,
    /// The data of the Secrets that SyncSources reference, and of no other.
    loaded: Mutex<HashMap<ObjectRef<Secret>, Loaded>>,
    /// Becomes true once every Secret cache has listed. (A `Store`'s own readiness future wakes
    /// only one waiter, so reconciles wait on this instead.)
    synced: tokio::sync::watch::Sender<bool>,
    /// SyncSources that need a token from a Secret they reference, by that Secret. Entered
    /// before the Secret is looked up (so a Secret that appears right after the look-up still
    /// wakes the object), left once the object no longer waits on credentials.
    waiting: Mutex<HashMap<ObjectRef<Secret>, HashSet<ObjectRef<SyncSource>>>>,
}

impl Credentials {
    pub fn new(
        client: Client,
        default_token: DefaultToken,
        secrets: Vec<Store<PartialObjectMeta<Secret>>>,
        selector: Option<String>,
    ) -> Self {
        Self {
            client,
            default_token,
            secrets,
            selector,
            loaded: Mutex::default(),
            synced: tokio::sync::watch::Sender::new(false),
            waiting: Mutex::default(),
        }
    }

    /// Every Secret cache has listed its Secrets.
    pub fn set_synced(&self) {
        self.synced.send_replace(true);
    }

    /// Waits until every Secret cache has listed its Secrets, so a token that exists is never
    /// reported missing just because the operator has only started.
    pub async fn synced(&self) {
        let _ = self.synced.subscribe().wait_for(|synced| *synced).await;
    }

    /// The token `from` names, or why there is none. Never the token's value in the reason.
    /// `waiter`, if any, is noted as waiting for the Secret, so that the Secret's change wakes
    /// it (noted before the Secret is looked up, so that one appearing right after still does).
    pub async fn token(
        &self,
        from: &TokenFrom,
        waiter: Option<&SyncSource>,
    ) -> Result<Token, String> {
        if let (TokenFrom::Secret { secret, .. }, Some(obj)) = (from, waiter) {
            self.note_waiter(secret, obj);
        }
        self.load(from).await?;
        self.peek(from)
    }

    /// The (trimmed, non-empty) value of key `data_key` of `secret`, or why there is none, read
    /// as a token is: `field` names the reference in messages, which never hold the value;
    /// `waiter` is woken when the Secret changes. For values that are no Chroma token (an S3
    /// source's AWS key).
    pub async fn secret_value(
        &self,
        secret: &ObjectRef<Secret>,
        data_key: &str,
        field: &str,
        waiter: &SyncSource,
    ) -> Result<String, String> {
        self.note_waiter(secret, waiter);
        self.load_secret(secret).await?;
        self.peek_key(secret, data_key, field)
    }

    fn note_waiter(&self, secret: &ObjectRef<Secret>, obj: &SyncSource) {
        self.waiting
            .lock()
            .expect("secret waiters")
            .entry(secret.clone())
            .or_default()
            .insert(ObjectRef::from_obj(obj));
    }

    /// Reads the data of the Secret `from` names, unless what was read is still current. A
    /// Secret the metadata cache does not have is not read (and what was read of it is
    /// forgotten). The read is a list of that one name: the operator's role grants `list` and
    /// `watch` on Secrets, and no `get`.
    pub async fn load(&self, from: &TokenFrom) -> Result<(), String> {
        match from {
            TokenFrom::Secret { secret, .. } => self.load_secret(secret).await,
            TokenFrom::Default => Ok(()),
        }
    }

    async fn load_secret(&self, key: &ObjectRef<Secret>) -> Result<(), String> {
        let version = match self.metadata(key) {
            Some(meta) => meta.metadata.resource_version.clone(),
            None => {
                self.loaded.lock().expect("loaded secrets").remove(key);
                return Ok(());
            }
        };
        let current = |loaded: &HashMap<_, Loaded>| {
            loaded
                .get(key)
                .is_some_and(|l: &Loaded| l.for_version == version)
        };
        if current(&self.loaded.lock().expect("loaded secrets")) {
            return Ok(());
        }
        let ns = key.namespace.as_deref().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let params = ListParams::default().fields(&format!("metadata.name={}", key.name));
        let read = tokio::time::timeout(READ_TIMEOUT, api.list(&params)).await;
        let why = |e: String| format!("Secret {ns}/{} cannot be read: {e}", key.name);
        let list = match read {
            Ok(Ok(list)) => list,
            Ok(Err(e)) => return Err(why(e.to_string())),
            Err(_) => return Err(why(format!("no answer within {READ_TIMEOUT:?}"))),
        };
        let data = list
            .items
            .into_iter()
            .next()
            .and_then(|s| s.data)
            .unwrap_or_default();
        let loaded = Loaded {
            for_version: version,
            data,
        };
        self.loaded
            .lock()
            .expect("loaded secrets")
            .insert(key.clone(), loaded);
        Ok(())
    }

    /// The token `from` names, from what is loaded, without noting a waiter (the drift check
    /// reads tokens of objects that wait for nothing).
    pub fn peek(&self, from: &TokenFrom) -> Result<Token, String> {
        let TokenFrom::Secret {
            secret: key,
            data_key,
            field,
        } = from
        else {
            return self.default_token();
        };
        let value = self.peek_key(key, data_key, field)?;
        Token::new(value).ok_or_else(|| format!("the token in {field} is empty"))
    }

    /// Key `data_key` of the loaded Secret `key`, trimmed and not empty.
    fn peek_key(
        &self,
        key: &ObjectRef<Secret>,
        data_key: &str,
        field: &str,
    ) -> Result<String, String> {
        let ns = key.namespace.as_deref().unwrap_or_default();
        let Some(meta) = self.metadata(key) else {
            let hint = match &self.selector {
                Some(selector) => {
                    format!(" (or does not match the operator's Secret selector {selector:?})")
                }
                None => String::new(),
            };
            return Err(format!(
                "Secret {ns}/{} ({field}) does not exist{hint}",
                key.name
            ));
        };
        let loaded = self.loaded.lock().expect("loaded secrets");
        let Some(secret) = loaded
            .get(key)
            .filter(|l| l.for_version == meta.metadata.resource_version)
        else {
            return Err(format!("Secret {ns}/{} is not read yet", key.name));
        };
        let value = secret
            .data
            .get(data_key)
            .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned());
        value.filter(|v| !v.is_empty()).ok_or_else(|| {
            format!(
                "Secret {ns}/{} ({field}) has no non-empty key {data_key:?}",
                key.name
            )
        })
    }

    fn metadata(
        &self,
        key: &ObjectRef<Secret>,
    ) -> Option<std::sync::Arc<PartialObjectMeta<Secret>>> {
        let key = ObjectRef::<PartialObjectMeta<Secret>>::new(&key.name)
            .within(key.namespace.as_deref().unwrap_or_default());
        self.secrets.iter().find_map(|s| s.get(&key))
    }

    fn default_token(&self) -> Result<Token, String> {
        if let Some(path) = &self.default_token.file {
            return std::fs::read_to_string(path)
                .ok()
                .and_then(Token::new)
                .ok_or_else(|| {
                    format!(
                        "no tokenSecretRef, and the operator's token file {} is missing or empty",
                        path.display()
                    )
                });
        }
        self.default_token.value.clone().ok_or_else(|| {
            "no tokenSecretRef, and the operator has no default token configured".to_owned()
        })
    }

    /// The objects a change of `secret` may unblock.
    pub fn waiting_for(&self, secret: &PartialObjectMeta<Secret>) -> Vec<ObjectRef<SyncSource>> {
        let key = ObjectRef::<Secret>::new(&secret.name_any())
            .within(&secret.namespace().unwrap_or_default());
        let waiting = self.waiting.lock().expect("secret waiters");
        waiting
            .get(&key)
            .map(|objects| objects.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets that `obj` waits for a Secret, unless `reason` says it still does.
    pub fn settle(&self, obj: &SyncSource, reason: Option<impl Reason>) {
        if reason.is_some_and(Reason::is_about_credentials) {
            return;
        }
        let me = ObjectRef::from_obj(obj);
        let mut waiting = self.waiting.lock().expect("secret waiters");
        waiting.retain(|_, objects| {
            objects.remove(&me);
            !objects.is_empty()
        });
    }
}

/// Where a token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenFrom {
    /// The operator's default token.
    Default,
    /// A key of a Secret; `field` names the reference in messages.
    Secret {
        secret: ObjectRef<Secret>,
        data_key: String,
        field: &'static str,
    },
}

impl TokenFrom {
    /// The key `data_key` of Secret `namespace/name`.
    pub fn secret(namespace: &str, name: &str, data_key: &str, field: &'static str) -> Self {
        TokenFrom::Secret {
            secret: ObjectRef::new(name).within(namespace),
            data_key: data_key.to_owned(),
            field,
        }
    }
}
