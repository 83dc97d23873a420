//! What the real binary says when its environment lacks a piece: a clear error and a non-zero
//! exit, never a panic. (An image without a CA bundle made the runtime panic at start on a real
//! node: reqwest's "No CA certificates were loaded from the system".)

use std::process::{Command, Output};

/// Runs the binary with no CA certificates in reach: `SSL_CERT_FILE`/`SSL_CERT_DIR` replace the
/// system's locations, and these point at nothing.
fn without_ca_certificates(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("contact.db");
    Command::new(env!("CARGO_BIN_EXE_contact-runtime"))
        .args(args)
        .env("CONTACT_DATABASE_URL", format!("sqlite://{}", db.display()))
        .env("CONTACT_LISTEN", "127.0.0.1:0")
        .env("SSL_CERT_FILE", dir.path().join("no-bundle.pem"))
        .env("SSL_CERT_DIR", dir.path().join("no-certs"))
        .env("CONTACT_LOG", "warn")
        .env_remove("CONTACT_CONFIG")
        .output()
        .expect("run contact-runtime")
}

fn assert_clear_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a plain failure, not a panic: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains(needle), "stderr lacks `{needle}`: {stderr}");
    assert!(
        stderr.contains("CA certificates"),
        "names what is missing: {stderr}"
    );
}

#[test]
fn serve_without_ca_certificates_says_so_instead_of_panicking() {
    let out = without_ca_certificates(&["serve"]);
    assert_clear_error(&out, "cannot build the Conversation API client");
}

#[test]
fn the_simulator_without_ca_certificates_says_so_instead_of_panicking() {
    let out = without_ca_certificates(&["simulator", "--listen", "127.0.0.1:0"]);
    assert_clear_error(&out, "cannot build the simulator's HTTP client");
}
