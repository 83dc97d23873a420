//! Harnesses that start real parts for tests (a kube-apiserver with etcd, PostgreSQL, the helm
//! CLI), helpers to put the project's own YAML (CRDs, examples) into them, and what the
//! runtime's benchmarks share ([`bench`]).

pub mod bench;
pub mod cluster;
pub mod controlplane;
pub mod kube_helpers;
pub mod postgres;
pub mod tools;

use std::path::PathBuf;

/// The repository root, for tests that read committed files (examples, generated YAML).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs one of the repository's caching build scripts (they print the built path last on
/// stdout, and are idempotent and locked, so parallel tests may call them) and returns that path.
pub fn run_build_script(relative: &str) -> Result<PathBuf, String> {
    run_build_script_with(relative, &[])
}

/// [`run_build_script`] with arguments.
pub fn run_build_script_with(relative: &str, args: &[&str]) -> Result<PathBuf, String> {
    let script = repo_root().join(relative);
    let out = std::process::Command::new("bash")
        .arg(&script)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("failed to run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed with {} (is Go installed? .ci/run installs it)",
            script.display(),
            out.status
        ));
    }
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned();
    Ok(PathBuf::from(last))
}
