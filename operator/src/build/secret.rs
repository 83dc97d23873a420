//! The tenant's generated keys: session signing key, backup encryption key and the bootstrap
//! admin password. Generated once and never overwritten: the builder takes the values that exist
//! and only fills in what is missing, because rotating any of them by accident would log everyone
//! out, make old backups unreadable, or lock the admin out.

use super::{data_meta, names};
use crate::tenant::ValidatedTenant;
use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rand::RngCore;
use std::collections::BTreeMap;

/// Keys of the generated Secret and their length in random bytes.
pub(crate) const SECRET_KEYS: &[(&str, usize)] = &[
    ("session-key", 64),
    ("backup-encryption-key", 32),
    ("admin-password", 18),
];

/// Builds the key Secret, keeping every existing value and generating missing ones with `rng`.
pub fn build_secret(
    t: &ValidatedTenant,
    existing: &BTreeMap<String, ByteString>,
    rng: &mut impl RngCore,
) -> Secret {
    let data = SECRET_KEYS
        .iter()
        .map(|&(key, len)| {
            let value = existing
                .get(key)
                .filter(|v| !v.0.is_empty())
                .cloned()
                .unwrap_or_else(|| {
                    let mut buf = vec![0u8; len];
                    rng.fill_bytes(&mut buf);
                    // URL-safe text so the values can be typed (the admin password) or put in env.
                    ByteString(
                        base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .encode(buf)
                            .into_bytes(),
                    )
                });
            (key.to_string(), value)
        })
        .collect();
    Secret {
        metadata: data_meta(t, names::keys(&t.name), "keys"),
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    }
}
