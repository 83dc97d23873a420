//! What the DPO sees and sends: contact details, subject data, anonymization reports, contact
//! input for imports and edits, and the audit chain's verification report.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ContactIdentity, Conversation, Message, Note};
use crate::domain::ChannelType;
use crate::domain::audit::{Broken, StoredEntry};

/// A contact with every detail Contact keeps about the person.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ContactDetails {
    /// Stable id.
    pub id: String,
    /// Name.
    pub display_name: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// Phone number, digits only (E.164 without `+`).
    pub phone: Option<String>,
    /// Channel identities.
    pub identities: Vec<ContactIdentity>,
    /// Attributes (`tier = gold`) set by admins and agents; routing rules match on them.
    pub attributes: BTreeMap<String, String>,
    /// First seen.
    pub created_at: DateTime<Utc>,
    /// When the personal data was replaced, if it was.
    pub anonymized_at: Option<DateTime<Utc>>,
}

/// A contact to create (import) or the new values of one (edit).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    /// Name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// E-mail address.
    #[serde(default)]
    pub email: Option<String>,
    /// Phone number (stored as digits only).
    #[serde(default)]
    pub phone: Option<String>,
    /// Channel identities.
    #[serde(default, deserialize_with = "identities")]
    #[schema(value_type = Vec<IdentityInput>)]
    pub identities: Vec<ContactIdentity>,
}

/// A channel identity as given in a request.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct IdentityInput {
    /// The channel.
    pub channel: ChannelType,
    /// The identity on that channel.
    pub identity: String,
}

fn identities<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<ContactIdentity>, D::Error> {
    let v: Vec<IdentityInput> = serde::Deserialize::deserialize(d)?;
    Ok(v.into_iter()
        .map(|i| ContactIdentity {
            channel: i.channel,
            identity: i.identity,
        })
        .collect())
}

/// Everything stored about one person: the answer to a subject access request.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub(crate) struct SubjectData {
    /// The contact.
    pub contact: ContactDetails,
    /// Their conversations.
    pub conversations: Vec<Conversation>,
    /// The messages of those conversations, oldest first.
    pub messages: Vec<Message>,
    /// The agents' internal notes on those conversations (they often repeat what the customer
    /// said: an address, a number), by conversation, oldest first.
    pub notes: Vec<Note>,
    /// Audit entries about them.
    pub audit: Vec<StoredEntry>,
}

/// What an anonymization replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct AnonymizeReport {
    /// The contact.
    pub contact_id: String,
    /// Conversations anonymized.
    pub conversations: u64,
    /// Messages whose content was replaced.
    pub messages: u64,
    /// Internal notes whose text was replaced.
    pub notes: u64,
    /// Identities replaced.
    pub identities: u64,
    /// Audit entries whose values were erased.
    pub audit_entries_redacted: u64,
}

/// Digits of `phone`, or `None` when it has none (or letters).
pub(crate) fn normalize_phone(phone: &str) -> Option<String> {
    let t = phone.trim();
    if t.is_empty()
        || !t
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')' | '.'))
    {
        return None;
    }
    let digits: String = t.chars().filter(char::is_ascii_digit).collect();
    (!digits.is_empty()).then_some(digits)
}

/// Result of verifying the stored chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ChainReport {
    /// Entries checked.
    pub checked: u64,
    /// The anchor verification started from (`seq` of the last purged entry), if any.
    pub anchor_seq: Option<i64>,
    /// The first broken entry, if any.
    pub broken: Option<Broken>,
    /// Entries committed but not chained yet when the check ended (written during it): a short
    /// tail that the chainer links within moments, not a sign of tampering.
    pub pending: u64,
}
