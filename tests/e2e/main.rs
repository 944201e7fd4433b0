//! End-to-end tests on the real kube-apiserver and etcd that `make test` starts, with the local
//! Chroma Sync stand-in and the operator binary. Each test has its own namespace.

mod admission;
mod chaos;
mod chroma_errors;
mod chroma_faults;
mod connections;
mod crd_deletion;
mod crds;
mod create_window;
mod credentials;
mod harness;
mod install;
mod keep;
mod kube_faults;
mod kubectl;
mod leader;
mod lifecycle;
mod notify;
mod observe;
mod orphans;
mod probes;
mod proxy;
mod publish;
mod rbac;
mod replicas;
mod runs;
mod s3;
mod s3_runs;
mod sharding;
mod shutdown;
mod tenants;
mod upgrade;

use chroma_sync_test_support as support;
