//! The audit log's pure core: what an entry says, its canonical form, and the hash chain.
//!
//! Every entry stores `hash = SHA-256(prev_hash || canonical)`, where `canonical` is a JSON array
//! of the entry's fields in a fixed order. The new value itself is *not* in the canonical form:
//! the entry holds `value_hash = SHA-256(salt || value)` with a random per-entry salt. That is
//! what lets anonymization erase a value from the log (clear `new_value` and `salt`) without
//! breaking the chain, and leaves no guessable digest behind (an unsalted hash of a phone
//! number could be reversed by trying every number).
//!
//! Entries are written in two steps (see `storage/audit/`): [`prepare`] in the transaction of
//! the change (content, salt and value hash: the change never commits without its entry), and
//! [`link`] by the one chainer shortly after commit (position and hashes). Nothing in the chained
//! form depends on the value itself, so an entry can even be redacted before it is chained.
//!
//! Purging old entries deletes a prefix of the chain and records the last purged entry's `seq`
//! and `hash` as the anchor; verification then starts from the anchor instead of the genesis
//! hash, so the remaining entries stay verifiable.

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// The `prev_hash` of the first entry ever written.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened to an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A record was created with this attribute.
    Create,
    /// The attribute changed.
    Update,
    /// The record was deleted.
    Delete,
    /// The attribute was replaced by anonymization.
    Anonymize,
    /// The record was exported (subject access request, contact export).
    Export,
}

impl AuditAction {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Create => "create",
            AuditAction::Update => "update",
            AuditAction::Delete => "delete",
            AuditAction::Anonymize => "anonymize",
            AuditAction::Export => "export",
        }
    }
}

/// One change to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditChange {
    /// Who: a user id, `system:<job>` or `channel:<channel app>`.
    pub actor: String,
    /// What kind of change.
    pub action: AuditAction,
    /// The kind of record: `contact`, `contact_identity`, `message`, `conversation`, `user`.
    pub entity: String,
    /// The record's id.
    pub entity_id: String,
    /// The person the data is about (a contact id, or a user id for user data).
    pub subject_id: Option<String>,
    /// The attribute, e.g. `display_name`, `identity`, `content`.
    pub attribute: String,
    /// The new value (`None` for deletions and when the value is not kept).
    pub new_value: Option<String>,
}

impl AuditChange {
    /// A change by `actor` to `entity`/`entity_id`'s `attribute`.
    pub fn new(
        actor: impl Into<String>,
        action: AuditAction,
        entity: impl Into<String>,
        entity_id: impl Into<String>,
        attribute: impl Into<String>,
        new_value: Option<String>,
    ) -> Self {
        Self {
            actor: actor.into(),
            action,
            entity: entity.into(),
            entity_id: entity_id.into(),
            subject_id: None,
            attribute: attribute.into(),
            new_value,
        }
    }

    /// The same change, about `subject_id`.
    pub fn about(mut self, subject_id: impl Into<String>) -> Self {
        self.subject_id = Some(subject_id.into());
        self
    }
}

/// An entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct StoredEntry {
    /// Position in the chain (1, 2, …; never reused).
    pub seq: i64,
    /// When (epoch ms).
    pub at: i64,
    /// Who.
    pub actor: String,
    /// `create`, `update`, `delete`, `anonymize` or `export`.
    pub action: String,
    /// Kind of record.
    pub entity: String,
    /// Record id.
    pub entity_id: String,
    /// The person the data is about.
    pub subject_id: Option<String>,
    /// Attribute.
    pub attribute: String,
    /// New value (`None` once redacted).
    pub new_value: Option<String>,
    /// Hex salt of `value_hash` (`None` once redacted).
    #[serde(skip)]
    pub salt: Option<String>,
    /// SHA-256(salt || value), hex.
    pub value_hash: String,
    /// The previous entry's hash.
    pub prev_hash: String,
    /// This entry's hash.
    pub hash: String,
    /// When the value was erased (epoch ms).
    pub redacted_at: Option<i64>,
}

impl StoredEntry {
    /// When, as a timestamp.
    pub fn time(&self) -> DateTime<Utc> {
        use chrono::TimeZone;
        Utc.timestamp_millis_opt(self.at)
            .single()
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
    }
}

/// A fresh random salt, hex.
pub(crate) fn new_salt() -> String {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    hex::encode(salt)
}

/// `SHA-256(salt || value)` as hex; a missing value hashes as the empty string with a marker.
pub fn value_hash(salt: &str, value: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    match value {
        Some(v) => {
            h.update(b"\x01");
            h.update(v.as_bytes());
        }
        None => h.update(b"\x00"),
    }
    hex::encode(h.finalize())
}

/// The canonical content of an entry: a JSON array of its chained fields in a fixed order.
#[allow(clippy::too_many_arguments)]
pub fn canonical(
    seq: i64,
    at: i64,
    actor: &str,
    action: &str,
    entity: &str,
    entity_id: &str,
    subject_id: Option<&str>,
    attribute: &str,
    value_hash: &str,
) -> String {
    serde_json::json!([
        seq, at, actor, action, entity, entity_id, subject_id, attribute, value_hash
    ])
    .to_string()
}

/// `SHA-256(prev_hash || canonical)` as hex.
pub(crate) fn entry_hash(prev_hash: &str, canonical: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canonical.as_bytes());
    hex::encode(h.finalize())
}

/// An entry as written in the transaction of its change: everything but its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEntry {
    /// When (epoch ms).
    pub at: i64,
    /// Who.
    pub actor: String,
    /// `create`, `update`, …
    pub action: &'static str,
    /// Kind of record.
    pub entity: String,
    /// Record id.
    pub entity_id: String,
    /// The person the data is about.
    pub subject_id: Option<String>,
    /// Attribute.
    pub attribute: String,
    /// The new value.
    pub new_value: Option<String>,
    /// Hex salt of `value_hash`.
    pub salt: String,
    /// SHA-256(salt || value), hex.
    pub value_hash: String,
}

/// The pending form of `change` at time `at`, with a fresh salt.
pub fn prepare(at: i64, change: &AuditChange) -> PendingEntry {
    let salt = new_salt();
    let value_hash = value_hash(&salt, change.new_value.as_deref());
    PendingEntry {
        at,
        actor: change.actor.clone(),
        action: change.action.as_str(),
        entity: change.entity.clone(),
        entity_id: change.entity_id.clone(),
        subject_id: change.subject_id.clone(),
        attribute: change.attribute.clone(),
        new_value: change.new_value.clone(),
        salt,
        value_hash,
    }
}

/// What the chainer reads of an entry that is not chained yet (the value is not needed: the
/// chain covers its salted hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unchained {
    /// Row id: the order in which unchained entries are linked.
    pub id: i64,
    /// When (epoch ms).
    pub at: i64,
    /// Who.
    pub actor: String,
    /// What kind of change.
    pub action: String,
    /// Kind of record.
    pub entity: String,
    /// Record id.
    pub entity_id: String,
    /// The person the data is about.
    pub subject_id: Option<String>,
    /// Attribute.
    pub attribute: String,
    /// SHA-256(salt || value), hex.
    pub value_hash: String,
}

/// An entry's place in the chain, as the chainer assigns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    /// The row it belongs to.
    pub id: i64,
    /// Its position.
    pub seq: i64,
    /// The previous entry's hash.
    pub prev_hash: String,
    /// Its hash.
    pub hash: String,
}

/// Links `entries`, in the given order, after the chain head `(seq, hash)`.
pub(crate) fn link(head: (i64, &str), entries: &[Unchained]) -> Vec<Link> {
    let (mut seq, mut prev) = (head.0, head.1.to_owned());
    entries
        .iter()
        .map(|e| {
            seq += 1;
            let canon = canonical(
                seq,
                e.at,
                &e.actor,
                &e.action,
                &e.entity,
                &e.entity_id,
                e.subject_id.as_deref(),
                &e.attribute,
                &e.value_hash,
            );
            let hash = entry_hash(&prev, &canon);
            Link {
                id: e.id,
                seq,
                prev_hash: std::mem::replace(&mut prev, hash.clone()),
                hash,
            }
        })
        .collect()
}

/// Builds the stored form of `change` as entry `seq` after `prev_hash` (both steps at once).
pub fn seal(seq: i64, at: i64, prev_hash: &str, change: &AuditChange) -> StoredEntry {
    let p = prepare(at, change);
    let unchained = Unchained {
        id: seq,
        at,
        actor: p.actor.clone(),
        action: p.action.to_owned(),
        entity: p.entity.clone(),
        entity_id: p.entity_id.clone(),
        subject_id: p.subject_id.clone(),
        attribute: p.attribute.clone(),
        value_hash: p.value_hash.clone(),
    };
    let [l] = <[Link; 1]>::try_from(link((seq - 1, prev_hash), &[unchained]))
        .unwrap_or_else(|_| unreachable!("one entry in, one link out"));
    StoredEntry {
        seq: l.seq,
        at,
        actor: p.actor,
        action: p.action.to_owned(),
        entity: p.entity,
        entity_id: p.entity_id,
        subject_id: p.subject_id,
        attribute: p.attribute,
        new_value: p.new_value,
        salt: Some(p.salt),
        value_hash: p.value_hash,
        prev_hash: l.prev_hash,
        hash: l.hash,
        redacted_at: None,
    }
}

/// Why an entry fails verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Broken {
    /// `prev_hash` is not the previous entry's (or the anchor's) hash: an entry was removed,
    /// inserted or reordered.
    #[error("entry {seq}: prev_hash does not match the previous entry")]
    Link {
        /// The entry.
        seq: i64,
    },
    /// The stored hash is not the hash of the stored content: the entry was edited.
    #[error("entry {seq}: hash does not match its content")]
    Content {
        /// The entry.
        seq: i64,
    },
    /// The value no longer matches `value_hash`: the value was edited.
    #[error("entry {seq}: value does not match value_hash")]
    Value {
        /// The entry.
        seq: i64,
    },
    /// Sequence numbers are not consecutive.
    #[error("entry {seq}: expected sequence number {expected}")]
    Gap {
        /// The entry.
        seq: i64,
        /// What was expected.
        expected: i64,
    },
}

impl Broken {
    /// The first broken entry.
    pub fn seq(&self) -> i64 {
        match self {
            Broken::Link { seq }
            | Broken::Content { seq }
            | Broken::Value { seq }
            | Broken::Gap { seq, .. } => *seq,
        }
    }
}

/// Incremental verifier: feed entries in `seq` order, batch by batch.
#[derive(Debug, Clone)]
pub(crate) struct ChainVerifier {
    prev_seq: i64,
    prev_hash: String,
    checked: u64,
}

impl ChainVerifier {
    /// Starts after `anchor` (`(seq, hash)` of the last purged entry) or at the genesis.
    pub(crate) fn new(anchor: Option<(i64, String)>) -> Self {
        let (prev_seq, prev_hash) = anchor.unwrap_or((0, GENESIS_HASH.to_owned()));
        Self {
            prev_seq,
            prev_hash,
            checked: 0,
        }
    }

    /// Checks the next entry.
    pub(crate) fn check(&mut self, e: &StoredEntry) -> Result<(), Broken> {
        if e.seq != self.prev_seq + 1 {
            return Err(Broken::Gap {
                seq: e.seq,
                expected: self.prev_seq + 1,
            });
        }
        if e.prev_hash != self.prev_hash {
            return Err(Broken::Link { seq: e.seq });
        }
        let canon = canonical(
            e.seq,
            e.at,
            &e.actor,
            &e.action,
            &e.entity,
            &e.entity_id,
            e.subject_id.as_deref(),
            &e.attribute,
            &e.value_hash,
        );
        if entry_hash(&e.prev_hash, &canon) != e.hash {
            return Err(Broken::Content { seq: e.seq });
        }
        // A redacted entry has neither value nor salt; anything else must still match.
        if let Some(salt) = &e.salt
            && value_hash(salt, e.new_value.as_deref()) != e.value_hash
        {
            return Err(Broken::Value { seq: e.seq });
        }
        if e.salt.is_none() && e.new_value.is_some() {
            return Err(Broken::Value { seq: e.seq });
        }
        self.prev_seq = e.seq;
        self.prev_hash = e.hash.clone();
        self.checked += 1;
        Ok(())
    }

    /// Entries checked so far.
    pub(crate) fn checked(&self) -> u64 {
        self.checked
    }

    /// The last verified `(seq, hash)`.
    pub(crate) fn head(&self) -> (i64, &str) {
        (self.prev_seq, &self.prev_hash)
    }
}

/// Verifies a whole chain in memory; returns the first broken entry.
pub fn verify(anchor: Option<(i64, String)>, entries: &[StoredEntry]) -> Result<u64, Broken> {
    let mut v = ChainVerifier::new(anchor);
    for e in entries {
        v.check(e)?;
    }
    Ok(v.checked())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<StoredEntry> {
        let mut out: Vec<StoredEntry> = Vec::new();
        for seq in 1..=n {
            let prev = out
                .last()
                .map_or(GENESIS_HASH.to_owned(), |e| e.hash.clone());
            let change = AuditChange::new(
                "user-1",
                AuditAction::Update,
                "contact",
                "c1",
                "display_name",
                Some(format!("Name {seq}")),
            )
            .about("c1");
            out.push(seal(seq, 1_000 + seq, &prev, &change));
        }
        out
    }

    #[test]
    fn an_untouched_chain_verifies() {
        assert_eq!(verify(None, &chain(5)), Ok(5));
    }

    #[test]
    fn editing_a_value_is_found() {
        let mut c = chain(5);
        c[2].new_value = Some("Mallory".into());
        assert_eq!(verify(None, &c), Err(Broken::Value { seq: 3 }));
    }

    #[test]
    fn editing_content_is_found() {
        let mut c = chain(5);
        c[3].actor = "someone-else".into();
        assert_eq!(verify(None, &c), Err(Broken::Content { seq: 4 }));
    }

    #[test]
    fn removing_an_entry_is_found() {
        let mut c = chain(5);
        c.remove(1);
        assert_eq!(
            verify(None, &c),
            Err(Broken::Gap {
                seq: 3,
                expected: 2
            })
        );
    }

    #[test]
    fn rehashing_an_edited_entry_breaks_the_next_link() {
        let mut c = chain(4);
        c[1].at += 1;
        let canon = canonical(
            c[1].seq,
            c[1].at,
            &c[1].actor,
            &c[1].action,
            &c[1].entity,
            &c[1].entity_id,
            c[1].subject_id.as_deref(),
            &c[1].attribute,
            &c[1].value_hash,
        );
        c[1].hash = entry_hash(&c[1].prev_hash, &canon);
        assert_eq!(verify(None, &c), Err(Broken::Link { seq: 3 }));
    }

    #[test]
    fn redaction_keeps_the_chain_and_unlinks_the_value() {
        let mut c = chain(3);
        c[1].new_value = None;
        c[1].salt = None;
        assert_eq!(verify(None, &c), Ok(3));
        // Redacting the value but keeping the salt would make the entry fail: the value is
        // checked whenever a salt is present.
        let mut d = chain(3);
        d[1].new_value = None;
        assert_eq!(verify(None, &d), Err(Broken::Value { seq: 2 }));
    }

    #[test]
    fn linking_prepared_entries_later_gives_a_verifiable_chain() {
        let pending: Vec<Unchained> = (0..4)
            .map(|i| {
                let p = prepare(
                    1_000 + i,
                    &AuditChange::new("a", AuditAction::Create, "message", "m", "content", None),
                );
                Unchained {
                    id: 10 + i,
                    at: p.at,
                    actor: p.actor,
                    action: p.action.to_owned(),
                    entity: p.entity,
                    entity_id: p.entity_id,
                    subject_id: p.subject_id,
                    attribute: p.attribute,
                    value_hash: p.value_hash,
                }
            })
            .collect();
        let head = chain(2);
        let links = link((2, &head[1].hash), &pending);
        assert_eq!(
            links.iter().map(|l| (l.id, l.seq)).collect::<Vec<_>>(),
            vec![(10, 3), (11, 4), (12, 5), (13, 6)]
        );
        let mut all = head;
        for (u, l) in pending.iter().zip(&links) {
            all.push(StoredEntry {
                seq: l.seq,
                at: u.at,
                actor: u.actor.clone(),
                action: u.action.clone(),
                entity: u.entity.clone(),
                entity_id: u.entity_id.clone(),
                subject_id: u.subject_id.clone(),
                attribute: u.attribute.clone(),
                new_value: None,
                salt: None,
                value_hash: u.value_hash.clone(),
                prev_hash: l.prev_hash.clone(),
                hash: l.hash.clone(),
                redacted_at: None,
            });
        }
        assert_eq!(verify(None, &all), Ok(6));
    }

    #[test]
    fn a_purged_prefix_verifies_from_its_anchor() {
        let c = chain(6);
        let anchor = Some((c[2].seq, c[2].hash.clone()));
        assert_eq!(verify(anchor, &c[3..]), Ok(3));
        assert_eq!(
            verify(None, &c[3..]),
            Err(Broken::Gap {
                seq: 4,
                expected: 1
            })
        );
    }
}
