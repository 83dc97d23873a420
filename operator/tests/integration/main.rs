//! Integration tests of the operator on a real kube-apiserver + etcd (no controller-manager: no
//! pods, no garbage collection; the tests assert on the objects the operator writes).
//!
//! One test binary, one module per behaviour, each test on its own fresh control plane.

mod backups;
mod common;
mod create;
mod deletion;
mod drift;
mod failures;
mod gating;
mod idle;
mod keys;
mod leader;
mod lifecycle;
mod rbac;
mod rollout;
mod secrets;
mod storage;
mod validation;
