//! Pure translation between stored rows (text ids, epoch milliseconds) and the routing model
//! (integer ids, instants). No I/O: the allocator reads rows and hands them here.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::config::RoutingDefaults;
use crate::storage::{AgentRow, CategoryRow, HeldSkill, NeededSkill, OpenConversationRow, from_ms};
use contact_routing::{
    Agent, AgentSkill, AgentStatus, Categories, Category, CategoryId, Connection, ContactId,
    ConversationId, LastAgent, RoutingSettings, SkillRequirement, WaitingConversation, WinReason,
};

/// Interns text ids as the integer ids the routing core uses, both ways.
#[derive(Debug, Default, Clone)]
pub(crate) struct Interner {
    to_int: HashMap<String, i64>,
    to_text: Vec<String>,
}

impl Interner {
    /// The integer for `text`, allocating one the first time.
    pub(crate) fn id(&mut self, text: &str) -> i64 {
        if let Some(&id) = self.to_int.get(text) {
            return id;
        }
        let id = self.to_text.len() as i64;
        self.to_int.insert(text.to_owned(), id);
        self.to_text.push(text.to_owned());
        id
    }

    /// The integer for `text`, if it was interned.
    pub(crate) fn get(&self, text: &str) -> Option<i64> {
        self.to_int.get(text).copied()
    }

    /// The text for an interned integer.
    pub(crate) fn text(&self, id: i64) -> Option<&str> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.to_text.get(i))
            .map(String::as_str)
    }
}

/// The id spaces of one allocator.
#[derive(Debug, Default, Clone)]
pub(crate) struct Ids {
    /// Users (agents).
    pub agents: Interner,
    /// Conversations.
    pub conversations: Interner,
    /// Contacts.
    pub contacts: Interner,
    /// Categories.
    pub categories: Interner,
}

/// What an admin saved under `PUT /api/v1/admin/routing` (the fields routing reads).
#[derive(Debug, Clone, Deserialize)]
struct TenantRouting {
    max_conversations_per_agent: Option<u32>,
    return_to_queue_after_disconnect_secs: Option<u32>,
}

/// Routing settings and agent capacity: the tenant's spec defaults, overridden by what an admin
/// saved.
pub(crate) fn settings(
    defaults: &RoutingDefaults,
    saved: Option<&serde_json::Value>,
) -> (RoutingSettings, u32) {
    let saved: Option<TenantRouting> = saved.and_then(|v| serde_json::from_value(v.clone()).ok());
    let grace = saved
        .as_ref()
        .and_then(|s| s.return_to_queue_after_disconnect_secs)
        .unwrap_or_else(|| {
            u32::try_from(defaults.return_to_queue_after_disconnect_secs).unwrap_or(u32::MAX)
        });
    let capacity = saved
        .as_ref()
        .and_then(|s| s.max_conversations_per_agent)
        .unwrap_or(defaults.max_conversations_per_agent);
    (
        RoutingSettings {
            sticky_window_secs: defaults.sticky_window_secs,
            relax_levels_after_secs: defaults.relax_levels_after_secs,
            drop_optional_after_secs: defaults.drop_optional_after_secs,
            return_to_queue_after_disconnect_secs: grace,
        },
        capacity,
    )
}

/// A category's stored skill requirement as routing's.
pub(crate) fn requirement(s: &NeededSkill) -> SkillRequirement {
    SkillRequirement {
        skill: s.name.clone(),
        min_level: s.min_level,
        optional: s.optional,
    }
}

/// A skill an agent holds, as routing's (name, skill).
pub(crate) fn held_skill(s: &HeldSkill) -> (String, AgentSkill) {
    (
        s.name.clone(),
        AgentSkill {
            active: s.active,
            level: s.level,
        },
    )
}

/// The tenant's categories: `default_id` is the default, the others are tried in row order.
pub(crate) fn categories(rows: &[CategoryRow], default_id: &str, ids: &mut Ids) -> Categories {
    let mut ordered = Vec::new();
    let mut default = None;
    for row in rows {
        let category = Category {
            id: CategoryId(ids.categories.id(&row.id)),
            name: row.name.clone(),
            priority: i32::try_from(row.priority).unwrap_or(if row.priority < 0 {
                i32::MIN
            } else {
                i32::MAX
            }),
            required_skills: row.skills.iter().map(requirement).collect(),
            rules: row.rules.clone(),
        };
        if row.id == default_id {
            default = Some(category);
        } else {
            ordered.push(category);
        }
    }
    let default = default.unwrap_or_else(|| Category {
        id: CategoryId(ids.categories.id(default_id)),
        name: "General".to_owned(),
        priority: 0,
        required_skills: Vec::new(),
        rules: Vec::new(),
    });
    Categories { ordered, default }
}

/// An agent as routing sees them. `previous` is the state's view, whose disconnect instant is
/// kept so that a repeated signal does not restart the grace.
pub(crate) fn agent(
    row: &AgentRow,
    capacity: u32,
    now: DateTime<Utc>,
    previous: Option<&Agent>,
    ids: &mut Ids,
) -> Agent {
    let connection = if row.sessions > 0 {
        Connection::Connected
    } else {
        match previous.map(|a| a.connection) {
            Some(Connection::Disconnected { since }) => Connection::Disconnected { since },
            Some(Connection::Connected) => Connection::Disconnected { since: now },
            None => Connection::Disconnected {
                since: row.presence_changed_at.map_or(now, from_ms),
            },
        }
    };
    Agent {
        id: contact_routing::AgentId(ids.agents.id(&row.user_id)),
        status: row.status.parse().unwrap_or(AgentStatus::Available),
        connection,
        auto_allocate: row.auto_allocate,
        capacity,
        load: 0,
        skills: row.skills.iter().map(held_skill).collect(),
        last_assigned_at: row.last_assigned_at.map(from_ms),
    }
}

/// A stored conversation as routing data; `None` for an unknown channel.
pub(crate) fn conversation(
    row: &OpenConversationRow,
    categories: &Categories,
    ids: &mut Ids,
) -> Option<WaitingConversation> {
    let category = row
        .category_id
        .as_deref()
        .and_then(|c| ids.categories.get(c))
        .and_then(|c| categories.get(CategoryId(c)))
        .unwrap_or(&categories.default);
    let agent_id = |ids: &mut Ids, u: &Option<String>| {
        u.as_deref()
            .map(|u| contact_routing::AgentId(ids.agents.id(u)))
    };
    Some(WaitingConversation {
        id: ConversationId(ids.conversations.id(&row.id)),
        contact: ContactId(ids.contacts.id(&row.contact_id)),
        channel: row.channel.parse().ok()?,
        category: category.id,
        priority: category.priority,
        // A forced transfer (the transferring agent overrode the skills) waits for its agent
        // without them; once the pin goes, the category's requirement is back.
        required_skills: if row.pinned_user_id.is_some() && row.pin_overrides_skills {
            Vec::new()
        } else {
            category.required_skills.clone()
        },
        enqueued_at: from_ms(row.enqueued_at),
        last_agent: row
            .last_agent
            .as_ref()
            .zip(row.last_agent_closed_at)
            .map(|(agent, at)| LastAgent {
                agent: contact_routing::AgentId(ids.agents.id(agent)),
                served_at: from_ms(at),
            }),
        pinned_agent: agent_id(ids, &row.pinned_user_id),
        avoid_agent: agent_id(ids, &row.avoid_user_id),
    })
}

/// Replaces the routing core's integer agent ids in an explanation (every `"agent": n`) with
/// the users' ids, so that what is stored means something outside this allocator.
pub(crate) fn name_agents(value: &mut serde_json::Value, agents: &Interner) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    serde_json::Value::Number(n) if key == "agent" => {
                        if let Some(text) = n.as_i64().and_then(|id| agents.text(id)) {
                            *v = serde_json::Value::String(text.to_owned());
                        }
                    }
                    other => name_agents(other, agents),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                name_agents(item, agents);
            }
        }
        _ => {}
    }
}

/// Most candidates an explanation keeps of each kind (ranked, excluded); the rest are counted in
/// `considered_omitted`. A full explanation lists every agent, which with 500 agents is tens of
/// kilobytes per decision: too much to store for each one.
pub(crate) const KEEP_CANDIDATES: usize = 20;

/// Trims the `considered` list of an explanation to [`KEEP_CANDIDATES`] ranked and as many
/// excluded agents (the best-ranked and the first excluded, in the core's order).
pub(crate) fn trim_candidates(value: &mut serde_json::Value) {
    let Some(list) = value.get_mut("considered").and_then(|v| v.as_array_mut()) else {
        return;
    };
    let total = list.len();
    let (mut ranked, mut excluded) = (0, 0);
    list.retain(|c| {
        let counter = if c.get("ranked").is_some() {
            &mut ranked
        } else {
            &mut excluded
        };
        *counter += 1;
        *counter <= KEEP_CANDIDATES
    });
    let omitted = total - list.len();
    if omitted > 0
        && let Some(map) = value.as_object_mut()
    {
        map.insert("considered_omitted".to_owned(), omitted.into());
    }
}

/// The one-word reason of a decision (`least_loaded`, `sticky`, …).
pub(crate) fn reason(reason: &WinReason) -> String {
    match serde_json::to_value(reason) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Object(map)) => map.keys().next().cloned().unwrap_or_default(),
        _ => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CategoryRule as StoredRule, ChannelType};

    fn agent_row(id: &str, sessions: i64) -> AgentRow {
        AgentRow {
            user_id: id.to_owned(),
            auto_allocate: true,
            status: "available".to_owned(),
            skills: vec![
                HeldSkill {
                    name: "billing".to_owned(),
                    active: true,
                    level: Some(4),
                },
                HeldSkill {
                    name: "fr".to_owned(),
                    active: false,
                    level: None,
                },
            ],
            sessions,
            presence_changed_at: Some(1_000),
            last_assigned_at: None,
        }
    }

    #[test]
    fn interner_round_trips_and_is_stable() {
        let mut i = Interner::default();
        let a = i.id("a");
        let b = i.id("b");
        assert_ne!(a, b);
        assert_eq!(i.id("a"), a);
        assert_eq!(i.text(b), Some("b"));
        assert_eq!(i.get("c"), None);
        assert_eq!(i.text(99), None);
    }

    #[test]
    fn saved_settings_override_the_spec_defaults() {
        let defaults = RoutingDefaults::default();
        let (s, cap) = settings(&defaults, None);
        assert_eq!(cap, defaults.max_conversations_per_agent);
        assert_eq!(s.return_to_queue_after_disconnect_secs, 60);
        let saved = serde_json::json!({ "auto_allocate_by_default": true, "max_conversations_per_agent": 2, "return_to_queue_after_disconnect_secs": 5 });
        let (s, cap) = settings(&defaults, Some(&saved));
        assert_eq!((cap, s.return_to_queue_after_disconnect_secs), (2, 5));
        assert_eq!(s.sticky_window_secs, defaults.sticky_window_secs);
    }

    #[test]
    fn agents_keep_their_disconnect_instant_and_skill_switches() {
        let mut ids = Ids::default();
        let now = from_ms(50_000);
        let fresh = agent(&agent_row("u1", 0), 3, now, None, &mut ids);
        assert_eq!(
            fresh.connection,
            Connection::Disconnected {
                since: from_ms(1_000)
            }
        );
        assert!(fresh.skills["billing"].active && !fresh.skills["fr"].active);
        assert_eq!(
            (fresh.skills["billing"].level, fresh.skills["fr"].level),
            (Some(4), None)
        );
        let was_connected = Agent {
            connection: Connection::Connected,
            ..fresh.clone()
        };
        let dropped = agent(&agent_row("u1", 0), 3, now, Some(&was_connected), &mut ids);
        assert_eq!(dropped.connection, Connection::Disconnected { since: now });
        let again = agent(
            &agent_row("u1", 0),
            3,
            from_ms(90_000),
            Some(&dropped),
            &mut ids,
        );
        assert_eq!(again.connection, Connection::Disconnected { since: now });
        let back = agent(&agent_row("u1", 2), 3, now, Some(&dropped), &mut ids);
        assert_eq!(back.connection, Connection::Connected);
        assert_eq!(back.id, fresh.id);
    }

    #[test]
    fn categories_map_rules_and_fall_back_to_a_default() {
        let mut ids = Ids::default();
        let rows = vec![
            CategoryRow {
                id: "general".to_owned(),
                name: "General".to_owned(),
                priority: 0,
                rules: vec![],
                skills: vec![],
            },
            CategoryRow {
                id: "billing".to_owned(),
                name: "Billing".to_owned(),
                priority: 5,
                rules: vec![StoredRule {
                    channels: vec![ChannelType::Viber],
                    channel_apps: vec![],
                    keywords: vec!["refund".to_owned()],
                    contact_attributes: [("tier".to_owned(), "gold".to_owned())].into(),
                }],
                skills: vec![
                    NeededSkill {
                        name: "billing".to_owned(),
                        min_level: Some(3),
                        optional: false,
                    },
                    NeededSkill {
                        name: "fr".to_owned(),
                        min_level: None,
                        optional: true,
                    },
                ],
            },
        ];
        let c = categories(&rows, "general", &mut ids);
        assert_eq!(c.default.name, "General");
        assert_eq!(c.ordered.len(), 1);
        assert_eq!(c.ordered[0].rules[0].channels, vec![ChannelType::Viber]);
        assert_eq!(c.ordered[0].rules[0].contact_attributes["tier"], "gold");
        assert_eq!(
            c.ordered[0].required_skills,
            vec![
                SkillRequirement::new("billing").at_least(3),
                SkillRequirement::new("fr").optional()
            ]
        );
        let missing = categories(&rows[1..], "general", &mut ids);
        assert_eq!(missing.default.id, c.default.id);
    }

    #[test]
    fn explanations_name_agents_by_user_id() {
        let mut agents = Interner::default();
        let (ann, bob) = (agents.id("ann"), agents.id("bob"));
        let mut v = serde_json::json!({
            "winner": { "agent": ann, "load": 0 },
            "considered": [{ "excluded": { "agent": bob, "reason": { "pinned_to_other": { "agent": ann } } } }],
            "conversation": 7,
        });
        name_agents(&mut v, &agents);
        assert_eq!(v["winner"]["agent"], "ann");
        assert_eq!(v["considered"][0]["excluded"]["agent"], "bob");
        assert_eq!(
            v["considered"][0]["excluded"]["reason"]["pinned_to_other"]["agent"],
            "ann"
        );
        assert_eq!(v["conversation"], 7);
    }

    #[test]
    fn long_candidate_lists_are_trimmed_and_counted() {
        let considered: Vec<serde_json::Value> = (0..30)
            .map(|i| serde_json::json!({ "ranked": { "rank": i } }))
            .chain((0..50).map(|i| serde_json::json!({ "excluded": { "agent": i } })))
            .collect();
        let mut v = serde_json::json!({ "reason": "least_loaded", "considered": considered });
        trim_candidates(&mut v);
        let kept = v["considered"].as_array().unwrap();
        assert_eq!(kept.len(), 2 * KEEP_CANDIDATES);
        assert_eq!(kept[0]["ranked"]["rank"], 0);
        assert_eq!(v["considered_omitted"], 40);
        let mut short = serde_json::json!({ "considered": [{ "ranked": {} }] });
        trim_candidates(&mut short);
        assert!(short.get("considered_omitted").is_none());
    }

    #[test]
    fn reasons_are_one_word() {
        assert_eq!(reason(&WinReason::LeastLoaded), "least_loaded");
        assert_eq!(
            reason(&WinReason::Sticky {
                served_at: from_ms(0)
            }),
            "sticky"
        );
    }
}
