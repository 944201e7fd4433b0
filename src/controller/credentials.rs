//! Where an object's Chroma token comes from: its `tokenSecretRef` (read from the Secret
//! caches) or the operator's default token; and which objects wait for which Secret, so that a
//! Secret's change brings back exactly the objects it may unblock.

use super::Reason;
use crate::chroma::Token;
use crate::crd::SyncSource;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;

/// Where the default token (for objects without `tokenSecretRef`) comes from.
#[derive(Clone, Default)]
pub struct DefaultToken {
    /// From the environment, read once at start.
    pub value: Option<Token>,
    /// A file, read at each use, so a mounted Secret rotates without a restart.
    pub file: Option<PathBuf>,
}

pub(super) struct Credentials {
    default_token: DefaultToken,
    /// One cache per watched scope.
    secrets: Vec<Store<Secret>>,
    /// Becomes true once every Secret cache has listed. (A `Store`'s own readiness future wakes
    /// only one waiter, so reconciles wait on this instead.)
    synced: tokio::sync::watch::Sender<bool>,
    /// SyncSources that need a token from a Secret they reference, by that Secret. Entered
    /// before the Secret is looked up (so a Secret that appears right after the look-up still
    /// wakes the object), left once the object no longer waits on credentials.
    waiting: Mutex<HashMap<ObjectRef<Secret>, HashSet<ObjectRef<SyncSource>>>>,
}

impl Credentials {
    pub(super) fn new(default_token: DefaultToken, secrets: Vec<Store<Secret>>) -> Self {
        Self {
            default_token,
            secrets,
            synced: tokio::sync::watch::Sender::new(false),
            waiting: Mutex::default(),
        }
    }

    /// Every Secret cache has listed its Secrets.
    pub(super) fn set_synced(&self) {
        self.synced.send_replace(true);
    }

    /// Waits until every Secret cache has listed its Secrets, so a token that exists is never
    /// reported missing just because the operator has only started.
    pub(super) async fn synced(&self) {
        let _ = self.synced.subscribe().wait_for(|synced| *synced).await;
    }

    /// The token for an object, or why there is none. Never the token's value in the reason.
    pub(super) fn token_for(&self, obj: &SyncSource) -> Result<Token, String> {
        let Some(reference) = &obj.spec.token_secret_ref else {
            return self.default_token();
        };
        let ns = obj.namespace().unwrap_or_default();
        let key = ObjectRef::<Secret>::new(&reference.name).within(&ns);
        self.waiting
            .lock()
            .expect("secret waiters")
            .entry(key.clone())
            .or_default()
            .insert(ObjectRef::from_obj(obj));
        let Some(secret) = self.secrets.iter().find_map(|s| s.get(&key)) else {
            return Err(format!(
                "Secret {ns}/{} (tokenSecretRef) does not exist",
                reference.name
            ));
        };
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&reference.key))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(&reference.key).cloned())
            });
        value.and_then(Token::new).ok_or_else(|| {
            format!(
                "Secret {ns}/{} has no non-empty key {:?}",
                reference.name, reference.key
            )
        })
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
    pub(super) fn waiting_for(&self, secret: &Secret) -> Vec<ObjectRef<SyncSource>> {
        let key = ObjectRef::from_obj(secret);
        let waiting = self.waiting.lock().expect("secret waiters");
        waiting
            .get(&key)
            .map(|objects| objects.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets that `obj` waits for a Secret, unless `reason` says it still does.
    pub(super) fn settle(&self, obj: &SyncSource, reason: Option<Reason>) {
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
