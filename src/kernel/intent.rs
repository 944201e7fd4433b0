//! What people ask of an object through its annotations: pause it, or reconcile it now. Pure
//! reads of the metadata, shared by the SyncSource and SyncRun controllers and their change
//! filters.

use crate::crd::{FLUX_REQUEST_ANNOTATION, PAUSED_ANNOTATION, RECONCILE_REQUEST_ANNOTATION};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::hash::{DefaultHasher, Hash, Hasher};

/// Is the object paused (`chromasync.dev/paused: "true"`)? Any other value is not a pause, so a
/// typo resumes rather than silently freezing the object.
pub fn paused(meta: &ObjectMeta) -> bool {
    annotation(meta, PAUSED_ANNOTATION) == Some("true")
}

/// The reconcile-now token not yet handled: the annotation's value when it differs from the
/// one status says was handled last.
pub fn requested<'a>(meta: &'a ObjectMeta, handled: Option<&str>) -> Option<&'a str> {
    annotation(meta, RECONCILE_REQUEST_ANNOTATION).filter(|token| Some(*token) != handled)
}

/// The reconcile-now token to record as handled by a reconcile that ran: the annotation's
/// value, or what was recorded before.
pub fn handled(meta: &ObjectMeta, before: Option<&String>) -> Option<String> {
    annotation(meta, RECONCILE_REQUEST_ANNOTATION)
        .map(str::to_owned)
        .or_else(|| before.cloned())
}

/// The values of the two reconcile-now annotations, Flux's and the project's own: on a
/// SyncSource with `spec.sync` a new value of either starts a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requests {
    /// `reconcile.fluxcd.io/requestedAt` (a Flux Receiver sets it on a push).
    pub flux: Option<String>,
    /// `chromasync.dev/reconcile-requested-at`.
    pub own: Option<String>,
}

/// The reconcile-now annotations' values.
pub fn requests(meta: &ObjectMeta) -> Requests {
    Requests {
        flux: annotation(meta, FLUX_REQUEST_ANNOTATION).map(str::to_owned),
        own: annotation(meta, RECONCILE_REQUEST_ANNOTATION).map(str::to_owned),
    }
}

impl Requests {
    /// Whether either holds a value other than the one `handled` records: a value equal to the
    /// handled one, or an annotation removed, asks for nothing.
    pub fn new_since(&self, handled: &Requests) -> bool {
        let new = |now: &Option<String>, was: &Option<String>| now.is_some() && now != was;
        new(&self.flux, &handled.flux) || new(&self.own, &handled.own)
    }
}

/// A fingerprint of the annotations, for the change filters: a new value of any must reach a
/// reconcile, and nothing else in the metadata does.
pub fn fingerprint(meta: &ObjectMeta) -> u64 {
    let mut h = DefaultHasher::new();
    annotation(meta, PAUSED_ANNOTATION).hash(&mut h);
    annotation(meta, RECONCILE_REQUEST_ANNOTATION).hash(&mut h);
    annotation(meta, FLUX_REQUEST_ANNOTATION).hash(&mut h);
    h.finish()
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            annotations: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn only_true_pauses() {
        assert!(paused(&meta(&[(PAUSED_ANNOTATION, "true")])));
        assert!(!paused(&meta(&[(PAUSED_ANNOTATION, "false")])));
        assert!(!paused(&meta(&[(PAUSED_ANNOTATION, "yes")])));
        assert!(!paused(&ObjectMeta::default()));
    }

    #[test]
    fn a_request_is_pending_until_its_token_is_handled() {
        let m = meta(&[(RECONCILE_REQUEST_ANNOTATION, "t2")]);
        assert_eq!(requested(&m, None), Some("t2"));
        assert_eq!(requested(&m, Some("t1")), Some("t2"));
        assert_eq!(requested(&m, Some("t2")), None);
        assert_eq!(requested(&ObjectMeta::default(), Some("t1")), None);
        assert_eq!(handled(&m, Some(&"t1".into())), Some("t2".into()));
        assert_eq!(
            handled(&ObjectMeta::default(), Some(&"t1".into())),
            Some("t1".into()),
            "removing the annotation keeps what was handled"
        );
    }

    #[test]
    fn the_fingerprint_moves_with_either_annotation_only() {
        let base = fingerprint(&meta(&[("other", "1")]));
        assert_eq!(base, fingerprint(&meta(&[("other", "2")])));
        assert_ne!(base, fingerprint(&meta(&[(PAUSED_ANNOTATION, "true")])));
        let a = fingerprint(&meta(&[(RECONCILE_REQUEST_ANNOTATION, "a")]));
        let b = fingerprint(&meta(&[(RECONCILE_REQUEST_ANNOTATION, "b")]));
        assert_ne!(a, b);
        assert_ne!(base, a);
        let flux = fingerprint(&meta(&[(FLUX_REQUEST_ANNOTATION, "a")]));
        assert_ne!(base, flux);
        assert_ne!(a, flux);
    }

    #[test]
    fn a_request_is_new_until_its_value_is_handled() {
        let both = requests(&meta(&[
            (FLUX_REQUEST_ANNOTATION, "push-1"),
            (RECONCILE_REQUEST_ANNOTATION, "t1"),
        ]));
        assert_eq!(both.flux.as_deref(), Some("push-1"));
        assert!(both.new_since(&Requests::default()));
        assert!(!both.new_since(&both), "the same values again: nothing");
        let pushed = Requests {
            flux: Some("push-2".into()),
            ..both.clone()
        };
        assert!(pushed.new_since(&both));
        assert!(
            !Requests::default().new_since(&both),
            "removing the annotations asks for nothing"
        );
    }
}
