//! Command-line tools the tests drive for real (helm), built from their Go modules and cached.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The helm binary: `CONTACT_HELM` if set, else built once by `tests/tools/install-helm.sh`.
/// Panics with the reason when it cannot be had: a chart test that skips proves nothing.
pub fn helm() -> PathBuf {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        if let Ok(path) = std::env::var("CONTACT_HELM") {
            return PathBuf::from(path);
        }
        crate::run_build_script("tests/tools/install-helm.sh").unwrap_or_else(|e| panic!("{e}"))
    })
    .clone()
}

/// The output of a finished command.
pub struct Output {
    /// Whether it exited with 0.
    pub success: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs helm with arguments from the repository root.
pub fn run_helm(args: &[&str]) -> Output {
    let out = Command::new(helm())
        .args(args)
        .current_dir(crate::repo_root())
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("contact-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("contact-helm-config"),
        )
        .output()
        .expect("helm runs");
    Output {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
