//! Personal data and its lifecycle: the hash-chained audit log, the DPO's search, export and
//! anonymization, contact import and export, and the retention jobs.
//!
//! Layout: [`chainer`] (the background loop that chains committed audit entries),
//! [`transfer`] (CSV/JSON parsing and validation of contact imports, pure), [`retention`] (the
//! scheduled job) and [`clock`] (the injectable clock). Lower floors hold what storage needs
//! while it writes: the audit entry format and hash chain (`domain::audit`), what anonymized
//! data looks like (`domain::anonymize`), and which entries each write records
//! (`storage/audit/entries.rs`); the SQL lives in `storage/audit/` and `storage/privacy.rs`,
//! the `/api/v1/privacy` routes in `http/routes/privacy.rs`.
//!
//! Who is acting: the authenticated principal of the request (`http::auth::Principal`), taken
//! from the session, never from a header. Privacy routes require the `dpo` role (import,
//! export and retention also `admin`); audited writes record the user id, or `api` for the
//! integrators' bearer token, which stands for no user.

pub mod chainer;
pub mod clock;
pub mod retention;
pub(crate) mod transfer;

pub use clock::ManualClock;
pub(crate) use clock::SystemClock;
