//! The backup key, AES-256-GCM sealing, and the manifest's authentication: pure functions.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::Error;

/// A 32-byte AES-256 key.
#[derive(Clone)]
pub struct BackupKey([u8; 32]);

impl std::fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackupKey(***)")
    }
}

impl BackupKey {
    /// Parses the key as the tenant Secret holds it: 64 hexadecimal digits, or base64 of exactly
    /// 32 bytes in the standard or the URL-safe alphabet (the operator generates URL-safe), with
    /// or without padding. Surrounding whitespace is ignored.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let t = text.trim();
        let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(t).map_err(|e| Error::Key(e.to_string()))?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(t))
                .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(t))
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t))
                .map_err(|_| {
                    Error::Key("expected 64 hex digits or base64 of 32 bytes".to_owned())
                })?
        };
        let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            Error::Key(format!("the key must be 32 bytes, got {}", b.len()))
        })?;
        Ok(Self(key))
    }

    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The manifest MAC key: HMAC-SHA256(key, "contact-backup-manifest"), so the encryption
    /// key itself is used for nothing but AES-GCM.
    fn mac_key(&self) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        m.update(b"contact-backup-manifest");
        m.finalize().into_bytes().into()
    }
}

/// SHA-256 as hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Encrypts `plaintext`, binding `aad`; returns `(nonce, ciphertext with tag)`.
pub fn seal(key: &BackupKey, plaintext: &[u8], aad: &[u8]) -> Result<([u8; 12], Vec<u8>), Error> {
    let cipher = Aes256Gcm::new_from_slice(&key.0).map_err(|e| Error::Key(e.to_string()))?;
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| Error::Crypto("encryption failed".to_owned()))?;
    Ok((nonce, ct))
}

/// Decrypts and authenticates `ciphertext`.
pub fn open(
    key: &BackupKey,
    nonce: &[u8],
    ciphertext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, Error> {
    if nonce.len() != 12 {
        return Err(Error::Tampered("the nonce is not 12 bytes".to_owned()));
    }
    let cipher = Aes256Gcm::new_from_slice(&key.0).map_err(|e| Error::Key(e.to_string()))?;
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| {
            Error::Tampered(
                "the authentication tag does not match (wrong key, or the file was altered)"
                    .to_owned(),
            )
        })
}

/// HMAC-SHA256 of `canonical` under the key's MAC subkey, hex.
pub fn mac(key: &BackupKey, canonical: &[u8]) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&key.mac_key()).expect("any key length");
    m.update(canonical);
    hex::encode(m.finalize().into_bytes())
}

/// Checks a MAC in constant time.
pub fn verify_mac(key: &BackupKey, canonical: &[u8], expected_hex: &str) -> bool {
    let Ok(expected) = hex::decode(expected_hex) else {
        return false;
    };
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&key.mac_key()).expect("any key length");
    m.update(canonical);
    m.verify_slice(&expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_from_hex_or_base64() {
        let hex_key = "00".repeat(31) + "ff";
        let k = BackupKey::parse(&hex_key).unwrap();
        assert_eq!(k.0[31], 0xff);
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(BackupKey::parse(&format!(" {b64}\n")).unwrap().0, [7u8; 32]);
        assert!(matches!(BackupKey::parse("abc"), Err(Error::Key(_))));
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        assert!(matches!(BackupKey::parse(&short), Err(Error::Key(m)) if m.contains("16")));
        assert_eq!(format!("{k:?}"), "BackupKey(***)");
    }

    #[test]
    fn sealing_round_trips_and_detects_changes() {
        let k = BackupKey::from_bytes([1; 32]);
        let (nonce, mut ct) = seal(&k, b"rows", b"name").unwrap();
        assert_eq!(open(&k, &nonce, &ct, b"name").unwrap(), b"rows");
        assert!(matches!(
            open(&k, &nonce, &ct, b"other"),
            Err(Error::Tampered(_))
        ));
        assert!(matches!(
            open(&BackupKey::from_bytes([2; 32]), &nonce, &ct, b"name"),
            Err(Error::Tampered(_))
        ));
        ct[0] ^= 1;
        assert!(matches!(
            open(&k, &nonce, &ct, b"name"),
            Err(Error::Tampered(_))
        ));
    }

    #[test]
    fn macs_verify() {
        let k = BackupKey::from_bytes([3; 32]);
        let m = mac(&k, b"manifest");
        assert!(verify_mac(&k, b"manifest", &m));
        assert!(!verify_mac(&k, b"manifesT", &m));
        assert!(!verify_mac(&k, b"manifest", "zz"));
    }
}
