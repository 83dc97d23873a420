//! The kind end-to-end path's conversation step (`tests/e2e/drive.sh`), run here against the
//! real binary started locally with the real simulator: what the users' CI does through a
//! cluster's ingress, this machine does on loopback, with the very same script.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::free_addr;

const BIN: &str = env!("CARGO_BIN_EXE_contact-runtime");

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_http(url: &str, children: &mut Killed) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = Command::new("curl")
            .args(["-sf", "-o", "/dev/null", url])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return;
        }
        for c in &mut children.0 {
            if let Ok(Some(status)) = c.try_wait() {
                panic!("a process exited with {status} before {url} answered");
            }
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not answer within a minute"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn drive_sh_carries_a_conversation_through_runtime_and_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let (rp, sp) = (free_addr().port(), free_addr().port());
    let sim = format!("http://127.0.0.1:{sp}");
    let runtime = format!("http://127.0.0.1:{rp}");
    let config = format!(
        "listen: 127.0.0.1:{rp}\n\
         database_url: sqlite:{db}\n\
         sinch:\n  auth_url: {sim}/oauth2/token\n\
         outbox:\n  poll_interval_ms: 50\n\
         channels:\n\
         \x20 - name: whatsapp\n\
         \x20   type: WHATSAPP\n\
         \x20   project_id: e2e-project\n\
         \x20   app_id: E2EAPP\n\
         \x20   key_id: e2e-key\n\
         \x20   key_secret: e2e-key-secret\n\
         \x20   webhook_secret: e2e-webhook-secret\n\
         \x20   base_url: {sim}\n",
        db = dir.path().join("contact.sqlite").display(),
    );
    let cfg = dir.path().join("contact.yaml");
    std::fs::write(&cfg, config).unwrap();
    let cfg = cfg.display().to_string();
    let mut children = Killed(Vec::new());
    children.0.push(
        Command::new(BIN)
            .args([
                "--config",
                &cfg,
                "simulator",
                "--listen",
                &format!("127.0.0.1:{sp}"),
                "--runtime-url",
                &runtime,
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    children.0.push(
        Command::new(BIN)
            .args(["--config", &cfg, "serve"])
            .env("CONTACT_BOOTSTRAP_ADMIN_EMAIL", "admin@e2e.test")
            .env("CONTACT_BOOTSTRAP_ADMIN_PASSWORD", "e2e-admin-password")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_http(&format!("{sim}/_sim/healthz"), &mut children);
    wait_http(&format!("{runtime}/readyz"), &mut children);

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/drive.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args([&runtime, &sim, "admin@e2e.test", "e2e-admin-password"])
        .output()
        .expect("bash runs drive.sh");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "drive.sh failed:\n{log}");
    assert!(
        log.contains("ok: customer"),
        "drive.sh did not reach its last step:\n{log}"
    );
}
