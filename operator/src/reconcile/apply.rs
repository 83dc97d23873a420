//! Step 4 of the pipeline: server-side apply, one field manager, `force`, and no write at all when
//! nothing changed.
//!
//! Idempotence without noise: every desired object carries a hash of itself in an annotation. If
//! the live object already carries the same hash (and has not been marked for deletion-grace
//! purge), the apply is skipped, so a reconcile with nothing to do makes zero writes. Trade-off:
//! an edit by someone else to a field we own is not reverted until our desired object changes
//! (compare `kubectl apply`'s last-applied). We accept that: the alternative (diffing managed
//! fields against server-defaulted objects) is fragile, and a forced apply on every resync would
//! write N objects per tenant per period.

use super::cache::{self, Cached, Caches};
use crate::labels;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::fmt::Debug;

/// Failure to write an object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the current object failed.
    #[error("failed to read {kind} {name}")]
    Read {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// The server-side apply failed.
    #[error("failed to apply {kind} {name}")]
    Apply {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// Deleting a stale object failed.
    #[error("failed to delete {kind} {name}")]
    Delete {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// The kube error behind this one.
    pub fn kube(&self) -> &kube::Error {
        match self {
            Error::Read { source, .. }
            | Error::Apply { source, .. }
            | Error::Delete { source, .. } => source,
        }
    }
}

/// What `apply` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The object was created or changed.
    Applied,
    /// The live object already matched; no write.
    Unchanged,
}

/// Hash of a desired object (before the hash annotation is added).
pub fn hash_of<T: Serialize>(obj: &T) -> String {
    let bytes = serde_json::to_vec(obj).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..16])
}

/// Stamps `obj` with the hash of its content, returning the hash.
pub fn stamp<K: Resource + Serialize>(obj: &mut K) -> String {
    let h = hash_of(obj);
    obj.annotations_mut()
        .insert(labels::SPEC_HASH.to_string(), h.clone());
    h
}

/// Whether `live` already has `hash` and nothing that a fresh apply would remove.
pub fn is_current<K: Resource>(live: &K, hash: &str) -> bool {
    let a = live.annotations();
    a.get(labels::SPEC_HASH).is_some_and(|h| h == hash) && !a.contains_key(labels::PURGE_AFTER)
}

/// Applies `desired` unless `live` (already read by the caller) carries the same hash, or,
/// with caches, unless we applied that very hash ourselves and the cache has not caught up.
pub async fn apply_with_live<K>(
    caches: Option<&Caches>,
    api: &Api<K>,
    desired: K,
    live: Option<&K>,
) -> Result<Outcome, Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
    K::DynamicType: Default,
{
    apply_adjusted(caches, api, desired, live, |_| {}).await
}

/// `apply_with_live`, where `adjust` edits the object after its hash is taken: for fields the
/// API server will not let us change (immutable specs), which we copy from the live object. The
/// hash stays that of what we built, so it is stable across reconciles.
pub async fn apply_adjusted<K>(
    caches: Option<&Caches>,
    api: &Api<K>,
    mut desired: K,
    live: Option<&K>,
    adjust: impl FnOnce(&mut K),
) -> Result<Outcome, Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
    K::DynamicType: Default,
{
    let hash = stamp(&mut desired);
    adjust(&mut desired);
    if live.is_some_and(|l| is_current(l, &hash)) {
        return Ok(Outcome::Unchanged);
    }
    let name = desired.name_any();
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let key = format!("{kind}/{}/{name}", desired.namespace().unwrap_or_default());
    if let (Some(c), Some(l)) = (caches, live)
        && c.applied_hash_is(&key, &hash)
        && !l.annotations().contains_key(labels::PURGE_AFTER)
    {
        return Ok(Outcome::Unchanged);
    }
    api.patch(
        &name,
        &PatchParams::apply(labels::FIELD_MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await
    .map_err(|source| Error::Apply { kind, name, source })?;
    if let Some(c) = caches {
        c.record(key, Some(hash));
    }
    Ok(Outcome::Applied)
}

/// Looks up the live object (cache or GET), then applies `desired` if it differs.
pub async fn apply<K>(caches: Option<&Caches>, api: &Api<K>, desired: K) -> Result<Outcome, Error>
where
    K: Cached + Serialize,
{
    let name = desired.name_any();
    let ns = desired.namespace().unwrap_or_default();
    let live = cache::live(caches, api, &ns, &name)
        .await
        .map_err(|source| Error::Read {
            kind: K::kind(&()).to_string(),
            name: name.clone(),
            source,
        })?;
    apply_with_live(caches, api, desired, live.as_ref()).await
}

/// Deletes an object we made if it exists. The existence check goes through the cache when
/// there is one, so an absent object costs no request at all.
pub async fn delete_if_ours<K>(
    caches: Option<&Caches>,
    api: &Api<K>,
    ns: &str,
    name: &str,
) -> Result<bool, Error>
where
    K: Cached + Serialize,
{
    let kind = || K::kind(&()).to_string();
    let live = cache::live(caches, api, ns, name)
        .await
        .map_err(|source| Error::Read {
            kind: kind(),
            name: name.to_string(),
            source,
        })?;
    let Some(live) = live else { return Ok(false) };
    if live.meta().deletion_timestamp.is_some() || !super::dereference::is_ours(live.meta()) {
        return Ok(false);
    }
    if let Some(c) = caches {
        c.record(format!("{}/{ns}/{name}", kind()), None);
    }
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(source) => Err(Error::Delete {
            kind: kind(),
            name: name.to_string(),
            source,
        }),
    }
}

/// `apply_with_live` for a `DynamicObject` (whose kind lives in the object, not the type).
pub async fn apply_dynamic(
    api: &Api<kube::api::DynamicObject>,
    mut desired: kube::api::DynamicObject,
    live: Option<&kube::api::DynamicObject>,
) -> Result<Outcome, Error> {
    let hash = hash_of(&desired);
    desired
        .annotations_mut()
        .insert(labels::SPEC_HASH.to_string(), hash.clone());
    if live.is_some_and(|l| is_current(l, &hash)) {
        return Ok(Outcome::Unchanged);
    }
    let name = desired.name_any();
    let kind = desired
        .types
        .as_ref()
        .map(|t| t.kind.clone())
        .unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(labels::FIELD_MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await
    .map_err(|source| Error::Apply { kind, name, source })?;
    Ok(Outcome::Applied)
}
