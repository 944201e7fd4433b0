//! chroma-sync-operator: manages Chroma Sync sources and their sync runs, declared as `SyncSource`
//! and `SyncRun` resources.
//!
//! - [`crd`]: the custom resources, as users write them.
//! - [`kernel`]: what every kind's controller stands on: the reconcile driver, the crash-safe
//!   create, bounded Kubernetes IO, failure classes, conditions, Events, caches, credentials.
//! - [`source`]: the SyncSource kind: one Chroma Sync source per object, and its `spec.sync`.
//! - [`run`]: the SyncRun kind: one Chroma Sync invocation per object, followed to its end.
//! - [`chroma`]: the Chroma Sync API client (the only place that talks to the service).
//! - [`leader`]: leader election on a Lease, for several replicas.
//! - [`server`] and [`metrics`]: health and metrics endpoints.

pub mod chroma;
pub mod connection;
pub mod crd;
pub mod duration;
pub mod kernel;
pub mod leader;
pub mod metrics;
pub mod run;
pub mod server;
pub mod source;
