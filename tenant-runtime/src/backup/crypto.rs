//! The backup key, AES-256-GCM sealing (whole buffers, and chunked streams), and the manifest's
//! authentication: pure functions.
//!
//! Streams follow the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár, "Online
//! authenticated-encryption and its nonce-reuse misuse-resistance", 2015) in its big-endian
//! 32-bit counter form: chunk `i` is sealed under the nonce `prefix(7) ‖ i (u32 BE) ‖ last(1)`,
//! where `prefix` is random per backup and `last` is 1 only for the final chunk. Reordered
//! chunks fail their tag (wrong counter), and a stream cut at a chunk boundary is caught because
//! its new final chunk was sealed with `last = 0`. Written here (a dozen lines over `aes-gcm`)
//! rather than enabling the `aead` crate's `stream` feature, to keep the dependency set as is.

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

/// Length of the random nonce prefix of a stream.
pub(crate) const NONCE_PREFIX_BYTES: usize = 7;
/// Length of a GCM tag: each sealed chunk is this much longer than its plaintext.
pub const TAG_BYTES: usize = 16;

fn chunk_nonce(prefix: &[u8; NONCE_PREFIX_BYTES], counter: u32, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..NONCE_PREFIX_BYTES].copy_from_slice(prefix);
    n[NONCE_PREFIX_BYTES..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// Seals a stream chunk by chunk (see the module documentation).
pub(crate) struct StreamSealer {
    cipher: Aes256Gcm,
    prefix: [u8; NONCE_PREFIX_BYTES],
    counter: u32,
    aad: Vec<u8>,
    finished: bool,
}

impl StreamSealer {
    /// A sealer with a fresh random nonce prefix, binding `aad` to every chunk.
    pub(crate) fn new(key: &BackupKey, aad: &[u8]) -> Result<Self, Error> {
        let mut prefix = [0u8; NONCE_PREFIX_BYTES];
        rand::rng().fill_bytes(&mut prefix);
        Ok(Self {
            cipher: Aes256Gcm::new_from_slice(&key.0).map_err(|e| Error::Key(e.to_string()))?,
            prefix,
            counter: 0,
            aad: aad.to_vec(),
            finished: false,
        })
    }

    /// The nonce prefix (stored in the manifest).
    pub(crate) fn prefix(&self) -> [u8; NONCE_PREFIX_BYTES] {
        self.prefix
    }

    /// Seals the next chunk; `last` for the final one (which may be empty).
    pub(crate) fn seal(&mut self, plaintext: &[u8], last: bool) -> Result<Vec<u8>, Error> {
        if self.finished {
            return Err(Error::Crypto("the stream is already finished".to_owned()));
        }
        let nonce = chunk_nonce(&self.prefix, self.counter, last);
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &self.aad,
                },
            )
            .map_err(|_| Error::Crypto("encryption failed".to_owned()))?;
        // A counter that wrapped would reuse nonces: refuse (2^32 chunks is far beyond any
        // database this runtime serves).
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or_else(|| Error::Crypto("too many chunks for one stream".to_owned()))?;
        self.finished = last;
        Ok(ct)
    }
}

/// Opens a stream sealed by [`StreamSealer`], chunk by chunk, in order.
pub(crate) struct StreamOpener {
    cipher: Aes256Gcm,
    prefix: [u8; NONCE_PREFIX_BYTES],
    counter: u32,
    aad: Vec<u8>,
}

impl StreamOpener {
    /// An opener for the stream with nonce `prefix` and associated data `aad`.
    pub(crate) fn new(key: &BackupKey, prefix: &[u8], aad: &[u8]) -> Result<Self, Error> {
        let prefix: [u8; NONCE_PREFIX_BYTES] = prefix.try_into().map_err(|_| {
            Error::Tampered(format!(
                "the nonce prefix is not {NONCE_PREFIX_BYTES} bytes"
            ))
        })?;
        Ok(Self {
            cipher: Aes256Gcm::new_from_slice(&key.0).map_err(|e| Error::Key(e.to_string()))?,
            prefix,
            counter: 0,
            aad: aad.to_vec(),
        })
    }

    fn try_open(&self, ciphertext: &[u8], last: bool) -> Option<Vec<u8>> {
        let nonce = chunk_nonce(&self.prefix, self.counter, last);
        self.cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: ciphertext,
                    aad: &self.aad,
                },
            )
            .ok()
    }

    /// Opens the next chunk; `last` when the file ends after it.
    pub(crate) fn open(&mut self, ciphertext: &[u8], last: bool) -> Result<Vec<u8>, Error> {
        let n = self.counter;
        match self.try_open(ciphertext, last) {
            Some(plain) => {
                self.counter = self.counter.wrapping_add(1);
                Ok(plain)
            }
            // The file ends after a chunk that was not sealed as the last one: cut off.
            None if last && self.try_open(ciphertext, false).is_some() => Err(Error::Tampered(
                format!("the backup is truncated (it ends after chunk {n}, which is not the last)"),
            )),
            None => Err(Error::Tampered(format!(
                "chunk {n} fails authentication (altered, reordered, truncated, or the key is wrong)"
            ))),
        }
    }
}

/// HMAC-SHA256 of `canonical` under the key's MAC subkey, hex.
pub fn mac(key: &BackupKey, canonical: &[u8]) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&key.mac_key()).expect("any key length");
    m.update(canonical);
    hex::encode(m.finalize().into_bytes())
}

/// Checks a MAC in constant time.
pub(crate) fn verify_mac(key: &BackupKey, canonical: &[u8], expected_hex: &str) -> bool {
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

    /// Seals `chunks` as one stream.
    fn stream(k: &BackupKey, chunks: &[&[u8]]) -> ([u8; 7], Vec<Vec<u8>>) {
        let mut s = StreamSealer::new(k, b"aad").unwrap();
        let sealed = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| s.seal(c, i + 1 == chunks.len()).unwrap())
            .collect();
        assert!(
            s.seal(b"more", true).is_err(),
            "a finished stream takes nothing"
        );
        (s.prefix(), sealed)
    }

    fn open_all(k: &BackupKey, prefix: &[u8], sealed: &[Vec<u8>]) -> Result<Vec<u8>, Error> {
        let mut o = StreamOpener::new(k, prefix, b"aad")?;
        let mut out = Vec::new();
        for (i, c) in sealed.iter().enumerate() {
            out.extend(o.open(c, i + 1 == sealed.len())?);
        }
        Ok(out)
    }

    #[test]
    fn streams_round_trip_and_detect_truncation_reordering_and_changes() {
        let k = BackupKey::from_bytes([4; 32]);
        let (prefix, sealed) = stream(&k, &[b"one", b"two", b"three", b""]);
        assert!(sealed.iter().all(|c| c.len() >= TAG_BYTES));
        assert_eq!(open_all(&k, &prefix, &sealed).unwrap(), b"onetwothree");
        // Cut at a chunk boundary: the new final chunk was not sealed as the last one.
        let err = open_all(&k, &prefix, &sealed[..2]).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        // Two chunks swapped: the counter in the nonce no longer matches.
        let mut swapped = sealed.clone();
        swapped.swap(1, 2);
        let err = open_all(&k, &prefix, &swapped).unwrap_err();
        assert!(err.to_string().contains("chunk 1 fails"), "{err}");
        // A chunk dropped from the middle.
        let dropped = [sealed[0].clone(), sealed[2].clone(), sealed[3].clone()];
        assert!(open_all(&k, &prefix, &dropped).is_err());
        // A flipped bit, another key, another prefix, another stream's associated data.
        let mut flipped = sealed.clone();
        flipped[2][0] ^= 1;
        assert!(open_all(&k, &prefix, &flipped).is_err());
        assert!(open_all(&BackupKey::from_bytes([5; 32]), &prefix, &sealed).is_err());
        assert!(open_all(&k, &[0; 7], &sealed).is_err());
        let mut o = StreamOpener::new(&k, &prefix, b"other").unwrap();
        assert!(o.open(&sealed[0], false).is_err());
        assert!(StreamOpener::new(&k, &[0; 12], b"aad").is_err());
        // Two streams under the same key never share a nonce prefix in practice.
        assert_ne!(stream(&k, &[b"x"]).0, stream(&k, &[b"x"]).0);
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
