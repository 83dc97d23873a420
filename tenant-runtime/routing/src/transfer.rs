//! Transfers to a named agent: whether the agent can take the conversation now, must be waited
//! for, or is refused. Pure: the runtime reads the facts inside the transfer's transaction and
//! writes what this decides, so the verdict is about what the commit sees.

use std::collections::BTreeMap;

use super::engine::skill_gap;
use super::explain::Exclusion;
use super::model::{Agent, AgentId, AgentSkill, AgentStatus, SkillRequirement, Widening};

/// Every requirement an agent does not meet for a transfer to them, in the requirements' order
/// (a transfer names them all, so the transferring agent sees the whole gap at once).
///
/// A transfer is judged on what the conversation requires, not on what widening would later
/// forgive: optional skills never block it (they are a preference), minimum levels do.
pub fn transfer_skill_gaps(agent: &Agent, requirements: &[SkillRequirement]) -> Vec<Exclusion> {
    let strict = Widening {
        levels_relaxed: false,
        optional_dropped: true,
    };
    requirements
        .iter()
        .filter_map(|requirement| skill_gap(agent, std::slice::from_ref(requirement), strict))
        .collect()
}

/// What a transfer decision looks at: the target agent now, and what the conversation needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferFacts {
    /// The target's declared status (an agent who never set one is available).
    pub status: AgentStatus,
    /// The target's live Workspace sessions.
    pub sessions: i64,
    /// Conversations the target holds (this one aside).
    pub load: i64,
    /// How many the target may hold.
    pub capacity: i64,
    /// The skills the target holds, by name.
    pub held: BTreeMap<String, AgentSkill>,
    /// What the conversation's category requires, in the category's order.
    pub required: Vec<SkillRequirement>,
    /// The transferring agent overrides the skill requirement.
    pub force: bool,
}

/// What to do with a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferVerdict {
    /// The target is offline: change nothing.
    AgentOffline,
    /// The target lacks skills and the transfer was not forced: change nothing.
    LacksSkills {
        /// Every unmet requirement, in the category's order.
        missing: Vec<Exclusion>,
    },
    /// Go ahead: hand the conversation over now (`waiting_for: None`), or put it back in the
    /// queue pinned to the target, who is `away`, `disconnected` or `at_capacity`.
    Proceed {
        /// Why the target cannot take it right now, if they cannot.
        waiting_for: Option<&'static str>,
        /// The unmet requirements a forced transfer overrode (empty: none).
        overridden: Vec<Exclusion>,
    },
}

/// Decides a transfer: offline agents are refused, skill gaps refuse unless forced, and an agent
/// who is away, disconnected or at capacity is waited for rather than overloaded.
pub fn decide_transfer(facts: &TransferFacts) -> TransferVerdict {
    if facts.status == AgentStatus::Offline {
        return TransferVerdict::AgentOffline;
    }
    let mut agent = Agent::new(AgentId(0), 0);
    agent.skills = facts.held.clone();
    let missing = transfer_skill_gaps(&agent, &facts.required);
    if !missing.is_empty() && !facts.force {
        return TransferVerdict::LacksSkills { missing };
    }
    let waiting_for = match facts.status {
        AgentStatus::Away => Some("away"),
        _ if facts.sessions == 0 => Some("disconnected"),
        _ if facts.load >= facts.capacity => Some("at_capacity"),
        _ => None,
    };
    TransferVerdict::Proceed {
        waiting_for,
        overridden: missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> TransferFacts {
        TransferFacts {
            status: AgentStatus::Available,
            sessions: 1,
            load: 0,
            capacity: 2,
            held: BTreeMap::new(),
            required: vec![SkillRequirement {
                skill: "french".into(),
                min_level: None,
                optional: false,
            }],
            force: false,
        }
    }

    #[test]
    fn offline_refuses_before_skills_are_looked_at() {
        let f = TransferFacts {
            status: AgentStatus::Offline,
            ..facts()
        };
        assert_eq!(decide_transfer(&f), TransferVerdict::AgentOffline);
    }

    #[test]
    fn a_gap_refuses_unless_forced_and_a_forced_one_is_recorded() {
        let missing = vec![Exclusion::MissingSkill {
            skill: "french".into(),
        }];
        assert_eq!(
            decide_transfer(&facts()),
            TransferVerdict::LacksSkills {
                missing: missing.clone()
            }
        );
        let forced = TransferFacts {
            force: true,
            ..facts()
        };
        assert_eq!(
            decide_transfer(&forced),
            TransferVerdict::Proceed {
                waiting_for: None,
                overridden: missing
            }
        );
    }

    #[test]
    fn away_disconnected_and_full_agents_are_waited_for_in_that_order() {
        let mut f = facts();
        f.required.clear();
        let waiting = |f: &TransferFacts| match decide_transfer(f) {
            TransferVerdict::Proceed { waiting_for, .. } => waiting_for,
            other => panic!("{other:?}"),
        };
        assert_eq!(waiting(&f), None);
        f.load = 2;
        assert_eq!(waiting(&f), Some("at_capacity"));
        f.sessions = 0;
        assert_eq!(waiting(&f), Some("disconnected"));
        f.status = AgentStatus::Away;
        assert_eq!(waiting(&f), Some("away"));
    }
}
