//! Step 4 of the pipeline: server-side apply, one field manager, `force`, and no write at all when
//! nothing changed.
//!
//! Idempotence without noise: every desired object carries a hash of itself in an annotation, and
//! the `Memo` remembers, per object, the hash we applied and the object's `generation` /
//! `resourceVersion` as our apply left it. An apply is skipped only when the desired hash is the
//! one we applied AND the live object has not been written since (generation for kinds that have
//! one, so status updates by other controllers do not count; resourceVersion otherwise). So a
//! reconcile with nothing to do makes zero writes, and a hand edit of a field we own (which bumps
//! the generation, or the resourceVersion of kinds without one) is reverted by the next reconcile.
//!
//! Labels, annotations and owner references are metadata: editing them moves resourceVersion but
//! not generation, so for kinds with a generation they are compared directly (ours must be there
//! with our values) whenever the live object is at least as new as our apply.
//!
//! An object we have no memo for (the operator restarted) is adopted when its hash matches: its
//! current generation / resourceVersion become the reference, so edits made while no operator ran
//! are only reverted with the next change of the desired object (restarting must not cost one
//! write per child of every tenant).

use super::cache::{self, Cached, Caches};
use crate::labels;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

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

/// What our last apply of one object left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Applied {
    /// The hash we applied.
    pub hash: String,
    /// `metadata.generation` after the apply (kinds without one: `None`).
    pub generation: Option<i64>,
    /// `metadata.resourceVersion` after the apply.
    pub resource_version: Option<String>,
}

impl Applied {
    fn of(hash: &str, meta: &ObjectMeta) -> Self {
        Self {
            hash: hash.to_string(),
            generation: meta.generation.filter(|g| *g > 0),
            resource_version: meta.resource_version.clone(),
        }
    }

    /// Whether `live` was written after our apply. Generation counts where the kind has one
    /// (spec writes only; status updates by other controllers do not); else resourceVersion. A
    /// live object OLDER than our apply is a cache that has not caught up, not an edit.
    pub(crate) fn written_since(&self, live: &ObjectMeta) -> bool {
        if let (Some(ours), Some(now)) = (self.generation, live.generation) {
            return now > ours;
        }
        let rv = |v: &Option<String>| v.as_deref().and_then(|s| s.parse::<u64>().ok());
        match (rv(&self.resource_version), rv(&live.resource_version)) {
            // The API server's resourceVersions are etcd revisions; compare them as such. Not
            // numeric (another storage): any difference counts as a write.
            (Some(ours), Some(now)) => now > ours,
            _ => self.resource_version != live.resource_version,
        }
    }

    /// Whether `live` is our apply or a later version of the object (not a cache that has not
    /// caught up with our write yet).
    pub(crate) fn not_older_than_ours(&self, live: &ObjectMeta) -> bool {
        let rv = |v: &Option<String>| v.as_deref().and_then(|s| s.parse::<u64>().ok());
        match (rv(&self.resource_version), rv(&live.resource_version)) {
            (Some(ours), Some(now)) => now >= ours,
            // Not numeric: only the very version we wrote is known not to be older.
            _ => self.resource_version == live.resource_version,
        }
    }
}

/// Whether `live` lacks a label, annotation or owner reference of `desired`, or carries another
/// value for it. Keys others add (controllers, admission) are theirs and do not count.
pub(crate) fn metadata_drifted(desired: &ObjectMeta, live: &ObjectMeta) -> bool {
    let missing = |want: &Option<std::collections::BTreeMap<String, String>>,
                   have: &Option<std::collections::BTreeMap<String, String>>| {
        want.iter()
            .flatten()
            .any(|(k, v)| have.as_ref().and_then(|h| h.get(k)) != Some(v))
    };
    let owner_missing = desired.owner_references.iter().flatten().any(|want| {
        !live
            .owner_references
            .iter()
            .flatten()
            .any(|have| have.uid == want.uid && have.controller == want.controller)
    });
    missing(&desired.labels, &live.labels)
        || missing(&desired.annotations, &live.annotations)
        || owner_missing
}

/// Per object (`kind/ns/name`), what our last apply left behind, and the hashes of applies in
/// flight. Shared by every reconcile of the process; lost on restart (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct Memo(Arc<Mutex<MemoInner>>);

#[derive(Debug, Default)]
struct MemoInner {
    applied: HashMap<String, Applied>,
    in_flight: HashMap<String, String>,
}

impl Memo {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoInner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The record of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<Applied> {
        self.lock().applied.get(key).cloned()
    }

    /// Whether a watch event of `key` (an object at `resource_version` carrying `hash`) is the
    /// echo of our own apply: the resourceVersion our last apply's response carried, or, while
    /// that apply is still in flight (its watch event often arrives before its response), the
    /// hash it is writing. An echo tells the reconcile nothing new.
    pub(crate) fn is_echo(
        &self,
        key: &str,
        resource_version: Option<&str>,
        hash: Option<&str>,
    ) -> bool {
        let m = self.lock();
        let by_rv = resource_version.is_some()
            && m.applied
                .get(key)
                .is_some_and(|a| a.resource_version.as_deref() == resource_version);
        let in_flight = hash.is_some() && m.in_flight.get(key).map(String::as_str) == hash;
        by_rv || in_flight
    }

    /// Marks an apply of `hash` to `key` as in flight.
    pub(crate) fn begin(&self, key: &str, hash: &str) {
        self.lock()
            .in_flight
            .insert(key.to_string(), hash.to_string());
    }

    /// Records `key` (`None`: we deleted it, or the apply failed) and ends its apply in flight.
    pub(crate) fn record(&self, key: String, applied: Option<Applied>) {
        let mut m = self.lock();
        m.in_flight.remove(&key);
        match applied {
            Some(a) => m.applied.insert(key, a),
            None => m.applied.remove(&key),
        };
    }

    /// Forgets `key` entirely (its tenant is gone).
    pub(crate) fn forget(&self, key: &str) {
        let mut m = self.lock();
        m.applied.remove(key);
        m.in_flight.remove(key);
    }

    /// How many objects are remembered.
    pub fn len(&self) -> usize {
        self.lock().applied.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends an apply in flight that failed, keeping the last record.
    pub(crate) fn abort(&self, key: &str) {
        self.lock().in_flight.remove(key);
    }
}

/// Where children are read from and what we remember of our writes.
#[derive(Clone, Copy)]
pub(crate) struct At<'a> {
    /// The controller's stores (`None`: every read is a GET).
    pub(crate) caches: Option<&'a Caches>,
    /// Our last applies.
    pub(crate) memo: &'a Memo,
}

impl<'a> At<'a> {
    /// Reads by GET (no stores), remembering in `memo`.
    pub(crate) fn uncached(memo: &'a Memo) -> Self {
        Self { caches: None, memo }
    }
}

/// What to do with one desired object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Write it.
    Apply,
    /// Nothing to do.
    Skip,
    /// Nothing to do, and remember the live object as ours (no memo yet, same hash).
    Adopt(Applied),
}

/// The pure decision: apply unless the live object is the one we applied with this very hash
/// and nobody wrote it since (its spec, or our labels, annotations and owner references).
pub(crate) fn verdict(
    desired: &ObjectMeta,
    live: Option<&ObjectMeta>,
    hash: &str,
    memo: Option<&Applied>,
) -> Verdict {
    let Some(live) = live else {
        return Verdict::Apply;
    };
    let annotations = live.annotations.as_ref();
    if annotations.is_some_and(|a| a.contains_key(labels::PURGE_AFTER)) {
        // Detached data being re-attached: the apply removes the grace annotations.
        return Verdict::Apply;
    }
    let live_hash = annotations.and_then(|a| a.get(labels::SPEC_HASH));
    match memo {
        Some(m) if m.hash == hash => {
            let metadata_edited = m.not_older_than_ours(live) && metadata_drifted(desired, live);
            if m.written_since(live) || metadata_edited {
                Verdict::Apply
            } else {
                Verdict::Skip
            }
        }
        None if live_hash.is_some_and(|h| h == hash) => Verdict::Adopt(Applied::of(hash, live)),
        // No hash match, or we applied another hash since (a stale cache may still show this one).
        _ => Verdict::Apply,
    }
}

/// What `apply` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Outcome {
    /// The object was created or changed.
    Applied,
    /// The live object already matched; no write (or the apply failed: see `provision`).
    #[default]
    Unchanged,
}

/// Hash of a desired object (before the hash annotation is added).
pub(crate) fn hash_of<T: Serialize>(obj: &T) -> String {
    let bytes = serde_json::to_vec(obj).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..16])
}

/// Stamps `obj` with the hash of its content, returning the hash.
pub(crate) fn stamp<K: Resource + Serialize>(obj: &mut K) -> String {
    let h = hash_of(obj);
    obj.annotations_mut()
        .insert(labels::SPEC_HASH.to_string(), h.clone());
    h
}

/// The memo key of an object: `Kind/namespace/name`.
pub(crate) fn memo_key(kind: &str, ns: &str, name: &str) -> String {
    format!("{kind}/{ns}/{name}")
}

/// The memo key of `obj`.
pub(crate) fn key_of<K: Resource>(obj: &K) -> String
where
    K::DynamicType: Default,
{
    let dt = K::DynamicType::default();
    memo_key(
        &K::kind(&dt),
        &obj.namespace().unwrap_or_default(),
        &obj.name_any(),
    )
}

/// Applies `desired` unless `live` (already read by the caller) is what we last applied with
/// the same hash and was not written since (see `verdict`).
pub(crate) async fn apply_with_live<K>(
    at: At<'_>,
    api: &Api<K>,
    desired: K,
    live: Option<&K>,
) -> Result<Outcome, Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
    K::DynamicType: Default,
{
    apply_adjusted(at, api, desired, live, |_| {}).await
}

/// `apply_with_live`, where `adjust` edits the object after its hash is taken: for fields the
/// API server will not let us change (immutable specs), which we copy from the live object. The
/// hash stays that of what we built, so it is stable across reconciles.
pub(crate) async fn apply_adjusted<K>(
    at: At<'_>,
    api: &Api<K>,
    desired: K,
    live: Option<&K>,
    adjust: impl FnOnce(&mut K),
) -> Result<Outcome, Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
    K::DynamicType: Default,
{
    apply_over(at, api, desired, live.map(|l| l.meta()), adjust).await
}

/// The apply itself, given only the live object's metadata (all the verdict reads).
async fn apply_over<K>(
    at: At<'_>,
    api: &Api<K>,
    mut desired: K,
    live: Option<&ObjectMeta>,
    adjust: impl FnOnce(&mut K),
) -> Result<Outcome, Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
    K::DynamicType: Default,
{
    let hash = stamp(&mut desired);
    adjust(&mut desired);
    let key = key_of(&desired);
    let kind = K::kind(&K::DynamicType::default()).to_string();
    write_unless_current(at, api, desired, live, &hash, key, kind).await
}

/// The verdict on a stamped object and, unless it says skip (or adopt), the write, with the memo
/// told of the apply in flight and of what it left.
async fn write_unless_current<K>(
    at: At<'_>,
    api: &Api<K>,
    desired: K,
    live: Option<&ObjectMeta>,
    hash: &str,
    key: String,
    kind: String,
) -> Result<Outcome, Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    let memo = at.memo.get(&key);
    match verdict(desired.meta(), live, hash, memo.as_ref()) {
        Verdict::Skip => return Ok(Outcome::Unchanged),
        Verdict::Adopt(a) => {
            at.memo.record(key, Some(a));
            return Ok(Outcome::Unchanged);
        }
        Verdict::Apply => {}
    }
    let name = desired.name_any();
    at.memo.begin(&key, hash);
    let written = api
        .patch(
            &name,
            &PatchParams::apply(labels::FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await
        .map_err(|source| {
            at.memo.abort(&key);
            Error::Apply { kind, name, source }
        })?;
    at.memo.record(key, Some(Applied::of(hash, written.meta())));
    Ok(Outcome::Applied)
}

/// Looks up the live object's metadata (cache or GET), then applies `desired` if it differs.
pub(crate) async fn apply<K>(at: At<'_>, api: &Api<K>, desired: K) -> Result<Outcome, Error>
where
    K: Cached + Serialize,
{
    let name = desired.name_any();
    let ns = desired.namespace().unwrap_or_default();
    let live = cache::live_meta(at.caches, api, &ns, &name)
        .await
        .map_err(|source| Error::Read {
            kind: K::kind(&()).to_string(),
            name: name.clone(),
            source,
        })?;
    apply_over(at, api, desired, live.as_ref(), |_| {}).await
}

/// Deletes an object we made if it exists. The existence check goes through the cache when
/// there is one, so an absent object costs no request at all.
pub(crate) async fn delete_if_ours<K>(
    at: At<'_>,
    api: &Api<K>,
    ns: &str,
    name: &str,
) -> Result<bool, Error>
where
    K: Cached + Serialize,
{
    let kind = || K::kind(&()).to_string();
    let live = cache::live_meta(at.caches, api, ns, name)
        .await
        .map_err(|source| Error::Read {
            kind: kind(),
            name: name.to_string(),
            source,
        })?;
    let Some(live) = live else { return Ok(false) };
    if live.deletion_timestamp.is_some() || !super::dereference::is_ours(&live) {
        return Ok(false);
    }
    at.memo.record(memo_key(&kind(), ns, name), None);
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

/// `apply_with_live` for a `DynamicObject` (whose kind lives in the object, not the type): the
/// same verdict and memo, so hand edits of a CloudNativePG `Cluster` are reverted too.
pub(crate) async fn apply_dynamic(
    at: At<'_>,
    api: &Api<kube::api::DynamicObject>,
    mut desired: kube::api::DynamicObject,
    live: Option<&kube::api::DynamicObject>,
) -> Result<Outcome, Error> {
    let hash = hash_of(&desired);
    desired
        .annotations_mut()
        .insert(labels::SPEC_HASH.to_string(), hash.clone());
    let kind = desired
        .types
        .as_ref()
        .map(|t| t.kind.clone())
        .unwrap_or_default();
    let key = memo_key(
        &kind,
        &desired.namespace().unwrap_or_default(),
        &desired.name_any(),
    );
    write_unless_current(at, api, desired, live.map(|l| l.meta()), &hash, key, kind).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(hash: Option<&str>, generation: Option<i64>, rv: &str) -> ObjectMeta {
        ObjectMeta {
            annotations: hash.map(|h| [(labels::SPEC_HASH.to_string(), h.to_string())].into()),
            labels: Some([("app".to_string(), "contact".to_string())].into()),
            generation,
            resource_version: Some(rv.into()),
            ..Default::default()
        }
    }

    /// What we apply: our hash annotation and a label.
    fn ours_meta(hash: &str) -> ObjectMeta {
        ObjectMeta {
            annotations: Some([(labels::SPEC_HASH.to_string(), hash.to_string())].into()),
            labels: Some([("app".to_string(), "contact".to_string())].into()),
            ..Default::default()
        }
    }

    /// The verdict on our object with hash `h` (desired `ours_meta("h")`).
    fn verdict_h(live: Option<&ObjectMeta>, memo: Option<&Applied>) -> Verdict {
        verdict(&ours_meta("h"), live, "h", memo)
    }

    fn applied(hash: &str, generation: Option<i64>, rv: &str) -> Applied {
        Applied {
            hash: hash.into(),
            generation,
            resource_version: Some(rv.into()),
        }
    }

    #[test]
    fn missing_objects_and_new_hashes_are_applied() {
        assert_eq!(verdict_h(None, None), Verdict::Apply);
        let live = meta(Some("old"), Some(1), "10");
        assert_eq!(verdict_h(Some(&live), None), Verdict::Apply);
        assert_eq!(
            verdict_h(Some(&live), Some(&applied("old", Some(1), "10"))),
            Verdict::Apply
        );
    }

    #[test]
    fn our_own_untouched_apply_is_skipped_even_from_a_stale_cache() {
        let ours = applied("h", Some(3), "20");
        assert_eq!(
            verdict_h(Some(&meta(Some("h"), Some(3), "20")), Some(&ours)),
            Verdict::Skip
        );
        // The cache still shows the object before our write (older generation and hash).
        assert_eq!(
            verdict_h(Some(&meta(Some("old"), Some(2), "12")), Some(&ours)),
            Verdict::Skip
        );
        // Status updates by another controller move resourceVersion, not generation.
        assert_eq!(
            verdict_h(Some(&meta(Some("h"), Some(3), "25")), Some(&ours)),
            Verdict::Skip
        );
    }

    #[test]
    fn a_hand_edit_after_our_apply_is_reverted() {
        // A kind with a generation: a spec edit bumps it.
        let ours = applied("h", Some(3), "20");
        assert_eq!(
            verdict_h(Some(&meta(Some("h"), Some(4), "21")), Some(&ours)),
            Verdict::Apply
        );
        // A kind without one (ConfigMap): any write moves resourceVersion.
        let ours = applied("h", None, "20");
        assert_eq!(
            verdict_h(Some(&meta(Some("h"), None, "21")), Some(&ours)),
            Verdict::Apply
        );
        assert_eq!(
            verdict_h(Some(&meta(Some("h"), None, "20")), Some(&ours)),
            Verdict::Skip
        );
    }

    #[test]
    fn a_metadata_edit_is_reverted_even_where_generation_stays() {
        let ours = applied("h", Some(3), "20");
        // Our label removed by hand: resourceVersion moves, generation does not.
        let mut edited = meta(Some("h"), Some(3), "21");
        edited.labels = None;
        assert_eq!(verdict_h(Some(&edited), Some(&ours)), Verdict::Apply);
        // Our hash annotation changed by hand.
        let edited = meta(Some("forged"), Some(3), "21");
        assert_eq!(verdict_h(Some(&edited), Some(&ours)), Verdict::Apply);
        // Someone else's label next to ours is theirs.
        let mut added = meta(Some("h"), Some(3), "21");
        added
            .labels
            .get_or_insert_with(Default::default)
            .insert("team".into(), "x".into());
        assert_eq!(verdict_h(Some(&added), Some(&ours)), Verdict::Skip);
        // A cache older than our apply is not an edit, whatever its metadata.
        let mut stale = meta(None, Some(2), "12");
        stale.labels = None;
        assert_eq!(verdict_h(Some(&stale), Some(&ours)), Verdict::Skip);
    }

    #[test]
    fn a_removed_owner_reference_is_restored() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let owner = OwnerReference {
            uid: "u1".into(),
            controller: Some(true),
            ..Default::default()
        };
        let mut desired = ours_meta("h");
        desired.owner_references = Some(vec![owner.clone()]);
        let ours = applied("h", Some(3), "20");
        let mut live = meta(Some("h"), Some(3), "20");
        live.owner_references = Some(vec![owner]);
        assert_eq!(
            verdict(&desired, Some(&live), "h", Some(&ours)),
            Verdict::Skip
        );
        live.owner_references = None;
        live.resource_version = Some("21".into());
        assert_eq!(
            verdict(&desired, Some(&live), "h", Some(&ours)),
            Verdict::Apply
        );
    }

    #[test]
    fn without_a_memo_a_matching_object_is_adopted() {
        let live = meta(Some("h"), Some(7), "99");
        assert_eq!(
            verdict_h(Some(&live), None),
            Verdict::Adopt(applied("h", Some(7), "99"))
        );
    }

    #[test]
    fn only_our_own_write_is_an_echo() {
        let memo = Memo::default();
        let k = "ConfigMap/ns/a";
        // In flight: the event that carries the hash being written is ours.
        memo.begin(k, "h");
        assert!(memo.is_echo(k, Some("20"), Some("h")));
        assert!(
            !memo.is_echo(k, Some("20"), Some("other")),
            "someone else's hash"
        );
        memo.record(k.into(), Some(applied("h", None, "20")));
        // Done: only the exact resourceVersion of the response.
        assert!(memo.is_echo(k, Some("20"), Some("h")));
        assert!(!memo.is_echo(k, Some("21"), Some("h")), "a later write");
        assert!(!memo.is_echo("ConfigMap/ns/b", Some("20"), Some("h")));
        assert!(!memo.is_echo(k, None, None));
        // A failed apply is no longer in flight.
        memo.begin(k, "h2");
        memo.abort(k);
        assert!(!memo.is_echo(k, Some("22"), Some("h2")));
        assert_eq!(memo.get(k), Some(applied("h", None, "20")));
        memo.record(k.into(), None);
        assert!(
            !memo.is_echo(k, Some("20"), Some("h")),
            "forgotten on delete"
        );
    }

    #[test]
    fn detached_data_is_always_reapplied() {
        let mut live = meta(Some("h"), None, "5");
        live.annotations
            .get_or_insert_with(Default::default)
            .insert(labels::PURGE_AFTER.into(), "2026-12-01T00:00:00Z".into());
        assert_eq!(
            verdict_h(Some(&live), Some(&applied("h", None, "5"))),
            Verdict::Apply
        );
    }
}
