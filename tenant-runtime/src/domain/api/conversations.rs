//! Contacts, conversations and messages.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{ChannelType, ConversationStatus, DeliveryStatus, Direction, MessageContent};

/// A customer, known by one or more channel identities.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Contact {
    /// Stable id.
    pub id: String,
    /// Name to show, when the channel told us one.
    pub display_name: Option<String>,
    /// The identities the contact wrote from.
    pub identities: Vec<ContactIdentity>,
    /// When the contact first wrote.
    pub created_at: DateTime<Utc>,
}

/// One address of a contact on one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ContactIdentity {
    /// The channel.
    pub channel: ChannelType,
    /// The identity on that channel (MSISDN, PSID, …).
    pub identity: String,
}

/// A conversation between a contact and the tenant over one channel app.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Conversation {
    /// Stable id.
    pub id: String,
    /// The customer.
    pub contact_id: String,
    /// Channel type.
    pub channel: ChannelType,
    /// Name of the configured channel app the conversation runs through.
    pub channel_app: String,
    /// The contact's identity on that channel (where replies go).
    pub identity: String,
    /// Category (routing group).
    pub category_id: Option<String>,
    /// Skills an agent needs to take it.
    pub skill_requirements: Vec<String>,
    /// Queued, assigned or closed.
    pub status: ConversationStatus,
    /// The agent owning it, when assigned.
    pub assigned_user_id: Option<String>,
    /// Opened at.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Assigned at.
    pub assigned_at: Option<DateTime<Utc>>,
    /// Closed at.
    pub closed_at: Option<DateTime<Utc>>,
    /// Last message from the customer (opens WhatsApp's 24-hour window).
    pub last_inbound_at: Option<DateTime<Utc>>,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Message {
    /// Stable id (for outbound messages also the `correlation_id` sent to the Conversation API).
    pub id: String,
    /// The conversation.
    pub conversation_id: String,
    /// Inbound or outbound.
    pub direction: Direction,
    /// The Conversation API message id, once known.
    pub external_id: Option<String>,
    /// What was said.
    pub content: MessageContent,
    /// Delivery status.
    pub status: DeliveryStatus,
    /// Why it failed, when it failed.
    pub status_reason: Option<String>,
    /// The agent who wrote it (outbound).
    pub author_user_id: Option<String>,
    /// Stored at.
    pub created_at: DateTime<Utc>,
    /// Last status change.
    pub updated_at: DateTime<Utc>,
}
