//! Plain routing data: agents, waiting conversations, categories and settings.
//!
//! Everything here is serde-serializable data with no behaviour beyond small helpers, so the
//! persistence layer can load it, the engine can read it and tests can build it literally.
//! Times are UTC instants supplied by the caller; the routing core never reads a clock.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A user of the tenant who answers conversations.
    AgentId
);
id_type!(
    /// A conversation with one contact over one channel.
    ConversationId
);
id_type!(
    /// The customer a conversation is with.
    ContactId
);
id_type!(
    /// A routing category (configured by the tenant admin).
    CategoryId
);

/// A name that is not one of a value's wire names.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// The text is not one of the known names of the value.
    #[error("unknown {what} `{value}`")]
    Unknown {
        /// Which kind of value was parsed.
        what: &'static str,
        /// The text that did not match.
        value: String,
    },
}

/// Declares a vocabulary enum with its wire (and database) names: `ALL`, `as_str`, `Display`,
/// `FromStr` (failing with [`ParseError`]) and serde all agree on one list, so a name cannot
/// drift between them. Extra derives come in as attributes (the runtime adds its OpenAPI
/// schema that way); the caller needs `serde`.
#[macro_export]
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal, { $($(#[$vmeta:meta])* $variant:ident => $wire:literal $(| $alias:literal)*),+ $(,)? }) => {
        // The derive comes first so that the caller's `#[serde(…)]` follows the derive that
        // introduces it, with or without the `openapi` feature.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ::serde::Serialize, ::serde::Deserialize)]
        $(#[$meta])*
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $wire $(, alias = $alias)*)] $variant,)+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire (and database) name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::ParseError;
            fn from_str(s: &str) -> Result<Self, $crate::ParseError> {
                match s {
                    $($wire $(| $alias)* => Ok($name::$variant),)+
                    other => Err($crate::ParseError::Unknown { what: $what, value: other.to_owned() }),
                }
            }
        }
    };
}

wire_enum!(
    /// A messaging channel reached through the Conversation API (its `ConversationChannel` name).
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    ChannelType, "channel", {
        /// SMS (MSISDN identity; long texts are split into segments).
        Sms => "SMS",
        /// WhatsApp Business (24-hour customer-care window).
        Whatsapp => "WHATSAPP",
        /// Facebook Messenger (page-scoped ids).
        Messenger => "MESSENGER",
        /// Instagram direct messages.
        Instagram => "INSTAGRAM",
        /// Viber Business Messages (`VIBER` is accepted as an alias).
        Viber => "VIBERBM" | "VIBER",
        /// Telegram bot chats.
        Telegram => "TELEGRAM",
        /// RCS business messaging.
        Rcs => "RCS",
    }
);

wire_enum!(
    /// An agent's declared availability.
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    // The names again for the OpenAPI schema, which does not see the per-variant renames.
    #[serde(rename_all = "snake_case")]
    AgentStatus, "agent status", {
        /// Takes new conversations (when connected, with auto-allocate on).
        Available => "available",
        /// Keeps their conversations, takes no new ones automatically.
        Away => "away",
        /// Holds no conversations: theirs return to the queue at their old places.
        Offline => "offline",
    }
);

/// Whether the agent's browser session is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Connection {
    /// At least one live session.
    Connected,
    /// The last session dropped at `since`; the return-to-queue grace runs from then.
    Disconnected {
        /// When the last session dropped.
        since: DateTime<Utc>,
    },
}

/// Proficiency in a skill: 1 (basic) ..= 5 (expert).
pub type Level = u8;

/// The highest proficiency level.
pub const MAX_LEVEL: Level = 5;

/// One skill an agent holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSkill {
    /// Only active skills count for matching (agents toggle skills on and off in the Workspace).
    pub active: bool,
    /// Optional proficiency 1..=5. A skill without a level satisfies only requirements that set
    /// no minimum level.
    pub level: Option<Level>,
}

/// An agent as the routing engine sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// Stable id.
    pub id: AgentId,
    /// Declared availability.
    pub status: AgentStatus,
    /// Connected, or disconnected since an instant.
    pub connection: Connection,
    /// The agent's auto-allocate toggle. Off: only manual picks and transfers reach them.
    pub auto_allocate: bool,
    /// Maximum concurrent open conversations (from the tenant's routing settings or per agent).
    pub capacity: u32,
    /// Open conversations currently assigned to the agent.
    pub load: u32,
    /// Skills by name.
    pub skills: BTreeMap<String, AgentSkill>,
    /// When the agent last received a conversation (`None` = never): the idle-longest tie-break
    /// prefers the earliest.
    pub last_assigned_at: Option<DateTime<Utc>>,
}

impl Agent {
    /// An available, connected agent with auto-allocate on, no load and no skills.
    pub fn new(id: AgentId, capacity: u32) -> Self {
        Self {
            id,
            status: AgentStatus::Available,
            connection: Connection::Connected,
            auto_allocate: true,
            capacity,
            load: 0,
            skills: BTreeMap::new(),
            last_assigned_at: None,
        }
    }

    /// Adds (or replaces) an active skill, for builders and tests.
    #[must_use]
    pub fn with_skill(mut self, name: impl Into<String>, level: Option<Level>) -> Self {
        self.skills.insert(
            name.into(),
            AgentSkill {
                active: true,
                level,
            },
        );
        self
    }

    /// Free capacity (zero when at or over capacity).
    pub fn free(&self) -> u32 {
        self.capacity.saturating_sub(self.load)
    }

    /// Available and connected: may receive conversations at all.
    pub fn is_reachable(&self) -> bool {
        self.status == AgentStatus::Available && self.connection == Connection::Connected
    }
}

/// One skill a conversation needs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SkillRequirement {
    /// Skill name.
    pub skill: String,
    /// Minimum proficiency; dropped once the conversation has waited
    /// [`RoutingSettings::relax_levels_after_secs`].
    pub min_level: Option<Level>,
    /// An optional skill is required at first and dropped entirely once the conversation has
    /// waited [`RoutingSettings::drop_optional_after_secs`]. A non-optional skill is never dropped.
    pub optional: bool,
}

impl SkillRequirement {
    /// A mandatory skill with no minimum level.
    pub fn new(skill: impl Into<String>) -> Self {
        Self {
            skill: skill.into(),
            min_level: None,
            optional: false,
        }
    }

    /// Sets the minimum level.
    #[must_use]
    pub fn at_least(mut self, level: Level) -> Self {
        self.min_level = Some(level);
        self
    }

    /// Marks the skill optional (droppable after a wait).
    #[must_use]
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }
}

/// The agent who last served the contact, for sticky ("last agent") routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastAgent {
    /// The agent.
    pub agent: AgentId,
    /// When they last served the contact (conversation closed or handed back).
    pub served_at: DateTime<Utc>,
}

/// A conversation waiting in the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingConversation {
    /// Stable id.
    pub id: ConversationId,
    /// The customer.
    pub contact: ContactId,
    /// The channel.
    pub channel: ChannelType,
    /// The category it was sorted into.
    pub category: CategoryId,
    /// From the category: higher is served first.
    pub priority: i32,
    /// From the category.
    pub required_skills: Vec<SkillRequirement>,
    /// Queue position: the original enqueue time, kept when the conversation returns to the
    /// queue (disconnect grace, unassign, transfer). Skill widening also counts from here.
    pub enqueued_at: DateTime<Utc>,
    /// Sticky preference.
    pub last_agent: Option<LastAgent>,
    /// Set by a transfer to an agent: only this agent may receive it automatically.
    pub pinned_agent: Option<AgentId>,
    /// The agent who put it back in the queue (unassign): not chosen automatically again.
    pub avoid_agent: Option<AgentId>,
}

impl WaitingConversation {
    /// A conversation with default category 0, priority 0 and no skill requirements.
    pub fn new(id: ConversationId, enqueued_at: DateTime<Utc>) -> Self {
        Self {
            id,
            contact: ContactId(id.0),
            channel: ChannelType::Whatsapp,
            category: CategoryId(0),
            priority: 0,
            required_skills: Vec::new(),
            enqueued_at,
            last_agent: None,
            pinned_agent: None,
            avoid_agent: None,
        }
    }

    /// Adds a requirement, for builders and tests.
    #[must_use]
    pub fn requiring(mut self, requirement: SkillRequirement) -> Self {
        self.required_skills.push(requirement);
        self
    }

    /// Sets the priority, for builders and tests.
    #[must_use]
    pub fn with_priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }
}

/// Tenant routing settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutingSettings {
    /// How long the last agent who served a contact stays preferred (0 turns sticky routing off).
    pub sticky_window_secs: u32,
    /// After this wait, skill minimum levels are ignored (the skill itself is still required).
    /// `None`: never.
    pub relax_levels_after_secs: Option<u32>,
    /// After this wait, optional skills are no longer required. `None`: never.
    pub drop_optional_after_secs: Option<u32>,
    /// How long a disconnected agent keeps their conversations before they return to the queue.
    pub return_to_queue_after_disconnect_secs: u32,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        Self {
            sticky_window_secs: 24 * 3600,
            relax_levels_after_secs: Some(120),
            drop_optional_after_secs: Some(300),
            return_to_queue_after_disconnect_secs: 60,
        }
    }
}

/// Which parts of a conversation's skill requirements are relaxed at a given instant.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
pub struct Widening {
    /// Minimum levels are ignored.
    pub levels_relaxed: bool,
    /// Optional skills are not required.
    pub optional_dropped: bool,
}

impl RoutingSettings {
    /// The widening in force for a conversation enqueued at `enqueued_at`, seen at `now`.
    /// Each relaxation applies on its own threshold; they are independent of each other.
    pub fn widening(&self, enqueued_at: DateTime<Utc>, now: DateTime<Utc>) -> Widening {
        let waited = now - enqueued_at;
        let reached = |after: Option<u32>| after.is_some_and(|secs| waited >= secs_delta(secs));
        Widening {
            levels_relaxed: reached(self.relax_levels_after_secs),
            optional_dropped: reached(self.drop_optional_after_secs),
        }
    }

    /// Whether `last` is still inside the sticky window at `now`.
    pub fn sticky_applies(&self, last: &LastAgent, now: DateTime<Utc>) -> bool {
        self.sticky_window_secs > 0 && now - last.served_at <= secs_delta(self.sticky_window_secs)
    }

    /// The return-to-queue grace.
    pub fn grace(&self) -> TimeDelta {
        secs_delta(self.return_to_queue_after_disconnect_secs)
    }
}

/// Seconds as a [`TimeDelta`].
pub(crate) fn secs_delta(secs: u32) -> TimeDelta {
    TimeDelta::seconds(i64::from(secs))
}

/// Everything the engine needs for one allocation run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// All agents of the tenant (any status).
    pub agents: Vec<Agent>,
    /// Conversations waiting in the queue.
    pub waiting: Vec<WaitingConversation>,
    /// Routing settings.
    pub settings: RoutingSettings,
    /// The instant of the run.
    pub now: DateTime<Utc>,
}

/// One categorization rule: it matches when every condition it sets holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CategoryRule {
    /// Any of these channels (empty: any).
    #[serde(default)]
    pub channels: Vec<ChannelType>,
    /// Any of these channel apps (empty: any).
    #[serde(default)]
    pub channel_apps: Vec<String>,
    /// The first message contains one of these words (empty: any).
    #[serde(default)]
    pub keywords: Vec<String>,
    /// The contact has every one of these attributes with exactly this value (empty: any).
    #[serde(default)]
    pub contact_attributes: BTreeMap<String, String>,
}

// An empty rule matches everything; keywords match case-insensitively as whole words, and a
// keyword may be several words ("refund request"): see `categorize`.

/// A routing category: where a conversation is sorted on arrival.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Category {
    /// Stable id.
    pub id: CategoryId,
    /// Display name.
    pub name: String,
    /// Higher is served first.
    pub priority: i32,
    /// Skills a conversation in this category needs.
    pub required_skills: Vec<SkillRequirement>,
    /// The category matches when any rule matches (OR). No rules: never matches by rule (only as
    /// the default).
    pub rules: Vec<CategoryRule>,
}

/// The ordered categories of a tenant plus the default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Categories {
    /// Evaluated in this order; the first match wins.
    pub ordered: Vec<Category>,
    /// Used when nothing matches.
    pub default: Category,
}

impl Categories {
    /// The category with this id (the default included).
    pub fn get(&self, id: CategoryId) -> Option<&Category> {
        if self.default.id == id {
            return Some(&self.default);
        }
        self.ordered.iter().find(|c| c.id == id)
    }
}
