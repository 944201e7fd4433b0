//! What every kind's reasons have in common: a stable CamelCase name that the `Ready`
//! condition, an Event and the metric labels all say, so a dashboard, `kubectl get` and
//! `kubectl events` name an outcome the same way. Each kind has its own enum of them.

use std::fmt::{Debug, Display};

pub trait Reason: Copy + Debug + Display + PartialEq + Send + Sync + 'static {
    /// The wire name: people and tools match on it, so it never changes.
    fn as_str(self) -> &'static str;

    /// Waiting on credentials: the object is woken by a change of its token Secret.
    fn is_about_credentials(self) -> bool;
}
