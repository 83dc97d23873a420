//! Callback signing as the Conversation API does it, and its verification.
//!
//! The signed string is `raw body + "." + nonce + "." + timestamp` (epoch seconds), the MAC is
//! HMAC-SHA256 keyed with the webhook secret, sent as standard base64 with padding. Verification
//! is pure: it takes the clock as an argument; nonce replay is checked by the caller against the
//! database, because only a persisted nonce survives a restart.

use axum::http::{HeaderMap, HeaderValue};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Header carrying the base64 signature.
pub(crate) const SIGNATURE_HEADER: &str = "x-sinch-webhook-signature";
/// Header carrying the nonce.
pub(crate) const NONCE_HEADER: &str = "x-sinch-webhook-signature-nonce";
/// Header carrying the epoch-seconds timestamp.
pub(crate) const TIMESTAMP_HEADER: &str = "x-sinch-webhook-signature-timestamp";
/// Header naming the algorithm.
pub(crate) const ALGORITHM_HEADER: &str = "x-sinch-webhook-signature-algorithm";
/// The only documented algorithm.
pub(crate) const ALGORITHM: &str = "HmacSHA256";

/// Why a callback's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A signature header is absent or not valid text.
    #[error("missing or unreadable header `{0}`")]
    MissingHeader(&'static str),
    /// The algorithm header names something other than `HmacSHA256`.
    #[error("unsupported signature algorithm `{0}` (only HmacSHA256)")]
    UnsupportedAlgorithm(String),
    /// The timestamp is not a decimal number of seconds.
    #[error("signature timestamp `{0}` is not epoch seconds")]
    BadTimestamp(String),
    /// The timestamp is further from now than the allowed skew.
    #[error("signature timestamp is {skew_secs}s away from now (at most {max_skew_secs}s allowed)")]
    Stale {
        /// Distance from now, in seconds.
        skew_secs: i64,
        /// The configured limit.
        max_skew_secs: i64,
    },
    /// The nonce is empty or longer than 128 characters.
    #[error("signature nonce must be 1 to 128 characters")]
    BadNonce,
    /// The signature does not match the body, nonce and timestamp.
    #[error("signature does not match")]
    Mismatch,
}

/// A signature that checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The nonce (to be recorded against replays).
    pub nonce: String,
    /// The signed timestamp, epoch seconds.
    pub timestamp: i64,
}

fn mac(secret: &[u8], body: &[u8], nonce: &str, timestamp: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    mac.update(b".");
    mac.update(nonce.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac
}

/// Computes the signature header value for a callback.
pub fn sign(secret: &str, body: &[u8], nonce: &str, timestamp: &str) -> String {
    STANDARD.encode(
        mac(secret.as_bytes(), body, nonce, timestamp)
            .finalize()
            .into_bytes(),
    )
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, Error> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(Error::MissingHeader(name))
}

/// Verifies a callback's signature headers against its raw body.
pub fn verify(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
    now_secs: i64,
    max_skew_secs: i64,
) -> Result<Verified, Error> {
    let signature = header(headers, SIGNATURE_HEADER)?;
    let nonce = header(headers, NONCE_HEADER)?;
    let timestamp = header(headers, TIMESTAMP_HEADER)?;
    if let Ok(algorithm) = header(headers, ALGORITHM_HEADER)
        && algorithm != ALGORITHM
    {
        return Err(Error::UnsupportedAlgorithm(algorithm.to_owned()));
    }
    if nonce.len() > 128 {
        return Err(Error::BadNonce);
    }
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| Error::BadTimestamp(timestamp.to_owned()))?;
    let skew_secs = (now_secs - ts).abs();
    if skew_secs > max_skew_secs {
        return Err(Error::Stale {
            skew_secs,
            max_skew_secs,
        });
    }
    let given = STANDARD.decode(signature).map_err(|_| Error::Mismatch)?;
    // verify_slice compares in constant time.
    mac(secret.as_bytes(), body, nonce, timestamp)
        .verify_slice(&given)
        .map_err(|_| Error::Mismatch)?;
    Ok(Verified {
        nonce: nonce.to_owned(),
        timestamp: ts,
    })
}

/// Builds the four signature headers for `body` (used by the simulator and tests).
pub fn signed_headers(secret: &str, body: &[u8], nonce: &str, timestamp: i64) -> HeaderMap {
    let ts = timestamp.to_string();
    let mut headers = HeaderMap::new();
    let pairs = [
        (SIGNATURE_HEADER, sign(secret, body, nonce, &ts)),
        (NONCE_HEADER, nonce.to_owned()),
        (TIMESTAMP_HEADER, ts.clone()),
        (ALGORITHM_HEADER, ALGORITHM.to_owned()),
    ];
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "foo_secret1234";
    const NONCE: &str = "01FJA8B4A7BM43YGWSG9GBV067";
    const TS: i64 = 1_634_579_353;
    const BODY: &str = r#"{"app_id":"","accepted_time":"2021-10-18T17:49:13.813615Z","project_id":"e2df3a34-a71b-4448-9db5-a8d2baad28e4","contact_create_notification":{"contact":{"id":"01FJA8B466Y0R2GNXD78MD9SM1","channel_identities":[{"channel":"SMS","identity":"48123456789","app_id":""}],"display_name":"New Test Contact","email":"new.contact@email.com","external_id":"","metadata":"","language":"EN_US"}},"message_metadata":""}"#;
    const EXPECTED: &str = "6bpJoRmFoXVjfJIVglMoJzYXxnoxRujzR4k2GOXewOE=";

    #[test]
    fn reference_test_vector_signs() {
        assert_eq!(
            sign(SECRET, BODY.as_bytes(), NONCE, &TS.to_string()),
            EXPECTED
        );
    }

    #[test]
    fn reference_test_vector_verifies() {
        let mut headers = HeaderMap::new();
        headers.insert(SIGNATURE_HEADER, EXPECTED.parse().unwrap());
        headers.insert(NONCE_HEADER, NONCE.parse().unwrap());
        headers.insert(TIMESTAMP_HEADER, TS.to_string().parse().unwrap());
        let v = verify(SECRET, &headers, BODY.as_bytes(), TS + 10, 300).unwrap();
        assert_eq!(v.nonce, NONCE);
        assert_eq!(v.timestamp, TS);
    }

    #[test]
    fn forged_body_is_refused() {
        let headers = signed_headers(SECRET, BODY.as_bytes(), NONCE, TS);
        let forged = BODY.replace("New Test Contact", "Mallory");
        assert_eq!(
            verify(SECRET, &headers, forged.as_bytes(), TS, 300),
            Err(Error::Mismatch)
        );
        assert_eq!(
            verify("other-secret", &headers, BODY.as_bytes(), TS, 300),
            Err(Error::Mismatch)
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let headers = signed_headers(SECRET, BODY.as_bytes(), NONCE, TS);
        assert!(matches!(
            verify(SECRET, &headers, BODY.as_bytes(), TS + 301, 300),
            Err(Error::Stale { skew_secs: 301, .. })
        ));
        assert!(matches!(
            verify(SECRET, &headers, BODY.as_bytes(), TS - 301, 300),
            Err(Error::Stale { .. })
        ));
        assert!(verify(SECRET, &headers, BODY.as_bytes(), TS + 300, 300).is_ok());
    }

    #[test]
    fn missing_and_odd_headers_are_named() {
        let mut headers = signed_headers(SECRET, BODY.as_bytes(), NONCE, TS);
        headers.remove(NONCE_HEADER);
        assert_eq!(
            verify(SECRET, &headers, BODY.as_bytes(), TS, 300),
            Err(Error::MissingHeader(NONCE_HEADER))
        );
        let mut headers = signed_headers(SECRET, BODY.as_bytes(), NONCE, TS);
        headers.insert(ALGORITHM_HEADER, "HmacMD5".parse().unwrap());
        assert!(matches!(
            verify(SECRET, &headers, BODY.as_bytes(), TS, 300),
            Err(Error::UnsupportedAlgorithm(_))
        ));
        let mut headers = signed_headers(SECRET, BODY.as_bytes(), NONCE, TS);
        headers.insert(TIMESTAMP_HEADER, "yesterday".parse().unwrap());
        assert!(matches!(
            verify(SECRET, &headers, BODY.as_bytes(), TS, 300),
            Err(Error::BadTimestamp(_))
        ));
    }
}
