//! Growing volumes. A claim's size can only grow, and only in place: the StatefulSet's
//! `volumeClaimTemplates` are immutable, so a larger `database.sqlite.storage` is applied to the
//! existing claims, and a larger `backups.storage.size` to the backup claim. Shrinking is refused
//! at admission (CEL rules in the CRD). The API server refuses a resize when the StorageClass does
//! not allow expansion (or the claim is not bound yet): that becomes a `StorageProblem`, which the
//! status step reports as `Provisioned=False/StorageNotExpandable`, and the next reconcile (for
//! example when the claim binds) tries again.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

/// Failure to grow a claim for another reason than a refusal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The patch failed (not a refusal: a transient API error).
    #[error("failed to grow PersistentVolumeClaim {name}")]
    Patch {
        /// Claim name.
        name: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
}

/// A resize the API server refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StorageProblem {
    /// Claim name.
    pub claim: String,
    /// Its current request.
    pub from: String,
    /// The size asked for.
    pub to: String,
    /// The API server's reason.
    pub message: String,
}

impl StorageProblem {
    /// Human message for the condition.
    pub(crate) fn describe(&self) -> String {
        format!(
            "cannot grow PersistentVolumeClaim {} from {} to {}: {}",
            self.claim, self.from, self.to, self.message
        )
    }
}

/// Bytes of a Kubernetes quantity such as `5Gi`, `500M`, `1.5Ti` or `1e9` (`None` if it is not
/// one). A float is exact enough to compare volume sizes.
pub(crate) fn bytes(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let n: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * factor)
}

/// Whether `desired` is larger than `current` (both quantities; unparsable: no).
pub(crate) fn grows(current: &str, desired: &str) -> bool {
    matches!((bytes(current), bytes(desired)), (Some(c), Some(d)) if d > c)
}

/// The storage request of a claim.
pub(crate) fn requested(pvc: &PersistentVolumeClaim) -> Option<String> {
    pvc.spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .map(|q| q.0.clone())
}

/// Whether an API error is the server refusing the resize (forbidden by the StorageClass or
/// the resize admission, or invalid for an unbound claim), not a transient failure.
pub(crate) fn is_refusal(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403 || s.code == 422)
}

/// Grows `live` to `size` if that is larger. A refusal is returned as a problem, not an error.
pub(crate) async fn grow(
    api: &Api<PersistentVolumeClaim>,
    live: &PersistentVolumeClaim,
    size: &str,
) -> Result<Option<StorageProblem>, Error> {
    let name = live.metadata.name.clone().unwrap_or_default();
    let Some(current) = requested(live) else {
        return Ok(None);
    };
    if !grows(&current, size) {
        return Ok(None);
    }
    // A merge patch of the one field: the claim was made by the StatefulSet controller, and
    // nothing else of it is ours to apply.
    let patch = json!({ "spec": { "resources": { "requests": { "storage": size } } } });
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(None),
        Err(e) if is_refusal(&e) => Ok(Some(StorageProblem {
            claim: name,
            from: current,
            to: size.to_string(),
            message: refusal_message(&e),
        })),
        Err(source) => Err(Error::Patch { name, source }),
    }
}

/// The API server's message of a refusal.
pub(crate) fn refusal_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_compare_across_units() {
        assert_eq!(bytes("5Gi"), Some(5.0 * 1024f64.powi(3)));
        assert_eq!(bytes("1e3"), Some(1000.0));
        assert_eq!(bytes("1.5Ki"), Some(1536.0));
        assert!(grows("5Gi", "20Gi"));
        assert!(grows("1Ti", "1025Gi"));
        assert!(!grows("1Ti", "1024Gi"), "equal is not growth");
        assert!(!grows("1Ti", "500Gi"));
        assert!(grows("5G", "5Gi"), "binary units are larger");
        assert!(!grows("5Gi", "lots"), "unparsable never grows");
        assert_eq!(bytes("5 apples"), None);
    }
}
