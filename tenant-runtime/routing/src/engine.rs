//! The allocation engine: which waiting conversation goes to which agent, and why.
//!
//! # Rules
//!
//! * Conversations are served by priority (higher first), then by queue position (earliest
//!   `enqueued_at`), then by id. Each is considered once per run; one that finds no eligible
//!   agent is skipped (it does not block the conversations behind it).
//! * An agent is *eligible* for automatic allocation when they are available, connected, have
//!   auto-allocate on, have free capacity and hold every required skill **active** at the required
//!   minimum level, after the conversation's widening ([`RoutingSettings::widening`]). An agent
//!   the conversation was returned by (unassign) is not eligible for it.
//! * A conversation pinned to an agent (transfer) goes only to that agent, when they are
//!   available, connected, have free capacity and the skills; auto-allocate is ignored because a
//!   transfer is an explicit human decision.
//! * Otherwise the contact's last agent wins if they served the contact inside the sticky window
//!   and are eligible now (sticky routing does not wait for a busy agent).
//! * Otherwise the eligible agent with the lowest **load ratio** (load / capacity, compared
//!   exactly by cross-multiplication) wins; with a uniform capacity this is the least absolute
//!   load. Ties go to the agent idle longest (least recently assigned, never-assigned first), then
//!   to the lowest id.
//! * Every assignment updates the agent's load and last-assignment time before the next
//!   conversation is considered.
//!
//! # Efficiency
//!
//! Skill names are interned to bit positions; a conversation's requirements are interned once
//! and resolved, per widening, into a `Need` (a skill mask plus minimum levels). A run keeps,
//! per need it meets, an ordered set of the eligible agents keyed by rank, built lazily and
//! updated on each assignment, so picking an agent is `O(log agents)` and a need no agent can
//! meet is skipped in `O(1)` for the rest of the run. The run ends early once no reachable agent
//! has free capacity. [`super::naive`] is the straightforward scan this replaces; the property
//! tests check both produce the same decisions.
//!
//! # Incremental runs
//!
//! After any run, no waiting conversation has an eligible agent (a skipped conversation had
//! none when considered, and agents only lose eligibility during a run). So when an event makes
//! only some agents newly eligible (capacity freed, came online, skill or auto-allocate turned
//! on) and adds some conversations to the queue, a run only needs those conversations against all
//! agents and the other waiting conversations against those agents (`Scope::Incremental`).
//! Time could break this (a wait crossing a widening threshold), so
//! [`super::state::RoutingState`] evaluates widening at the instant of its last sweep
//! ([`super::state::Event::Tick`]), not at each event: between sweeps eligibility only changes
//! through events.

use std::{
    cmp::{Ordering, Reverse},
    collections::{BTreeSet, BinaryHeap, HashMap},
    hash::{BuildHasherDefault, Hasher},
};

use chrono::{DateTime, Utc};
use thiserror::Error;

use super::{
    explain::{CandidateFacts, Decision, Exclusion, ExplainLevel, Explanation, Verdict, WinReason},
    model::{
        Agent, AgentId, AgentStatus, ConversationId, Level, RoutingSettings, SkillRequirement,
        Snapshot, WaitingConversation, Widening,
    },
};

/// Runs a full allocation over a snapshot and returns the decisions in the order taken.
///
/// Agent and conversation ids must be unique within the snapshot.
pub fn allocate(snapshot: &Snapshot, explain: ExplainLevel) -> Vec<Decision> {
    let mut index = Index::one_shot(
        snapshot.agents.iter().cloned(),
        snapshot.waiting.iter().cloned(),
    );
    index.run(
        &snapshot.settings,
        snapshot.now,
        snapshot.now,
        &Scope::Full,
        explain,
    )
}

/// Why a manual pick was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PickError {
    /// No such agent.
    #[error("agent {0} is unknown")]
    UnknownAgent(AgentId),
    /// No such conversation.
    #[error("conversation {0} is unknown")]
    UnknownConversation(ConversationId),
    /// The conversation is not in the queue (snapshot view: it is assigned or closed).
    #[error("conversation {0} is not waiting")]
    NotWaiting(ConversationId),
    /// The conversation is already assigned.
    #[error("conversation {conversation} is already assigned to agent {agent}")]
    AlreadyAssigned {
        /// The conversation.
        conversation: ConversationId,
        /// Its agent.
        agent: AgentId,
    },
    /// The conversation is closed.
    #[error("conversation {0} is closed")]
    Closed(ConversationId),
    /// Offline agents cannot take conversations.
    #[error("agent {0} is offline")]
    AgentOffline(AgentId),
    /// The agent is at capacity.
    #[error("agent {agent} is at capacity ({load}/{capacity})")]
    AgentAtCapacity {
        /// The agent.
        agent: AgentId,
        /// Open conversations.
        load: u32,
        /// Capacity.
        capacity: u32,
    },
    /// The agent lacks a required skill (after widening).
    #[error("agent {agent} cannot take it: {reason}")]
    AgentLacksSkill {
        /// The agent.
        agent: AgentId,
        /// Which skill and how.
        reason: Exclusion,
    },
    /// The conversation was transferred to another agent.
    #[error("conversation {conversation} is reserved for agent {agent}")]
    PinnedToOther {
        /// The conversation.
        conversation: ConversationId,
        /// The agent it is reserved for.
        agent: AgentId,
    },
}

/// Checks a manual pick against a snapshot (the conversation must be waiting) and returns the
/// decision. The persistence layer then claims the conversation atomically (see `ROUTING.md`):
/// two agents picking the same conversation are both accepted here, and one claim fails.
pub fn pick(
    snapshot: &Snapshot,
    agent: AgentId,
    conversation: ConversationId,
) -> Result<Decision, PickError> {
    let agent = snapshot
        .agents
        .iter()
        .find(|a| a.id == agent)
        .ok_or(PickError::UnknownAgent(agent))?;
    let conversation = snapshot
        .waiting
        .iter()
        .find(|c| c.id == conversation)
        .ok_or(PickError::NotWaiting(conversation))?;
    check_pick(agent, conversation, &snapshot.settings, snapshot.now)
}

/// Why a waiting conversation is (still) waiting: every agent's verdict for it at the
/// snapshot's instant, eligible agents first by rank. `None` when it is not waiting.
pub fn why_waiting(snapshot: &Snapshot, conversation: ConversationId) -> Option<Vec<Verdict>> {
    let conversation = snapshot.waiting.iter().find(|c| c.id == conversation)?;
    let widening = snapshot
        .settings
        .widening(conversation.enqueued_at, snapshot.now);
    let agents: Vec<&Agent> = snapshot.agents.iter().collect();
    Some(verdicts_of(agents, conversation, widening))
}

/// The pick rules on plain data: available or away (not offline), free capacity, the skills
/// after widening, and not reserved for someone else. Auto-allocate does not matter.
pub(crate) fn check_pick(
    agent: &Agent,
    conversation: &WaitingConversation,
    settings: &RoutingSettings,
    now: DateTime<Utc>,
) -> Result<Decision, PickError> {
    if agent.status == AgentStatus::Offline {
        return Err(PickError::AgentOffline(agent.id));
    }
    if let Some(pinned) = conversation.pinned_agent.filter(|p| *p != agent.id) {
        return Err(PickError::PinnedToOther {
            conversation: conversation.id,
            agent: pinned,
        });
    }
    if agent.free() == 0 {
        return Err(PickError::AgentAtCapacity {
            agent: agent.id,
            load: agent.load,
            capacity: agent.capacity,
        });
    }
    let widening = settings.widening(conversation.enqueued_at, now);
    if let Some(reason) = skill_gap(agent, &conversation.required_skills, widening) {
        return Err(PickError::AgentLacksSkill {
            agent: agent.id,
            reason,
        });
    }
    Ok(Decision {
        conversation: conversation.id,
        agent: agent.id,
        explanation: Explanation {
            reason: WinReason::ManualPick,
            winner: facts(agent),
            runner_up: None,
            widening,
            considered: Vec::new(),
        },
    })
}

/// Whether a requirement still applies under a widening, and with which minimum level.
pub(crate) fn effective(
    requirement: &SkillRequirement,
    widening: Widening,
) -> Option<Option<Level>> {
    if requirement.optional && widening.optional_dropped {
        return None;
    }
    Some(if widening.levels_relaxed {
        None
    } else {
        requirement.min_level
    })
}

/// The first required skill (in the requirement's order) the agent does not meet, on plain data.
pub(crate) fn skill_gap(
    agent: &Agent,
    requirements: &[SkillRequirement],
    widening: Widening,
) -> Option<Exclusion> {
    requirements.iter().find_map(|requirement| {
        let min_level = effective(requirement, widening)?;
        let skill = requirement.skill.clone();
        match agent.skills.get(&requirement.skill) {
            None => Some(Exclusion::MissingSkill { skill }),
            Some(held) if !held.active => Some(Exclusion::InactiveSkill { skill }),
            Some(held) => match min_level {
                Some(required) if held.level.unwrap_or(0) < required => {
                    Some(Exclusion::LevelTooLow {
                        skill,
                        level: held.level,
                        required,
                    })
                }
                _ => None,
            },
        }
    })
}

/// The first reason an agent cannot receive a conversation automatically, on plain data.
/// `pinned` relaxes the auto-allocate rule (transfers).
pub(crate) fn exclusion(
    agent: &Agent,
    conversation: &WaitingConversation,
    widening: Widening,
) -> Option<Exclusion> {
    availability_exclusion(agent, conversation)
        .or_else(|| skill_gap(agent, &conversation.required_skills, widening))
}

/// The part of [`exclusion`] before skills: pins, returns, status, connection, toggle, capacity.
fn availability_exclusion(agent: &Agent, conversation: &WaitingConversation) -> Option<Exclusion> {
    if let Some(pinned) = conversation.pinned_agent.filter(|p| *p != agent.id) {
        return Some(Exclusion::PinnedToOther { agent: pinned });
    }
    let pinned = conversation.pinned_agent == Some(agent.id);
    if !pinned && conversation.avoid_agent == Some(agent.id) {
        return Some(Exclusion::ReturnedByAgent);
    }
    if agent.status != AgentStatus::Available {
        return Some(Exclusion::NotAvailable {
            status: agent.status,
        });
    }
    if !agent.is_reachable() {
        return Some(Exclusion::Disconnected);
    }
    if !pinned && !agent.auto_allocate {
        return Some(Exclusion::AutoAllocateOff);
    }
    if agent.free() == 0 {
        return Some(Exclusion::AtCapacity {
            load: agent.load,
            capacity: agent.capacity,
        });
    }
    None
}

fn facts(agent: &Agent) -> CandidateFacts {
    CandidateFacts {
        agent: agent.id,
        load: agent.load,
        capacity: agent.capacity,
        last_assigned_at: agent.last_assigned_at,
    }
}

/// Compares two agents by the ranking rule: load ratio, then idle longest, then id.
pub(crate) fn compare_rank(a: &Agent, b: &Agent) -> Ordering {
    RankKey::of(a, 0).cmp(&RankKey::of(b, 0))
}

/// The ranking key of an eligible agent; smaller is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RankKey {
    load: u32,
    capacity: u32,
    last_assigned_at: Option<DateTime<Utc>>,
    agent: AgentId,
    slot: usize,
}

impl RankKey {
    fn of(agent: &Agent, slot: usize) -> Self {
        Self {
            load: agent.load,
            capacity: agent.capacity,
            last_assigned_at: agent.last_assigned_at,
            agent: agent.id,
            slot,
        }
    }

    fn ratio_cmp(&self, other: &Self) -> Ordering {
        (u64::from(self.load) * u64::from(other.capacity))
            .cmp(&(u64::from(other.load) * u64::from(self.capacity)))
    }

    /// Why `self` beats `runner_up`.
    fn win_reason(&self, runner_up: Option<&Self>) -> WinReason {
        let Some(other) = runner_up else {
            return WinReason::OnlyCandidate;
        };
        if self.ratio_cmp(other) == Ordering::Less {
            WinReason::LeastLoaded
        } else if self.last_assigned_at < other.last_assigned_at {
            WinReason::IdleLongest
        } else {
            WinReason::LowestId
        }
    }
}

impl Ord for RankKey {
    fn cmp(&self, other: &Self) -> Ordering {
        // `None < Some(_)`: an agent never assigned counts as idle longest.
        self.ratio_cmp(other)
            .then_with(|| self.last_assigned_at.cmp(&other.last_assigned_at))
            .then_with(|| self.agent.cmp(&other.agent))
    }
}

impl PartialOrd for RankKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What a run covers.
#[derive(Debug, Clone)]
pub(crate) enum Scope {
    /// Every waiting conversation against every agent.
    Full,
    /// `conversations` against every agent; every other waiting conversation only against
    /// `agents`. Correct only when, before the event, no waiting conversation had an eligible
    /// agent (see the module docs).
    Incremental {
        /// Agents that may have become eligible for conversations already waiting.
        agents: Vec<AgentId>,
        /// Conversations that (re)entered the queue.
        conversations: Vec<ConversationId>,
    },
}

/// A set of skill positions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct Mask(Vec<u64>);

impl Mask {
    fn set(&mut self, bit: usize) {
        let word = bit / 64;
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << (bit % 64);
    }

    fn has(&self, bit: usize) -> bool {
        self.0
            .get(bit / 64)
            .is_some_and(|word| word & (1 << (bit % 64)) != 0)
    }

    fn contains_all(&self, other: &Mask) -> bool {
        other
            .0
            .iter()
            .enumerate()
            .all(|(i, want)| want & !self.0.get(i).copied().unwrap_or(0) == 0)
    }
}

/// Effective requirements after widening: skills that must be active, and minimum levels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct Need {
    mask: Mask,
    levels: Vec<(usize, Level)>,
}

/// An agent with their skills compiled to positions.
#[derive(Debug, Clone)]
struct Slot {
    agent: Agent,
    /// Skills held, active or not.
    held: Mask,
    /// Skills held and active.
    active: Mask,
    /// Level by skill position; 0 when unleveled or not held.
    levels: Vec<Level>,
}

impl Slot {
    fn meets(&self, need: &Need) -> bool {
        self.active.contains_all(&need.mask)
            && need
                .levels
                .iter()
                .all(|&(skill, min)| self.levels.get(skill).copied().unwrap_or(0) >= min)
    }

    /// Available, connected, free capacity: may receive pinned conversations.
    fn open(&self) -> bool {
        self.agent.is_reachable() && self.agent.free() > 0
    }

    /// May receive conversations automatically (skills aside).
    fn auto_open(&self) -> bool {
        self.open() && self.agent.auto_allocate
    }
}

/// Interning of skills, requirement lists and needs.
#[derive(Debug, Clone, Default)]
struct Matcher {
    skills: FxHashMap<String, usize>,
    requirements: Vec<Vec<SkillRequirement>>,
    requirement_ids: FxHashMap<Vec<SkillRequirement>, usize>,
    /// Skill position of each requirement of each list.
    requirement_positions: Vec<Vec<usize>>,
    /// Need per requirement list and widening (index: levels_relaxed + 2 * optional_dropped).
    requirement_needs: Vec<[Option<usize>; 4]>,
    needs: Vec<Need>,
    need_ids: FxHashMap<Need, usize>,
}

impl Matcher {
    fn skill(&mut self, name: &str) -> usize {
        if let Some(&position) = self.skills.get(name) {
            return position;
        }
        let position = self.skills.len();
        self.skills.insert(name.to_string(), position);
        position
    }

    fn requirement(&mut self, list: &[SkillRequirement]) -> usize {
        if let Some(&id) = self.requirement_ids.get(list) {
            return id;
        }
        let id = self.requirements.len();
        let positions = list.iter().map(|r| self.skill(&r.skill)).collect();
        self.requirement_positions.push(positions);
        self.requirements.push(list.to_vec());
        self.requirement_ids.insert(list.to_vec(), id);
        self.requirement_needs.push([None; 4]);
        id
    }

    fn need(&mut self, requirement: usize, widening: Widening) -> usize {
        let slot =
            usize::from(widening.levels_relaxed) + 2 * usize::from(widening.optional_dropped);
        if let Some(need) = self.requirement_needs[requirement][slot] {
            return need;
        }
        let mut need = Need::default();
        for index in 0..self.requirements[requirement].len() {
            let required = &self.requirements[requirement][index];
            let Some(min_level) = effective(required, widening) else {
                continue;
            };
            let name = required.skill.clone();
            let position = self.skill(&name);
            need.mask.set(position);
            if let Some(min) = min_level {
                need.levels.push((position, min));
            }
        }
        need.levels.sort_unstable();
        let id = match self.need_ids.get(&need) {
            Some(&id) => id,
            None => {
                let id = self.needs.len();
                self.needs.push(need.clone());
                self.need_ids.insert(need, id);
                id
            }
        };
        self.requirement_needs[requirement][slot] = Some(id);
        id
    }

    fn compile(&mut self, agent: Agent) -> Slot {
        let mut active = Mask::default();
        let mut held_mask = Mask::default();
        let mut levels = Vec::new();
        for (name, held) in &agent.skills {
            let position = self.skill(name);
            held_mask.set(position);
            if held.active {
                active.set(position);
            }
            if levels.len() <= position {
                levels.resize(position + 1, 0);
            }
            levels[position] = held.level.unwrap_or(0);
        }
        Slot {
            agent,
            held: held_mask,
            active,
            levels,
        }
    }
}

/// Queue order: priority (higher first), enqueued-at, id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct QueueKey(Reverse<i32>, DateTime<Utc>, ConversationId);

impl QueueKey {
    fn of(conversation: &WaitingConversation) -> Self {
        Self(
            Reverse(conversation.priority),
            conversation.enqueued_at,
            conversation.id,
        )
    }
}

/// Waiting conversations sharing a requirement list and a pin: the unit an incremental run
/// skips at once when a newly eligible agent cannot meet it.
type BucketKey = (usize, Option<AgentId>);

#[derive(Debug, Clone)]
struct Queued {
    conversation: WaitingConversation,
    requirement: usize,
}

impl Queued {
    fn bucket(&self) -> BucketKey {
        (self.requirement, self.conversation.pinned_agent)
    }
}

/// Compiled agents and queue, kept across runs by [`super::state::RoutingState`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Index {
    matcher: Matcher,
    slots: Vec<Slot>,
    slot_of: FxHashMap<AgentId, usize>,
    order: BTreeSet<QueueKey>,
    queued: FxHashMap<ConversationId, Queued>,
    buckets: FxHashMap<BucketKey, BTreeSet<QueueKey>>,
    /// Enqueue times of waiting conversations, to find the next widening threshold.
    enqueue_times: BTreeSet<(DateTime<Utc>, ConversationId)>,
    /// Whether `buckets` and `enqueue_times` are kept (not needed for a one-shot full run).
    one_shot: bool,
}

impl Index {
    /// Compiles agents and waiting conversations for a single full run: no buckets and no
    /// enqueue-time index, which only incremental runs and timers need.
    pub(crate) fn one_shot(
        agents: impl IntoIterator<Item = Agent>,
        waiting: impl IntoIterator<Item = WaitingConversation>,
    ) -> Self {
        let mut index = Self {
            one_shot: true,
            ..Self::default()
        };
        for agent in agents {
            index.put_agent(agent);
        }
        for conversation in waiting {
            index.enqueue(conversation);
        }
        index
    }

    /// Adds or replaces an agent.
    pub(crate) fn put_agent(&mut self, agent: Agent) {
        let id = agent.id;
        let slot = self.matcher.compile(agent);
        match self.slot_of.get(&id) {
            Some(&position) => self.slots[position] = slot,
            None => {
                self.slot_of.insert(id, self.slots.len());
                self.slots.push(slot);
            }
        }
    }

    /// The agent, if known.
    pub(crate) fn agent(&self, id: AgentId) -> Option<&Agent> {
        self.slot_of.get(&id).map(|&slot| &self.slots[slot].agent)
    }

    /// All agents, in registration order.
    pub(crate) fn agents(&self) -> impl Iterator<Item = &Agent> {
        self.slots.iter().map(|slot| &slot.agent)
    }

    /// Changes an agent and recompiles their skills.
    pub(crate) fn update_agent(&mut self, id: AgentId, change: impl FnOnce(&mut Agent)) -> bool {
        let Some(&position) = self.slot_of.get(&id) else {
            return false;
        };
        let mut agent = self.slots[position].agent.clone();
        change(&mut agent);
        self.slots[position] = self.matcher.compile(agent);
        true
    }

    /// Changes an agent's status, toggle or load bookkeeping (no skill recompilation).
    pub(crate) fn update_load(&mut self, id: AgentId, change: impl FnOnce(&mut Agent)) -> bool {
        let Some(&position) = self.slot_of.get(&id) else {
            return false;
        };
        change(&mut self.slots[position].agent);
        true
    }

    /// Puts a conversation in the queue (replacing it if already there).
    pub(crate) fn enqueue(&mut self, conversation: WaitingConversation) {
        self.dequeue(conversation.id);
        let requirement = self.matcher.requirement(&conversation.required_skills);
        let key = QueueKey::of(&conversation);
        let queued = Queued {
            conversation,
            requirement,
        };
        self.order.insert(key);
        if !self.one_shot {
            self.buckets.entry(queued.bucket()).or_default().insert(key);
            self.enqueue_times.insert((key.1, key.2));
        }
        self.queued.insert(key.2, queued);
    }

    /// Takes a conversation out of the queue.
    pub(crate) fn dequeue(&mut self, id: ConversationId) -> Option<WaitingConversation> {
        let queued = self.queued.remove(&id)?;
        let key = QueueKey::of(&queued.conversation);
        self.order.remove(&key);
        if let Some(bucket) = self.buckets.get_mut(&queued.bucket()) {
            bucket.remove(&key);
            if bucket.is_empty() {
                self.buckets.remove(&queued.bucket());
            }
        }
        self.enqueue_times.remove(&(key.1, id));
        Some(queued.conversation)
    }

    /// Waiting conversations in queue order.
    pub(crate) fn waiting_in_order(&self) -> impl Iterator<Item = &WaitingConversation> {
        self.order
            .iter()
            .map(|key| &self.queued[&key.2].conversation)
    }

    /// Number of waiting conversations.
    pub(crate) fn waiting_len(&self) -> usize {
        self.queued.len()
    }

    /// The first instant after `clock` at which a waiting conversation crosses a widening
    /// threshold.
    pub(crate) fn next_widening(
        &self,
        settings: &RoutingSettings,
        clock: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        [
            settings.relax_levels_after_secs,
            settings.drop_optional_after_secs,
        ]
        .into_iter()
        .flatten()
        .filter_map(|secs| {
            let after = super::model::secs_delta(secs);
            self.enqueue_times
                .range((clock - after, ConversationId(i64::MAX))..)
                .next()
                .map(|(at, _)| *at + after)
        })
        .min()
    }

    /// Runs an allocation, applies its decisions to the index (loads, last-assignment times,
    /// queue) and returns them in the order taken. `now` is the decision time (sticky window,
    /// last-assignment time); `widening_clock` is the instant skill widening is evaluated at
    /// (the same for a snapshot; the last sweep for [`super::state::RoutingState`]).
    pub(crate) fn run(
        &mut self,
        settings: &RoutingSettings,
        now: DateTime<Utc>,
        widening_clock: DateTime<Utc>,
        scope: &Scope,
        explain: ExplainLevel,
    ) -> Vec<Decision> {
        let Self {
            matcher,
            slots,
            slot_of,
            order,
            queued,
            buckets,
            ..
        } = self;
        let full = matches!(scope, Scope::Full);
        let (focus_slots, focus_keys) = focus(scope, slot_of, queued);

        // The conversations to look at, in queue order: all of them in a full run; otherwise the
        // focus conversations merged with the buckets some focus agent could serve.
        let keys: Box<dyn Iterator<Item = QueueKey> + '_> = if full {
            Box::new(order.iter().copied())
        } else {
            incremental_keys(settings, matcher, slots, buckets, &focus_slots, &focus_keys)
        };

        let mut sets = CandidateSets::new(slots.len());
        let mut open_slots = slots.iter().filter(|slot| slot.open()).count();
        let mut focus_left = focus_keys.len();
        let mut decisions = Vec::new();
        let mut ranked: Vec<RankKey> = Vec::with_capacity(3);

        for key in keys {
            if open_slots == 0 {
                break;
            }
            let in_focus = full || focus_keys.binary_search(&key).is_ok();
            if in_focus && !full {
                focus_left -= 1;
            }
            if !in_focus && !focus_slots.iter().any(|&s| slots[s].open()) {
                if focus_left == 0 {
                    break;
                }
                continue;
            }
            let entry = &queued[&key.2];
            let conversation = &entry.conversation;
            let widening = settings.widening(conversation.enqueued_at, widening_clock);
            let need_id = matcher.need(entry.requirement, widening);
            let need = &matcher.needs[need_id];
            // May this agent be considered for this conversation in this scope?
            let in_scope = |slot: usize| in_focus || focus_slots.contains(&slot);

            let choice: Option<(usize, WinReason, Option<RankKey>)> =
                if let Some(pinned) = conversation.pinned_agent {
                    slot_of
                        .get(&pinned)
                        .copied()
                        .filter(|&s| in_scope(s) && slots[s].open() && slots[s].meets(need))
                        .map(|s| (s, WinReason::Pinned, None))
                } else {
                    let avoid = conversation
                        .avoid_agent
                        .and_then(|id| slot_of.get(&id).copied());
                    let eligible =
                        |s: usize| Some(s) != avoid && slots[s].auto_open() && slots[s].meets(need);
                    let sticky = conversation
                        .last_agent
                        .filter(|last| settings.sticky_applies(last, now))
                        .and_then(|last| slot_of.get(&last.agent).copied())
                        .filter(|&s| in_scope(s) && eligible(s));
                    // The best candidates by rank (up to three, to find the runner-up).
                    ranked.clear();
                    if in_focus {
                        sets.best(need_id, need, slots, avoid, &mut ranked);
                    } else {
                        for &s in &focus_slots {
                            if eligible(s) {
                                ranked.push(RankKey::of(&slots[s].agent, s));
                            }
                        }
                        ranked.sort_unstable();
                    }
                    match sticky {
                        Some(s) => conversation.last_agent.map(|last| {
                            let runner = ranked.iter().find(|k| k.slot != s).copied();
                            (
                                s,
                                WinReason::Sticky {
                                    served_at: last.served_at,
                                },
                                runner,
                            )
                        }),
                        None => ranked.first().map(|winner| {
                            let runner = ranked.get(1).copied();
                            (winner.slot, winner.win_reason(runner.as_ref()), runner)
                        }),
                    }
                };

            let Some((slot, reason, runner_up)) = choice else {
                continue;
            };
            let considered = match explain {
                ExplainLevel::Summary => Vec::new(),
                ExplainLevel::Full => verdicts(
                    slots,
                    conversation,
                    &matcher.requirement_positions[entry.requirement],
                    widening,
                ),
            };
            let explanation = Explanation {
                reason,
                winner: facts(&slots[slot].agent),
                runner_up: runner_up.map(|k| facts(&slots[k.slot].agent)),
                widening,
                considered,
            };
            decisions.push(Decision {
                conversation: conversation.id,
                agent: slots[slot].agent.id,
                explanation,
            });

            // Apply the assignment so later conversations see it.
            let old = RankKey::of(&slots[slot].agent, slot);
            let agent = &mut slots[slot].agent;
            agent.load += 1;
            agent.last_assigned_at = Some(now);
            let new = RankKey::of(agent, slot);
            let still_open = slots[slot].auto_open();
            sets.moved(slot, old, new, still_open);
            if !slots[slot].open() {
                open_slots -= 1;
            }
        }

        self.dequeue_decided(&decisions);
        decisions
    }

    /// Takes the conversations just decided out of the queue and its indexes.
    fn dequeue_decided(&mut self, decisions: &[Decision]) {
        for decision in decisions {
            if let Some(q) = self.queued.remove(&decision.conversation) {
                let key = QueueKey::of(&q.conversation);
                self.order.remove(&key);
                if let Some(bucket) = self.buckets.get_mut(&q.bucket()) {
                    bucket.remove(&key);
                    if bucket.is_empty() {
                        self.buckets.remove(&q.bucket());
                    }
                }
                self.enqueue_times.remove(&(key.1, key.2));
            }
        }
    }
}

/// An incremental run's focus: the slots of its agents and the queue keys of its waiting
/// conversations, each sorted and without duplicates (both empty for a full run).
fn focus(
    scope: &Scope,
    slot_of: &FxHashMap<AgentId, usize>,
    queued: &FxHashMap<ConversationId, Queued>,
) -> (Vec<usize>, Vec<QueueKey>) {
    let Scope::Incremental {
        agents,
        conversations,
    } = scope
    else {
        return (Vec::new(), Vec::new());
    };
    let mut focus_slots: Vec<usize> = agents
        .iter()
        .filter_map(|id| slot_of.get(id).copied())
        .collect();
    focus_slots.sort_unstable();
    focus_slots.dedup();
    let mut focus_keys: Vec<QueueKey> = conversations
        .iter()
        .filter_map(|id| queued.get(id))
        .map(|q| QueueKey::of(&q.conversation))
        .collect();
    focus_keys.sort_unstable();
    focus_keys.dedup();
    (focus_slots, focus_keys)
}

/// An incremental run's conversations in queue order: the focus conversations merged with the
/// buckets some focus agent could serve at the widest widening the settings allow.
fn incremental_keys<'a>(
    settings: &RoutingSettings,
    matcher: &mut Matcher,
    slots: &[Slot],
    buckets: &'a FxHashMap<BucketKey, BTreeSet<QueueKey>>,
    focus_slots: &[usize],
    focus_keys: &'a [QueueKey],
) -> Box<dyn Iterator<Item = QueueKey> + 'a> {
    let widest = Widening {
        levels_relaxed: settings.relax_levels_after_secs.is_some(),
        optional_dropped: settings.drop_optional_after_secs.is_some(),
    };
    let mut sources: Vec<Box<dyn Iterator<Item = QueueKey> + 'a>> =
        vec![Box::new(focus_keys.iter().copied())];
    let mut relevant: Vec<(&BucketKey, &BTreeSet<QueueKey>)> = buckets
        .iter()
        .filter(|((requirement, pinned), _)| {
            let need_id = matcher.need(*requirement, widest);
            let need = &matcher.needs[need_id];
            focus_slots.iter().any(|&s| {
                let slot = &slots[s];
                let may = match pinned {
                    Some(agent) => slot.agent.id == *agent && slot.open(),
                    None => slot.auto_open(),
                };
                may && slot.meets(need)
            })
        })
        .collect();
    // Deterministic source order (ties are impossible: keys are unique).
    relevant.sort_unstable_by_key(|(key, _)| **key);
    for (_, bucket) in relevant {
        sources.push(Box::new(bucket.iter().copied()));
    }
    Box::new(Merge::new(sources))
}

/// Merges sorted key streams into one sorted stream without duplicates.
struct Merge<'a> {
    sources: Vec<Box<dyn Iterator<Item = QueueKey> + 'a>>,
    heads: BinaryHeap<Reverse<(QueueKey, usize)>>,
    last: Option<QueueKey>,
}

impl<'a> Merge<'a> {
    fn new(mut sources: Vec<Box<dyn Iterator<Item = QueueKey> + 'a>>) -> Self {
        let heads = sources
            .iter_mut()
            .enumerate()
            .filter_map(|(i, source)| source.next().map(|key| Reverse((key, i))))
            .collect();
        Self {
            sources,
            heads,
            last: None,
        }
    }
}

impl Iterator for Merge<'_> {
    type Item = QueueKey;

    fn next(&mut self) -> Option<QueueKey> {
        loop {
            let Reverse((key, source)) = self.heads.pop()?;
            if let Some(next) = self.sources[source].next() {
                self.heads.push(Reverse((next, source)));
            }
            if self.last != Some(key) {
                self.last = Some(key);
                return Some(key);
            }
        }
    }
}

/// Every agent's verdict for a conversation, ranked agents first by rank, then the excluded
/// ones by id: the same list as [`verdicts_of`], computed on compiled skills.
fn verdicts(
    slots: &[Slot],
    conversation: &WaitingConversation,
    positions: &[usize],
    widening: Widening,
) -> Vec<Verdict> {
    let mut ranked: Vec<RankKey> = Vec::new();
    let mut excluded = Vec::new();
    for (index, slot) in slots.iter().enumerate() {
        match slot_exclusion(slot, conversation, positions, widening) {
            None => ranked.push(RankKey::of(&slot.agent, index)),
            Some(reason) => excluded.push((slot.agent.id, reason)),
        }
    }
    ranked.sort_unstable();
    excluded.sort_unstable_by_key(|(agent, _)| *agent);
    ranked
        .into_iter()
        .zip(1..)
        .map(|(key, rank)| Verdict::Ranked {
            rank,
            facts: facts(&slots[key.slot].agent),
        })
        .chain(
            excluded
                .into_iter()
                .map(|(agent, reason)| Verdict::Excluded { agent, reason }),
        )
        .collect()
}

/// [`exclusion`] on a compiled agent (`positions`: the skill position of each requirement).
fn slot_exclusion(
    slot: &Slot,
    conversation: &WaitingConversation,
    positions: &[usize],
    widening: Widening,
) -> Option<Exclusion> {
    let agent = &slot.agent;
    if let Some(reason) = availability_exclusion(agent, conversation) {
        return Some(reason);
    }
    conversation
        .required_skills
        .iter()
        .zip(positions)
        .find_map(|(requirement, &position)| {
            let min_level = effective(requirement, widening)?;
            let skill = || requirement.skill.clone();
            if !slot.held.has(position) {
                return Some(Exclusion::MissingSkill { skill: skill() });
            }
            if !slot.active.has(position) {
                return Some(Exclusion::InactiveSkill { skill: skill() });
            }
            let level = slot.levels.get(position).copied().unwrap_or(0);
            match min_level {
                Some(required) if level < required => Some(Exclusion::LevelTooLow {
                    skill: skill(),
                    level: agent.skills.get(&requirement.skill).and_then(|h| h.level),
                    required,
                }),
                _ => None,
            }
        })
}

/// [`verdicts`] over plain agents: eligible ones by rank, then the excluded ones by id.
pub(crate) fn verdicts_of(
    agents: Vec<&Agent>,
    conversation: &WaitingConversation,
    widening: Widening,
) -> Vec<Verdict> {
    let mut ranked: Vec<&Agent> = Vec::new();
    let mut excluded = Vec::new();
    for agent in agents {
        match exclusion(agent, conversation, widening) {
            None => ranked.push(agent),
            Some(reason) => excluded.push((agent.id, reason)),
        }
    }
    ranked.sort_by(|a, b| compare_rank(a, b));
    excluded.sort_by_key(|(agent, _)| *agent);
    ranked
        .into_iter()
        .zip(1..)
        .map(|(agent, rank)| Verdict::Ranked {
            rank,
            facts: facts(agent),
        })
        .chain(
            excluded
                .into_iter()
                .map(|(agent, reason)| Verdict::Excluded { agent, reason }),
        )
        .collect()
}

/// Per need, the agents eligible for automatic allocation ordered by rank; built lazily.
struct CandidateSets {
    sets: Vec<Option<BTreeSet<RankKey>>>,
    /// The needs each slot is a member of.
    member_of: Vec<Vec<usize>>,
}

impl CandidateSets {
    fn new(slots: usize) -> Self {
        Self {
            sets: Vec::new(),
            member_of: vec![Vec::new(); slots],
        }
    }

    /// Pushes up to three best candidates for a need, skipping `avoid`.
    fn best(
        &mut self,
        need_id: usize,
        need: &Need,
        slots: &[Slot],
        avoid: Option<usize>,
        out: &mut Vec<RankKey>,
    ) {
        if self.sets.len() <= need_id {
            self.sets.resize_with(need_id + 1, || None);
        }
        let member_of = &mut self.member_of;
        let set = self.sets[need_id].get_or_insert_with(|| {
            let mut set = BTreeSet::new();
            for (position, slot) in slots.iter().enumerate() {
                if slot.auto_open() && slot.meets(need) {
                    set.insert(RankKey::of(&slot.agent, position));
                    member_of[position].push(need_id);
                }
            }
            set
        });
        out.extend(
            set.iter()
                .filter(|k| Some(k.slot) != avoid)
                .take(3)
                .copied(),
        );
    }

    /// An agent's key changed (assignment); drop them from every set when no longer open.
    fn moved(&mut self, slot: usize, old: RankKey, new: RankKey, still_open: bool) {
        for &need in &self.member_of[slot] {
            if let Some(Some(set)) = self.sets.get_mut(need) {
                set.remove(&old);
                if still_open {
                    set.insert(new);
                }
            }
        }
        if !still_open {
            self.member_of[slot].clear();
        }
    }
}

/// A fast, non-cryptographic hasher (FxHash) for the engine's internal maps. Keys are ids and
/// tenant-configured names, not attacker-chosen at volume, so flooding resistance is not needed.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let mut rest = [0u8; 8];
        rest[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.add(u64::from_le_bytes(rest));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_i64(&mut self, i: i64) {
        self.add(i as u64);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A `HashMap` with [`FxHasher`].
pub(crate) type FxHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: i64, priority: i32) -> QueueKey {
        let at = DateTime::from_timestamp(1_800_000_000 + id, 0).expect("valid timestamp");
        QueueKey(Reverse(priority), at, ConversationId(id))
    }

    #[test]
    fn merge_yields_keys_in_queue_order_without_duplicates() {
        let a = vec![key(1, 0), key(3, 0)];
        let b = vec![key(2, 0), key(3, 0), key(4, 0)];
        let c = vec![key(9, 5)];
        let merged: Vec<i64> = Merge::new(vec![
            Box::new(a.into_iter()),
            Box::new(b.into_iter()),
            Box::new(c.into_iter()),
        ])
        .map(|k| k.2.0)
        .collect();
        assert_eq!(merged, vec![9, 1, 2, 3, 4]);
    }

    #[test]
    fn masks_and_needs() {
        let mut have = Mask::default();
        have.set(1);
        have.set(70);
        let mut want = Mask::default();
        want.set(70);
        assert!(have.contains_all(&want));
        want.set(2);
        assert!(!have.contains_all(&want));
        assert!(have.contains_all(&Mask::default()));
        assert!(!Mask::default().contains_all(&want));
    }
}
