//! Harnesses that start real parts for tests (a kube-apiserver with etcd, PostgreSQL, the helm
//! CLI), and helpers to put the project's own YAML (CRDs, examples) into them.

pub mod controlplane;
pub mod kube_helpers;
pub mod postgres;
pub mod tools;

use std::path::PathBuf;

/// The repository root, for tests that read committed files (examples, generated YAML).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}
