//! The tenant directory: users, skills, categories and invites.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::Role;

/// A person who uses Contact.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct User {
    /// Stable id.
    pub id: String,
    /// Login e-mail, unique.
    pub email: String,
    /// Name shown to colleagues (and to customers as the agent name).
    pub display_name: String,
    /// What the user may do.
    pub role: Role,
    /// Skill ids the user holds, with whether each is active.
    pub skills: Vec<UserSkill>,
    /// Created at.
    pub created_at: DateTime<Utc>,
}

/// A skill held by a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct UserSkill {
    /// The skill id.
    pub skill_id: String,
    /// Agents switch skills on and off; only active skills count for routing.
    pub active: bool,
    /// Proficiency 1 (basic) to 5 (expert), set by admins; `null`: no level, which satisfies
    /// only requirements without a minimum level.
    pub level: Option<u8>,
}

/// How a category requires one of its skills (a skill without options is required at any level).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SkillOption {
    /// Minimum proficiency 1 to 5; relaxed after `routing.relax_levels_after_secs` of waiting.
    #[serde(default)]
    pub min_level: Option<u8>,
    /// An optional skill is preferred at first and no longer required after
    /// `routing.drop_optional_after_secs` of waiting.
    #[serde(default)]
    pub optional: bool,
}

impl SkillOption {
    /// Whether it differs from a plain requirement (any level, mandatory).
    pub(crate) fn is_set(&self) -> bool {
        self.min_level.is_some() || self.optional
    }
}

/// A new user.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NewUser {
    /// Login e-mail.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// argon2 PHC hash (set by the later login work; none for now).
    #[serde(skip)]
    pub password_hash: Option<String>,
    /// Skill ids to grant (active).
    #[serde(default)]
    pub skill_ids: Vec<String>,
}

/// A skill an agent can hold and a conversation can require.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Skill {
    /// Stable id.
    pub id: String,
    /// Unique name, e.g. `german`.
    pub name: String,
    /// Created at.
    pub created_at: DateTime<Utc>,
}

/// A new skill.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NewSkill {
    /// Unique name.
    pub name: String,
}

/// A category groups conversations and carries their skill requirements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Category {
    /// Stable id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// What belongs here.
    pub description: String,
    /// Skills a conversation in this category requires.
    pub skill_ids: Vec<String>,
    /// Minimum levels and optional flags by skill id (only skills that set one).
    pub skill_options: BTreeMap<String, SkillOption>,
    /// Created at.
    pub created_at: DateTime<Utc>,
}

/// A new category.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NewCategory {
    /// Unique name.
    pub name: String,
    /// What belongs here.
    #[serde(default)]
    pub description: String,
    /// Required skill ids.
    #[serde(default)]
    pub skill_ids: Vec<String>,
}

/// A pending or accepted invite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Invite {
    /// Stable id.
    pub id: String,
    /// Who is invited.
    pub email: String,
    /// Name for the new account.
    pub display_name: String,
    /// Role the account gets.
    pub role: Role,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// The link stops working at this time.
    pub expires_at: DateTime<Utc>,
    /// When the link was used.
    pub accepted_at: Option<DateTime<Utc>>,
}
