//! Decisions and their explanations.
//!
//! Every decision says why the chosen agent won ([`WinReason`]) and against whom (the
//! runner-up). With [`ExplainLevel::Full`] it also lists every agent of the tenant with the reason
//! it was excluded or its rank, which is what the supervisor view shows; automatic runs default
//! to [`ExplainLevel::Summary`] because listing 500 agents for each of thousands of decisions
//! would dominate the run.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::model::{AgentId, AgentStatus, ConversationId, Level, Widening};

/// How much an allocation run explains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExplainLevel {
    /// Winner, reason and runner-up.
    #[default]
    Summary,
    /// Also a verdict for every agent.
    Full,
}

/// One routing decision: the conversation goes to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The conversation.
    pub conversation: ConversationId,
    /// The agent.
    pub agent: AgentId,
    /// Why.
    pub explanation: Explanation,
}

/// The load facts of a candidate at decision time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateFacts {
    /// The agent.
    pub agent: AgentId,
    /// Open conversations before this decision.
    pub load: u32,
    /// Capacity.
    pub capacity: u32,
    /// When they last received a conversation.
    pub last_assigned_at: Option<DateTime<Utc>>,
}

/// Why the chosen agent won.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WinReason {
    /// The conversation was transferred to this agent.
    Pinned,
    /// The agent served this contact last, inside the sticky window.
    Sticky {
        /// When they served the contact.
        served_at: DateTime<Utc>,
    },
    /// No other agent was eligible.
    OnlyCandidate,
    /// Lowest load ratio (load / capacity).
    LeastLoaded,
    /// Same load ratio as the runner-up, but idle longer (assigned less recently).
    IdleLongest,
    /// Same load ratio and idle time as the runner-up: the lower id wins.
    LowestId,
    /// The agent picked the conversation from the queue.
    ManualPick,
}

/// Why an agent could not receive a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exclusion {
    /// The agent is away or offline.
    NotAvailable {
        /// Their status.
        status: AgentStatus,
    },
    /// The agent's session dropped (grace running).
    Disconnected,
    /// The agent's auto-allocate toggle is off.
    AutoAllocateOff,
    /// The agent has no free capacity.
    AtCapacity {
        /// Open conversations.
        load: u32,
        /// Capacity.
        capacity: u32,
    },
    /// The agent does not hold a required skill.
    MissingSkill {
        /// The skill.
        skill: String,
    },
    /// The agent holds the skill but has toggled it off.
    InactiveSkill {
        /// The skill.
        skill: String,
    },
    /// The agent's level is below the required minimum.
    LevelTooLow {
        /// The skill.
        skill: String,
        /// The agent's level.
        level: Option<Level>,
        /// The minimum.
        required: Level,
    },
    /// The conversation was transferred to another agent.
    PinnedToOther {
        /// That agent.
        agent: AgentId,
    },
    /// This agent put the conversation back in the queue.
    ReturnedByAgent,
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAvailable { status } => write!(f, "not available ({status:?})"),
            Self::Disconnected => f.write_str("disconnected"),
            Self::AutoAllocateOff => f.write_str("auto-allocate off"),
            Self::AtCapacity { load, capacity } => write!(f, "at capacity ({load}/{capacity})"),
            Self::MissingSkill { skill } => write!(f, "lacks skill {skill}"),
            Self::InactiveSkill { skill } => write!(f, "skill {skill} is inactive"),
            Self::LevelTooLow {
                skill,
                level,
                required,
            } => write!(
                f,
                "skill {skill} at level {} below {required}",
                level.map_or_else(|| "none".to_string(), |l| l.to_string())
            ),
            Self::PinnedToOther { agent } => write!(f, "transferred to agent {agent}"),
            Self::ReturnedByAgent => f.write_str("returned it to the queue"),
        }
    }
}

/// The verdict on one agent for one decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Eligible; rank 1 is the chosen agent (by the ranking rule, sticky aside).
    Ranked {
        /// 1-based rank by (load ratio, idle time, id).
        rank: u32,
        /// The facts ranked on.
        facts: CandidateFacts,
    },
    /// Not eligible.
    Excluded {
        /// The agent.
        agent: AgentId,
        /// The first reason found (availability, then capacity, then skills).
        reason: Exclusion,
    },
}

/// Why a decision was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// Why the winner won.
    pub reason: WinReason,
    /// The winner's facts before the decision.
    pub winner: CandidateFacts,
    /// The best other eligible agent, if any (not computed for pins and manual picks).
    pub runner_up: Option<CandidateFacts>,
    /// The skill widening in force for this conversation.
    pub widening: Widening,
    /// Every agent's verdict ([`ExplainLevel::Full`] only; otherwise empty).
    pub considered: Vec<Verdict>,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = &self.winner;
        write!(f, "agent {} ({}/{}): ", w.agent, w.load, w.capacity)?;
        match self.reason {
            WinReason::Pinned => f.write_str("transferred to them")?,
            WinReason::Sticky { served_at } => {
                write!(f, "last served this contact at {}", served_at.to_rfc3339())?;
            }
            WinReason::OnlyCandidate => f.write_str("the only eligible agent")?,
            WinReason::LeastLoaded => f.write_str("least loaded")?,
            WinReason::IdleLongest => f.write_str("equally loaded, idle longest")?,
            WinReason::LowestId => f.write_str("equally loaded and idle, lowest id")?,
            WinReason::ManualPick => f.write_str("picked it")?,
        }
        if let Some(r) = &self.runner_up {
            write!(
                f,
                "; runner-up agent {} ({}/{})",
                r.agent, r.load, r.capacity
            )?;
        }
        if self.widening.levels_relaxed {
            f.write_str("; skill levels relaxed")?;
        }
        if self.widening.optional_dropped {
            f.write_str("; optional skills dropped")?;
        }
        Ok(())
    }
}
