//! What the Workspace and the Configurator show: the queue, notes, dashboard figures, category
//! edits, channel health and routing decisions.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::SkillOption;
use crate::domain::{CategoryRule, ChannelType};

/// A conversation waiting in the queue, with what an agent needs to choose it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueueItem {
    /// Conversation id.
    pub id: String,
    /// Channel.
    pub channel: ChannelType,
    /// Channel app.
    pub channel_app: String,
    /// Category id.
    pub category_id: Option<String>,
    /// Category name.
    pub category: Option<String>,
    /// Category priority (higher first).
    pub priority: i64,
    /// Names of the skills it requires.
    pub required_skills: Vec<String>,
    /// Customer name, when known.
    pub contact_name: Option<String>,
    /// The customer's identity on the channel.
    pub identity: String,
    /// Waiting since.
    pub queued_since: DateTime<Utc>,
    /// Last customer message.
    pub last_inbound_at: Option<DateTime<Utc>>,
    /// Transferred to this agent, who could not take it at once: only they may take it until
    /// the fallback passes.
    pub waiting_for: Option<String>,
    /// That agent's name.
    pub waiting_for_name: Option<String>,
}

/// An internal note on a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Note {
    /// Id.
    pub id: String,
    /// Conversation.
    pub conversation_id: String,
    /// Author.
    pub author_user_id: Option<String>,
    /// Author name.
    pub author_name: Option<String>,
    /// The text.
    pub text: String,
    /// Written at.
    pub created_at: DateTime<Utc>,
}

/// An agent's own figures and the tenant's, for the dashboard.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Figures {
    /// Conversations the agent owns now.
    pub assigned_now: i64,
    /// Conversations the agent closed since midnight UTC.
    pub closed_today: i64,
    /// Mean seconds from assignment to the agent's first reply, over today's conversations.
    pub avg_first_response_secs: Option<f64>,
    /// Mean seconds from assignment to close, over conversations closed today.
    pub avg_handling_secs: Option<f64>,
    /// Conversations waiting in the queue.
    pub waiting_now: i64,
    /// Seconds the oldest waiting conversation has waited.
    pub longest_wait_secs: Option<i64>,
}

/// The routing attributes of a category edited in the Configurator.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CategoryEdit {
    /// Unique name.
    pub name: String,
    /// What belongs here.
    #[serde(default)]
    pub description: String,
    /// Higher is served first.
    #[serde(default)]
    pub priority: i64,
    /// Rules (any matches).
    #[serde(default)]
    pub rules: Vec<CategoryRule>,
    /// Required skill ids.
    #[serde(default)]
    pub skill_ids: Vec<String>,
    /// Minimum level and optional flag per skill id; every key must be in `skill_ids`.
    #[serde(default)]
    pub skill_options: BTreeMap<String, SkillOption>,
}

/// Health of one channel app, from what the database saw.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub(crate) struct ChannelHealth {
    /// Last customer message.
    pub last_inbound_at: Option<DateTime<Utc>>,
    /// Last failed outbound message.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// Why it failed.
    pub last_failure_reason: Option<String>,
}

/// A stored decision, as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DecisionRecord {
    /// Id (monotonic).
    pub id: i64,
    /// Conversation.
    pub conversation_id: String,
    /// The agent it went to (or left, for `returned`).
    pub user_id: Option<String>,
    /// The agent's name.
    pub user_name: Option<String>,
    /// `automatic`, `manual`, `transfer` or `returned`.
    pub kind: String,
    /// Why, in one word (`least_loaded`, `sticky`, `manual_pick`, `grace_expired`, …).
    pub reason: String,
    /// The full explanation: winner, runner-up, widening and (when recorded) every candidate.
    #[schema(value_type = Object)]
    pub explanation: serde_json::Value,
    /// When.
    pub created_at: DateTime<Utc>,
}
