//! The routing state machine: events in, decisions out.
//!
//! [`RoutingState`] holds, in memory, every agent and every conversation the router knows about
//! and where each conversation is: waiting, assigned to one agent, or closed. [`RoutingState::apply`]
//! applies one [`Event`] and then, when the event can have made a (conversation, agent) pair
//! eligible, runs an allocation and returns its decisions, already applied to the state.
//!
//! Allocation runs after: a conversation arriving, being reopened, returned to the queue (agent
//! offline, disconnect grace expired, unassign, transfer), an agent coming online or reconnecting,
//! capacity being freed (close, unassign, transfer), a skill being activated, auto-allocate
//! being turned on, an agent profile being (re)registered, and [`Event::Tick`] (the periodic sweep,
//! which also picks up skill widening as time passes). Events that only remove eligibility
//! (away, disconnect, skill deactivated, auto-allocate off, closing a waiting conversation) do not
//! run it.
//!
//! Skill widening is evaluated at the instant of the last sweep, not at each event, so that
//! between sweeps eligibility changes only through events and runs can stay incremental. The
//! service sends [`Event::Tick`] at [`RoutingState::next_timer`] (or every few seconds); a
//! widening therefore takes effect at the next sweep. After every accepted event, no waiting
//! conversation has an eligible agent as of the widening clock (the property tests check this).
//!
//! The state is the single writer's view (see `ROUTING.md`): the service feeds it events in
//! order, persists each decision with an atomic claim, and feeds back failures as events.
//! Callers pass non-decreasing `now` values.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{
    engine::{Index, PickError, Scope, check_pick, skill_gap, verdicts_of},
    explain::{Decision, Exclusion, ExplainLevel, Verdict},
    model::{
        Agent, AgentId, AgentStatus, Categories, CategoryId, ChannelType, Connection, ContactId,
        ConversationId, LastAgent, RoutingSettings, SkillRequirement, Snapshot,
        WaitingConversation,
    },
};

/// A conversation that just arrived (already categorized).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arrival {
    /// Stable id.
    pub id: ConversationId,
    /// The customer.
    pub contact: ContactId,
    /// The channel.
    pub channel: ChannelType,
    /// The category from [`super::categorize::categorize`].
    pub category: CategoryId,
    /// The agent who last served the contact, if the caller knows; otherwise the state uses the
    /// last close it saw for this contact.
    pub last_agent: Option<LastAgent>,
}

/// Something that happened. The instant is passed to [`RoutingState::apply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Adds or replaces an agent profile (skills, capacity, status, toggle). The load is kept
    /// from the state, not taken from the profile.
    AgentRegistered(Agent),
    /// A new conversation enters the queue.
    ConversationArrived(Arrival),
    /// The agent set themselves available (and is connected).
    AgentOnline(AgentId),
    /// The agent set themselves away: keeps conversations, gets no new ones.
    AgentAway(AgentId),
    /// The agent logged out: their conversations return to the queue at their old place.
    AgentOffline(AgentId),
    /// The agent's last session dropped: the return-to-queue grace starts.
    AgentDisconnected(AgentId),
    /// A session is back before the grace expired.
    AgentReconnected(AgentId),
    /// The grace of a disconnected agent expired: their conversations return to the queue.
    GraceExpired(AgentId),
    /// The conversation was resolved (frees the agent's capacity).
    ConversationClosed(ConversationId),
    /// An agent toggled a skill they hold.
    SkillToggled {
        /// The agent.
        agent: AgentId,
        /// The skill.
        skill: String,
        /// On or off.
        active: bool,
    },
    /// An agent toggled auto-allocate.
    AutoAllocateToggled {
        /// The agent.
        agent: AgentId,
        /// On or off.
        on: bool,
    },
    /// Hand the conversation to a specific agent: it waits (at its old place) for them only.
    TransferToAgent {
        /// The conversation.
        conversation: ConversationId,
        /// The agent.
        agent: AgentId,
    },
    /// Move the conversation to another category: it returns to the queue at its old place with
    /// the new category's priority and skills.
    TransferToCategory {
        /// The conversation.
        conversation: ConversationId,
        /// The category.
        category: CategoryId,
    },
    /// The agent put the conversation back in the queue (at its old place); it will not be
    /// allocated to them automatically again.
    Unassigned(ConversationId),
    /// The customer wrote again in a closed conversation: it enters the queue anew (queue position
    /// = now), preferring the agent who closed it (sticky).
    Reopened(ConversationId),
    /// Periodic sweep: a full allocation run.
    Tick,
}

/// Why an event was refused (the state is unchanged).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EventError {
    /// No such agent.
    #[error("agent {0} is unknown")]
    UnknownAgent(AgentId),
    /// No such conversation.
    #[error("conversation {0} is unknown")]
    UnknownConversation(ConversationId),
    /// No such category.
    #[error("category {0} is unknown")]
    UnknownCategory(CategoryId),
    /// The conversation id is already known.
    #[error("conversation {0} already exists")]
    DuplicateConversation(ConversationId),
    /// The event needs an assigned conversation.
    #[error("conversation {0} is not assigned")]
    NotAssigned(ConversationId),
    /// The event needs an open conversation.
    #[error("conversation {0} is closed")]
    Closed(ConversationId),
    /// Reopen needs a closed conversation.
    #[error("conversation {0} is not closed")]
    NotClosed(ConversationId),
    /// The agent does not hold this skill.
    #[error("agent {agent} does not hold skill {skill}")]
    UnknownSkill {
        /// The agent.
        agent: AgentId,
        /// The skill.
        skill: String,
    },
    /// Grace expiry for an agent who is connected.
    #[error("agent {0} is connected")]
    NotDisconnected(AgentId),
    /// Grace expiry before the grace is over.
    #[error("agent {agent}'s grace runs until {until}")]
    GraceNotElapsed {
        /// The agent.
        agent: AgentId,
        /// When it ends.
        until: DateTime<Utc>,
    },
    /// The transfer target cannot take the conversation.
    #[error("agent {agent} cannot take conversation {conversation}: {reason}")]
    TransferRejected {
        /// The conversation.
        conversation: ConversationId,
        /// The agent.
        agent: AgentId,
        /// Why.
        reason: Exclusion,
    },
    /// Transfers to offline agents are refused.
    #[error("agent {0} is offline")]
    AgentOffline(AgentId),
}

/// Where a conversation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationStatus {
    /// In the queue.
    Waiting,
    /// With an agent.
    Assigned {
        /// The agent.
        agent: AgentId,
        /// Since when.
        since: DateTime<Utc>,
    },
    /// Resolved.
    Closed {
        /// When.
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone)]
struct Record {
    /// The routing data; for waiting conversations the index holds the same value.
    data: WaitingConversation,
    status: ConversationStatus,
}

/// The in-memory routing state.
#[derive(Debug, Clone)]
pub struct RoutingState {
    settings: RoutingSettings,
    categories: Categories,
    explain: ExplainLevel,
    index: Index,
    records: BTreeMap<ConversationId, Record>,
    assigned: HashMap<AgentId, BTreeSet<ConversationId>>,
    last_agent_by_contact: HashMap<ContactId, LastAgent>,
    /// Skill widening is evaluated at this instant: the last sweep ([`Event::Tick`]).
    widening_clock: Option<DateTime<Utc>>,
}

/// The scope that looks for work for one agent.
fn agents_only(id: AgentId) -> Option<Scope> {
    Some(Scope::Incremental {
        agents: vec![id],
        conversations: vec![],
    })
}

impl RoutingState {
    /// An empty state.
    pub fn new(settings: RoutingSettings, categories: Categories) -> Self {
        Self {
            settings,
            categories,
            explain: ExplainLevel::Summary,
            index: Index::default(),
            records: BTreeMap::new(),
            assigned: HashMap::new(),
            last_agent_by_contact: HashMap::new(),
            widening_clock: None,
        }
    }

    /// Sets how much decisions explain.
    #[must_use]
    pub fn with_explain(mut self, explain: ExplainLevel) -> Self {
        self.explain = explain;
        self
    }

    /// The instant skill widening is evaluated at (the last [`Event::Tick`], or the first event).
    pub fn widening_clock(&self) -> Option<DateTime<Utc>> {
        self.widening_clock
    }

    /// The settings.
    pub fn settings(&self) -> &RoutingSettings {
        &self.settings
    }

    /// An agent.
    pub fn agent(&self, id: AgentId) -> Option<&Agent> {
        self.index.agent(id)
    }

    /// All agents.
    pub fn agents(&self) -> impl Iterator<Item = &Agent> {
        self.index.agents()
    }

    /// Where a conversation is.
    pub fn status(&self, id: ConversationId) -> Option<ConversationStatus> {
        self.records.get(&id).map(|r| r.status)
    }

    /// Every known conversation with its status, in id order.
    pub fn conversations(&self) -> impl Iterator<Item = (ConversationId, ConversationStatus)> + '_ {
        self.records.iter().map(|(id, r)| (*id, r.status))
    }

    /// The routing data of a known conversation.
    pub fn conversation(&self, id: ConversationId) -> Option<&WaitingConversation> {
        self.records.get(&id).map(|r| &r.data)
    }

    /// Waiting conversations in queue order.
    pub fn queue(&self) -> impl Iterator<Item = &WaitingConversation> {
        self.index.waiting_in_order()
    }

    /// Conversations assigned to an agent.
    pub fn assigned_to(&self, agent: AgentId) -> impl Iterator<Item = ConversationId> + '_ {
        self.assigned.get(&agent).into_iter().flatten().copied()
    }

    /// A snapshot for [`super::engine::allocate`] (agents sorted by id, queue in order).
    pub fn snapshot(&self, now: DateTime<Utc>) -> Snapshot {
        let mut agents: Vec<Agent> = self.index.agents().cloned().collect();
        agents.sort_by_key(|a| a.id);
        Snapshot {
            agents,
            waiting: self.index.waiting_in_order().cloned().collect(),
            settings: self.settings.clone(),
            now,
        }
    }

    /// When the service should wake up next: the earliest disconnect grace to expire for an
    /// agent holding conversations (send [`Event::GraceExpired`]), or the first skill-widening
    /// threshold crossed since the last sweep (send [`Event::Tick`]). May be in the past.
    pub fn next_timer(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let grace = self
            .index
            .agents()
            .filter(|a| self.assigned.get(&a.id).is_some_and(|set| !set.is_empty()))
            .filter_map(|a| match a.connection {
                Connection::Disconnected { since } => Some(since + self.settings.grace()),
                Connection::Connected => None,
            })
            .min();
        let widening = if self.index.waiting_len() == 0 {
            None
        } else {
            let clock = self.widening_clock.unwrap_or(now);
            self.index.next_widening(&self.settings, clock)
        };
        grace.into_iter().chain(widening).min()
    }

    /// Applies an event at `now`, then allocates if the event can have made a conversation
    /// routable; returns the decisions (already applied).
    pub fn apply(&mut self, event: Event, now: DateTime<Utc>) -> Result<Vec<Decision>, EventError> {
        self.apply_with(event, now, false)
    }

    /// [`Self::apply`], optionally forcing a full run (tests compare both).
    pub(crate) fn apply_with(
        &mut self,
        event: Event,
        now: DateTime<Utc>,
        force_full: bool,
    ) -> Result<Vec<Decision>, EventError> {
        let sweep = matches!(event, Event::Tick) || self.widening_clock.is_none();
        let scope = self.change(event, now)?;
        if sweep {
            self.widening_clock = Some(now);
        }
        let scope = match scope {
            _ if sweep || force_full => Scope::Full,
            None => return Ok(Vec::new()),
            Some(scope) => scope,
        };
        Ok(self.allocate(now, &scope))
    }

    /// Why a waiting conversation is still waiting: every agent's verdict for it, with widening
    /// at the state's widening clock. `None` when it is not waiting.
    pub fn why_waiting(&self, conversation: ConversationId) -> Option<Vec<Verdict>> {
        let record = self.records.get(&conversation)?;
        if record.status != ConversationStatus::Waiting {
            return None;
        }
        let clock = self.widening_clock?;
        let widening = self.settings.widening(record.data.enqueued_at, clock);
        Some(verdicts_of(
            self.index.agents().collect(),
            &record.data,
            widening,
        ))
    }

    /// A manual pick: the agent takes a waiting conversation.
    pub fn pick(
        &mut self,
        agent: AgentId,
        conversation: ConversationId,
        now: DateTime<Utc>,
    ) -> Result<Decision, PickError> {
        let record = self
            .records
            .get(&conversation)
            .ok_or(PickError::UnknownConversation(conversation))?;
        match record.status {
            ConversationStatus::Waiting => {}
            ConversationStatus::Assigned { agent, .. } => {
                return Err(PickError::AlreadyAssigned {
                    conversation,
                    agent,
                });
            }
            ConversationStatus::Closed { .. } => return Err(PickError::Closed(conversation)),
        }
        let profile = self
            .index
            .agent(agent)
            .ok_or(PickError::UnknownAgent(agent))?;
        let decision = check_pick(profile, &record.data, &self.settings, now)?;
        self.index.dequeue(conversation);
        self.index.update_load(agent, |a| {
            a.load += 1;
            a.last_assigned_at = Some(now);
        });
        self.record_assignment(conversation, agent, now);
        Ok(decision)
    }

    /// Loads a conversation as the database holds it, without allocating (the service rebuilds
    /// the state from a snapshot this way; agents must be registered first so that loads count).
    /// A known conversation is replaced.
    pub fn restore(&mut self, data: WaitingConversation, status: ConversationStatus) {
        let id = data.id;
        if let Some(old) = self.records.get(&id) {
            if let ConversationStatus::Assigned { agent, .. } = old.status {
                self.unassign(id, agent);
            }
            self.index.dequeue(id);
        }
        match status {
            ConversationStatus::Waiting => self.enqueue(data),
            ConversationStatus::Assigned { agent, since } => {
                self.records.insert(id, Record { data, status });
                self.assigned.entry(agent).or_default().insert(id);
                self.index.update_load(agent, |a| {
                    a.load += 1;
                    a.last_assigned_at = a.last_assigned_at.max(Some(since));
                });
            }
            ConversationStatus::Closed { .. } => {
                self.records.insert(id, Record { data, status });
            }
        }
    }

    /// Records that the conversation is with `agent` now because the database says so (a manual
    /// pick or a transfer made on any replica, or a claim the allocator lost), without the
    /// checks of [`Self::pick`]; then allocates for the agent it left, if any.
    pub fn assigned_elsewhere(
        &mut self,
        conversation: ConversationId,
        agent: AgentId,
        now: DateTime<Utc>,
    ) -> Result<Vec<Decision>, EventError> {
        let freed = match self.record(conversation)?.status {
            ConversationStatus::Assigned { agent: held, .. } if held == agent => {
                return Ok(Vec::new());
            }
            ConversationStatus::Assigned { agent: held, .. } => {
                self.unassign(conversation, held);
                Some(held)
            }
            ConversationStatus::Waiting => {
                self.index.dequeue(conversation);
                None
            }
            ConversationStatus::Closed { .. } => None,
        };
        self.index.update_load(agent, |a| {
            a.load += 1;
            a.last_assigned_at = Some(now);
        });
        self.record_assignment(conversation, agent, now);
        Ok(match freed {
            Some(held) => self.allocate(
                now,
                &Scope::Incremental {
                    agents: vec![held],
                    conversations: vec![],
                },
            ),
            None => Vec::new(),
        })
    }

    fn allocate(&mut self, now: DateTime<Utc>, scope: &Scope) -> Vec<Decision> {
        let clock = self.widening_clock.unwrap_or(now);
        let decisions = self
            .index
            .run(&self.settings, now, clock, scope, self.explain);
        for decision in &decisions {
            self.record_assignment(decision.conversation, decision.agent, now);
        }
        decisions
    }

    fn record_assignment(
        &mut self,
        conversation: ConversationId,
        agent: AgentId,
        now: DateTime<Utc>,
    ) {
        if let Some(record) = self.records.get_mut(&conversation) {
            record.status = ConversationStatus::Assigned { agent, since: now };
            record.data.pinned_agent = None;
            record.data.required_skills = category_skills(&self.categories, record.data.category);
            record.data.avoid_agent = None;
        }
        self.assigned.entry(agent).or_default().insert(conversation);
    }

    fn known_agent(&self, id: AgentId) -> Result<&Agent, EventError> {
        self.index.agent(id).ok_or(EventError::UnknownAgent(id))
    }

    fn record(&self, id: ConversationId) -> Result<&Record, EventError> {
        self.records
            .get(&id)
            .ok_or(EventError::UnknownConversation(id))
    }

    /// Applies the event's change; returns the scope of the allocation to run, if any.
    fn change(&mut self, event: Event, now: DateTime<Utc>) -> Result<Option<Scope>, EventError> {
        match event {
            Event::AgentRegistered(agent) => self.agent_registered(agent),
            Event::ConversationArrived(arrival) => self.conversation_arrived(arrival, now),
            Event::AgentOnline(id) => {
                self.known_agent(id)?;
                self.index.update_load(id, |a| {
                    a.status = AgentStatus::Available;
                    a.connection = Connection::Connected;
                });
                Ok(agents_only(id))
            }
            Event::AgentAway(id) => {
                self.known_agent(id)?;
                self.index.update_load(id, |a| a.status = AgentStatus::Away);
                Ok(None)
            }
            Event::AgentOffline(id) => {
                self.known_agent(id)?;
                self.index
                    .update_load(id, |a| a.status = AgentStatus::Offline);
                let returned = self.release_agent(id);
                Ok(Some(Scope::Incremental {
                    agents: vec![],
                    conversations: returned,
                }))
            }
            Event::AgentDisconnected(id) => {
                self.known_agent(id)?;
                // A second disconnect does not extend the grace.
                self.index.update_load(id, |a| {
                    if a.connection == Connection::Connected {
                        a.connection = Connection::Disconnected { since: now };
                    }
                });
                Ok(None)
            }
            Event::AgentReconnected(id) => {
                self.known_agent(id)?;
                self.index
                    .update_load(id, |a| a.connection = Connection::Connected);
                Ok(agents_only(id))
            }
            Event::GraceExpired(id) => self.grace_expired(id, now),
            Event::ConversationClosed(id) => self.conversation_closed(id, now),
            Event::SkillToggled {
                agent,
                skill,
                active,
            } => {
                let profile = self.known_agent(agent)?;
                if !profile.skills.contains_key(&skill) {
                    return Err(EventError::UnknownSkill { agent, skill });
                }
                self.index.update_agent(agent, |a| {
                    if let Some(held) = a.skills.get_mut(&skill) {
                        held.active = active;
                    }
                });
                Ok(if active { agents_only(agent) } else { None })
            }
            Event::AutoAllocateToggled { agent, on } => {
                self.known_agent(agent)?;
                self.index.update_load(agent, |a| a.auto_allocate = on);
                Ok(if on { agents_only(agent) } else { None })
            }
            Event::TransferToAgent {
                conversation,
                agent,
            } => self.transfer_to_agent(conversation, agent, now),
            Event::TransferToCategory {
                conversation,
                category,
            } => self.transfer_to_category(conversation, category),
            Event::Unassigned(conversation) => self.unassigned(conversation),
            Event::Reopened(conversation) => self.reopened(conversation, now),
            Event::Tick => Ok(Some(Scope::Full)),
        }
    }

    /// Adds or replaces an agent; an offline one returns what it held.
    fn agent_registered(&mut self, mut agent: Agent) -> Result<Option<Scope>, EventError> {
        let id = agent.id;
        agent.load = self.assigned.get(&id).map_or(0, |set| set.len() as u32);
        if let Some(old) = self.index.agent(id) {
            agent.last_assigned_at = agent.last_assigned_at.max(old.last_assigned_at);
        }
        let offline = agent.status == AgentStatus::Offline;
        self.index.put_agent(agent);
        if offline {
            // Offline agents hold no conversations.
            let returned = self.release_agent(id);
            return Ok(Some(Scope::Incremental {
                agents: vec![],
                conversations: returned,
            }));
        }
        Ok(agents_only(id))
    }

    /// Queues a new conversation with its category's requirements.
    fn conversation_arrived(
        &mut self,
        arrival: Arrival,
        now: DateTime<Utc>,
    ) -> Result<Option<Scope>, EventError> {
        if self.records.contains_key(&arrival.id) {
            return Err(EventError::DuplicateConversation(arrival.id));
        }
        let category = self
            .categories
            .get(arrival.category)
            .ok_or(EventError::UnknownCategory(arrival.category))?;
        let data = WaitingConversation {
            id: arrival.id,
            contact: arrival.contact,
            channel: arrival.channel,
            category: category.id,
            priority: category.priority,
            required_skills: category.required_skills.clone(),
            enqueued_at: now,
            last_agent: arrival
                .last_agent
                .or_else(|| self.last_agent_by_contact.get(&arrival.contact).copied()),
            pinned_agent: None,
            avoid_agent: None,
        };
        let id = data.id;
        self.enqueue(data);
        Ok(Some(Scope::Incremental {
            agents: vec![],
            conversations: vec![id],
        }))
    }

    /// Returns a disconnected agent's conversations once the grace has elapsed.
    fn grace_expired(
        &mut self,
        id: AgentId,
        now: DateTime<Utc>,
    ) -> Result<Option<Scope>, EventError> {
        let agent = self.known_agent(id)?;
        let Connection::Disconnected { since } = agent.connection else {
            return Err(EventError::NotDisconnected(id));
        };
        let until = since + self.settings.grace();
        if now < until {
            return Err(EventError::GraceNotElapsed { agent: id, until });
        }
        let returned = self.release_agent(id);
        Ok(Some(Scope::Incremental {
            agents: vec![],
            conversations: returned,
        }))
    }

    /// Closes a conversation, freeing its agent and remembering them for the contact.
    fn conversation_closed(
        &mut self,
        id: ConversationId,
        now: DateTime<Utc>,
    ) -> Result<Option<Scope>, EventError> {
        let status = self.record(id)?.status;
        let freed = match status {
            ConversationStatus::Closed { .. } => return Err(EventError::Closed(id)),
            ConversationStatus::Waiting => {
                self.index.dequeue(id);
                None
            }
            ConversationStatus::Assigned { agent, .. } => {
                self.unassign(id, agent);
                let last = LastAgent {
                    agent,
                    served_at: now,
                };
                self.last_agent_by_contact
                    .insert(record_contact(&self.records, id), last);
                if let Some(r) = self.records.get_mut(&id) {
                    r.data.last_agent = Some(last);
                }
                Some(agent)
            }
        };
        if let Some(r) = self.records.get_mut(&id) {
            r.status = ConversationStatus::Closed { at: now };
        }
        Ok(freed.and_then(agents_only))
    }

    /// Pins a conversation to an agent who may take it.
    fn transfer_to_agent(
        &mut self,
        conversation: ConversationId,
        agent: AgentId,
        now: DateTime<Utc>,
    ) -> Result<Option<Scope>, EventError> {
        let target = self.known_agent(agent)?;
        if target.status == AgentStatus::Offline {
            return Err(EventError::AgentOffline(agent));
        }
        let record = self.record(conversation)?;
        let widening = self.settings.widening(record.data.enqueued_at, now);
        if let Some(reason) = skill_gap(target, &record.data.required_skills, widening) {
            return Err(EventError::TransferRejected {
                conversation,
                agent,
                reason,
            });
        }
        let freed = self.back_to_queue(conversation, |data| {
            data.pinned_agent = Some(agent);
            data.avoid_agent = None;
        })?;
        Ok(Some(Scope::Incremental {
            agents: freed.into_iter().collect(),
            conversations: vec![conversation],
        }))
    }

    /// Requeues a conversation under another category, avoiding the agent who had it.
    fn transfer_to_category(
        &mut self,
        conversation: ConversationId,
        category: CategoryId,
    ) -> Result<Option<Scope>, EventError> {
        let category = self
            .categories
            .get(category)
            .ok_or(EventError::UnknownCategory(category))?
            .clone();
        self.record(conversation)?;
        let from = match self.records[&conversation].status {
            ConversationStatus::Assigned { agent, .. } => Some(agent),
            _ => None,
        };
        let freed = self.back_to_queue(conversation, |data| {
            data.category = category.id;
            data.priority = category.priority;
            data.required_skills = category.required_skills.clone();
            data.pinned_agent = None;
            data.avoid_agent = from;
        })?;
        Ok(Some(Scope::Incremental {
            agents: freed.into_iter().collect(),
            conversations: vec![conversation],
        }))
    }

    /// Returns an assigned conversation to the queue, avoiding its agent.
    fn unassigned(&mut self, conversation: ConversationId) -> Result<Option<Scope>, EventError> {
        let from = match self.record(conversation)?.status {
            ConversationStatus::Assigned { agent, .. } => agent,
            ConversationStatus::Closed { .. } => {
                return Err(EventError::Closed(conversation));
            }
            ConversationStatus::Waiting => {
                return Err(EventError::NotAssigned(conversation));
            }
        };
        let skills = category_skills(&self.categories, self.record(conversation)?.data.category);
        self.back_to_queue(conversation, |data| {
            data.pinned_agent = None;
            data.required_skills = skills;
            data.avoid_agent = Some(from);
        })?;
        Ok(Some(Scope::Incremental {
            agents: vec![from],
            conversations: vec![conversation],
        }))
    }

    /// Queues a closed conversation again.
    fn reopened(
        &mut self,
        conversation: ConversationId,
        now: DateTime<Utc>,
    ) -> Result<Option<Scope>, EventError> {
        let record = self.record(conversation)?;
        if !matches!(record.status, ConversationStatus::Closed { .. }) {
            return Err(EventError::NotClosed(conversation));
        }
        let mut data = record.data.clone();
        data.enqueued_at = now;
        data.pinned_agent = None;
        data.required_skills = category_skills(&self.categories, data.category);
        data.avoid_agent = None;
        self.enqueue(data);
        Ok(Some(Scope::Incremental {
            agents: vec![],
            conversations: vec![conversation],
        }))
    }

    fn enqueue(&mut self, data: WaitingConversation) {
        self.index.enqueue(data.clone());
        self.records.insert(
            data.id,
            Record {
                data,
                status: ConversationStatus::Waiting,
            },
        );
    }

    /// Removes an assignment and frees the agent's capacity.
    fn unassign(&mut self, conversation: ConversationId, agent: AgentId) {
        if let Some(set) = self.assigned.get_mut(&agent) {
            set.remove(&conversation);
        }
        self.index
            .update_load(agent, |a| a.load = a.load.saturating_sub(1));
    }

    /// Puts an open conversation back in the queue at its old place after `change`; returns the
    /// agent whose capacity was freed, if it was assigned.
    fn back_to_queue(
        &mut self,
        conversation: ConversationId,
        change: impl FnOnce(&mut WaitingConversation),
    ) -> Result<Option<AgentId>, EventError> {
        let record = self.record(conversation)?;
        let freed = match record.status {
            ConversationStatus::Closed { .. } => return Err(EventError::Closed(conversation)),
            ConversationStatus::Waiting => None,
            ConversationStatus::Assigned { agent, .. } => Some(agent),
        };
        if let Some(agent) = freed {
            self.unassign(conversation, agent);
        }
        let mut data = self.records[&conversation].data.clone();
        change(&mut data);
        self.enqueue(data);
        Ok(freed)
    }

    /// Returns all of an agent's conversations to the queue (old places) and drops transfers
    /// waiting for them; returns the conversations that re-entered the queue.
    fn release_agent(&mut self, agent: AgentId) -> Vec<ConversationId> {
        let mut returned: Vec<ConversationId> =
            self.assigned.remove(&agent).into_iter().flatten().collect();
        self.index.update_load(agent, |a| a.load = 0);
        for id in &returned {
            let mut data = self.records[id].data.clone();
            data.pinned_agent = None;
            data.required_skills = category_skills(&self.categories, data.category);
            self.enqueue(data);
        }
        let pinned: Vec<ConversationId> = self
            .index
            .waiting_in_order()
            .filter(|c| c.pinned_agent == Some(agent))
            .map(|c| c.id)
            .collect();
        for id in pinned {
            let mut data = self.records[&id].data.clone();
            data.pinned_agent = None;
            data.required_skills = category_skills(&self.categories, data.category);
            self.enqueue(data);
            returned.push(id);
        }
        returned
    }
}

fn record_contact(records: &BTreeMap<ConversationId, Record>, id: ConversationId) -> ContactId {
    records[&id].data.contact
}

/// The skills a conversation of `category` requires. A pin is the only thing that may set them
/// aside (a transfer that overrode them, `pin_overrides_skills`), so every path that drops a pin
/// puts them back from here.
fn category_skills(categories: &Categories, category: CategoryId) -> Vec<SkillRequirement> {
    categories
        .get(category)
        .unwrap_or(&categories.default)
        .required_skills
        .clone()
}
