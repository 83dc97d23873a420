//! Personal data and its lifecycle: the hash-chained audit log, the DPO's search, export and
//! anonymization, contact import and export, and the retention jobs.
//!
//! Layout: [`audit`] (entry format and chain verification, pure), [`chainer`] (the background
//! loop that chains committed audit entries), [`anonymize`] (what replaced
//! data looks like, pure), [`hooks`] (the audit entries of the runtime's write paths, pure),
//! [`transfer`] (CSV/JSON parsing and validation of contact imports, pure), [`retention`] (the
//! scheduled job), [`http`] (the `/api/v1/privacy` routes) and [`clock`] (the injectable clock).
//! The SQL lives in `storage/audit.rs` and `storage/privacy.rs`.
//!
//! Who is acting: the authenticated principal of the request (`http::auth::Principal`), taken
//! from the session, never from a header. Privacy routes require the `dpo` role (import,
//! export and retention also `admin`); audited writes record the user id, or `api` for the
//! integrators' bearer token, which stands for no user.

pub mod anonymize;
pub mod audit;
pub mod chainer;
pub mod clock;
pub mod hooks;
pub mod http;
pub mod retention;
pub mod transfer;

pub use clock::{Clock, ManualClock, SystemClock};
pub use retention::RetentionSettings;
