//! What the operator's integration tests (tests/*.rs, tests/e2e/) and its benchmark
//! (tests/bench/) share: the operator process and its signals, the audit log, the in-process
//! stand-in, objects, settings, the control plane's clients, kubectl and helm, a test CA.
//!
//! A dev-dependency of the operator's package. Some of it reads what Cargo sets only for a test
//! or bench target of that package; those parts take it from their caller (e.g.
//! [`operator_binary!`], [`tls::TestCa::new`]).

#![forbid(unsafe_code)]

pub mod audit;
pub mod chroma;
pub mod control_plane;
pub mod helm;
pub mod objects;
pub mod operator;
pub mod settings;
pub mod standin;
pub mod tls;
pub mod wait;
