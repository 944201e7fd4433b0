//! chroma-sync-operator: manages Chroma Sync sources and their sync runs, declared as `SyncSource`
//! and `SyncRun` resources.
//!
//! - [`crd`]: the custom resource, as users write it.
//! - [`payload`]: the pure mapping from a spec to the service's create payload.
//! - [`chroma`]: the Chroma Sync API client (the only place that talks to the service).
//! - [`controller`]: watches, reconcile flows and their pure decisions.
//! - [`runs`]: the SyncRun controller: one Chroma Sync invocation per SyncRun.
//! - [`leader`]: leader election on a Lease, for several replicas.
//! - [`server`]: health and metrics endpoints.
//! - [`standin`]: the local Chroma Sync stand-in used by `make run` and the tests.

pub mod chroma;
pub mod controller;
pub mod crd;
pub mod leader;
pub mod metrics;
pub mod payload;
pub mod runs;
pub mod server;
pub mod standin;
