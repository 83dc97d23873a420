//! The allocator: the lease holder's [`RoutingState`], fed from the database in order.
//!
//! Inputs are the shared tables every replica writes: `conversation_events` (arrivals, picks,
//! transfers, closes, in the same transactions as the changes) and `routing_signals` (agent
//! presence, status, skills, auto-allocate, settings). Each input is turned into an [`Event`]
//! after reading the row it concerns, so the state follows the database rather than the
//! messages; its decisions are persisted with [`Store::commit_routing`] (conditional claims,
//! fenced by the lease epoch) and a claim that loses is resynchronized from its row.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::Error;
use super::convert::{self, Ids};
use crate::config::RoutingDefaults;
use crate::live::LiveHub;
use crate::storage::{
    Claim, EventCursor, EventRow, GENERAL_CATEGORY_ID, OpenConversationRow, Return, Store, from_ms,
};
use contact_routing::{
    AgentId, AgentStatus, Arrival, Categories, CategoryId, ContactId, ConversationId,
    ConversationStatus, Decision, Event, ExplainLevel, Inbound, LastAgent, MatchedBy, RoutingState,
    categorize,
};

/// The periodic sweep (safety net; widening and grace have their own timers).
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// What the caller should do after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Keep going.
    Continue,
    /// Settings or categories changed: rebuild from the database.
    Reload,
}

/// The lease holder's routing state and its position in the input tables.
pub(crate) struct Allocator {
    store: Store,
    holder: String,
    epoch: i64,
    live: Arc<LiveHub>,
    state: RoutingState,
    categories: Categories,
    capacity: u32,
    ids: Ids,
    events: EventCursor,
    signals_from: i64,
    /// Conversations whose claim lost: read their rows again.
    resync: Vec<String>,
    last_sweep: Instant,
    /// How long a transfer waits for its agent before anyone may take it (`None`: no limit).
    pin_fallback: Option<chrono::TimeDelta>,
}

impl Allocator {
    /// Rebuilds the state from the database, then sweeps once.
    pub(crate) async fn load(
        store: Store,
        holder: String,
        epoch: i64,
        defaults: &RoutingDefaults,
        live: Arc<LiveHub>,
    ) -> Result<Self, Error> {
        let now = Utc::now();
        let rows = store.routing_rows(now.timestamp_millis()).await?;
        let mut ids = Ids::default();
        let categories = convert::categories(&rows.categories, GENERAL_CATEGORY_ID, &mut ids);
        let (settings, capacity) = convert::settings(defaults, rows.settings.as_ref());
        // Full explanations: each decision lists every agent's verdict, which is what an admin
        // reads; they cost O(agents) per decision, and decisions come one or a few at a time.
        let mut state =
            RoutingState::new(settings, categories.clone()).with_explain(ExplainLevel::Full);
        for row in &rows.agents {
            let agent = convert::agent(row, capacity, now, None, &mut ids);
            // No conversation is known yet, so registering decides nothing.
            let _ = state.apply(Event::AgentRegistered(agent), now);
        }
        for row in &rows.conversations {
            let Some(data) = convert::conversation(row, &categories, &mut ids) else {
                continue;
            };
            let status = restored_status(row, &mut ids);
            state.restore(data, status);
        }
        let mut allocator = Self {
            store,
            holder,
            epoch,
            live,
            state,
            categories,
            capacity,
            ids,
            events: EventCursor::after(rows.events_from),
            signals_from: rows.signals_from,
            resync: Vec::new(),
            last_sweep: Instant::now(),
            pin_fallback: (defaults.transfer_pin_fallback_secs > 0).then(|| {
                chrono::TimeDelta::seconds(
                    i64::try_from(defaults.transfer_pin_fallback_secs).unwrap_or(i64::MAX / 1000),
                )
            }),
        };
        allocator.apply(Event::Tick, None).await?;
        tracing::info!(
            epoch,
            agents = rows.agents.len(),
            open = rows.conversations.len(),
            "routing: allocator loaded"
        );
        Ok(allocator)
    }

    /// When the allocator needs to run again without being woken.
    pub(crate) fn next_deadline(&self) -> Instant {
        let now = Utc::now();
        let sweep = self.last_sweep + SWEEP_EVERY;
        let timer = self
            .state
            .next_timer(now)
            .map(|at| Instant::now() + (at - now).to_std().unwrap_or(Duration::ZERO));
        timer.map_or(sweep, |t| t.min(sweep))
    }

    /// Reads new signals and events, applies them, fires due timers, persists the decisions.
    pub(crate) async fn step(&mut self) -> Result<Step, Error> {
        loop {
            let signals = self.store.signals_after(self.signals_from, 500).await?;
            if signals.is_empty() {
                break;
            }
            for signal in signals {
                self.signals_from = signal.id;
                match (signal.kind.as_str(), signal.user_id) {
                    ("settings", _) => return Ok(Step::Reload),
                    (_, Some(user)) => self.sync_agent(&user).await?,
                    (_, None) => {}
                }
            }
        }
        loop {
            let rows = self.events.next(&self.store, 500).await?;
            if rows.is_empty() {
                break;
            }
            for row in rows {
                self.on_event(&row).await?;
            }
        }
        self.timers().await?;
        for _ in 0..100 {
            let Some(id) = self.resync.pop() else { break };
            self.sync_conversation(&id).await?;
        }
        Ok(Step::Continue)
    }

    async fn on_event(&mut self, row: &EventRow) -> Result<(), Error> {
        let own = row.data.get("by").and_then(|v| v.as_str()) == Some("routing")
            && row.data.get("epoch").and_then(serde_json::Value::as_i64) == Some(self.epoch);
        if own {
            // Already applied: the state took this decision.
            return Ok(());
        }
        match row.kind.as_str() {
            "conversation_opened" => self.arrive(&row.conversation_id).await,
            "conversation_assigned"
            | "conversation_queued"
            | "conversation_closed"
            | "conversation_reopened" => self.sync_conversation(&row.conversation_id).await,
            _ => Ok(()),
        }
    }

    /// A new conversation: categorize it, then let it arrive.
    async fn arrive(&mut self, id: &str) -> Result<(), Error> {
        let known = self
            .ids
            .conversations
            .get(id)
            .and_then(|c| self.state.status(ConversationId(c)));
        if known.is_some() {
            return Ok(());
        }
        let Some(facts) = self.store.arrival_facts(id).await? else {
            return Ok(());
        };
        if facts.conversation.status != "queued" {
            return self.sync_conversation(id).await;
        }
        let row = &facts.conversation;
        let Ok(channel) = row.channel.parse() else {
            return Ok(());
        };
        let attributes = &facts.contact_attributes;
        let chosen = categorize(
            &self.categories,
            &Inbound {
                channel,
                channel_app: Some(&row.channel_app),
                first_message: &facts.first_message,
                contact_attributes: attributes,
            },
        );
        let stored = row
            .category_id
            .as_deref()
            .and_then(|c| self.ids.categories.get(c))
            .map(CategoryId)
            .filter(|c| self.categories.get(*c).is_some())
            .unwrap_or(self.categories.default.id);
        let category = match chosen.matched_by {
            // A rule matched: it wins over the channel app's default category.
            MatchedBy::Rule { .. } if chosen.category != stored => {
                if let Some(text) = self.ids.categories.text(chosen.category.0) {
                    let text = text.to_owned();
                    self.store.set_conversation_category(id, &text).await?;
                }
                chosen.category
            }
            _ => stored,
        };
        let arrival =
            Arrival {
                id: ConversationId(self.ids.conversations.id(id)),
                contact: ContactId(self.ids.contacts.id(&row.contact_id)),
                channel,
                category,
                last_agent: row.last_agent.as_ref().zip(row.last_agent_closed_at).map(
                    |(agent, at)| LastAgent {
                        agent: AgentId(self.ids.agents.id(agent)),
                        served_at: from_ms(at),
                    },
                ),
            };
        self.apply(Event::ConversationArrived(arrival), None).await
    }

    /// Brings one conversation in line with its row.
    async fn sync_conversation(&mut self, id: &str) -> Result<(), Error> {
        let Some(row) = self.store.routing_conversation(id).await? else {
            return Ok(());
        };
        let Some(data) = convert::conversation(&row, &self.categories, &mut self.ids) else {
            return Ok(());
        };
        let cid = data.id;
        let now = Utc::now();
        let held = self.state.status(cid);
        let category_moved = self
            .state
            .conversation(cid)
            .is_some_and(|known| known.category != data.category);
        match (row.status.as_str(), held) {
            ("closed", Some(ConversationStatus::Waiting | ConversationStatus::Assigned { .. })) => {
                self.apply(Event::ConversationClosed(cid), None).await
            }
            ("assigned", Some(ConversationStatus::Assigned { agent, .. }))
                if row.assigned_user_id.as_deref() == self.ids.agents.text(agent.0) =>
            {
                Ok(())
            }
            ("assigned", Some(_)) => {
                let agent = assignee(&row, &mut self.ids);
                let decisions = self
                    .state
                    .assigned_elsewhere(cid, agent, now)
                    .unwrap_or_default();
                self.persist(Vec::new(), decisions).await
            }
            ("assigned", None) => {
                let status = restored_status(&row, &mut self.ids);
                self.state.restore(data, status);
                Ok(())
            }
            ("queued", None) => {
                self.state.restore(data, ConversationStatus::Waiting);
                self.apply(Event::Tick, None).await
            }
            ("queued", Some(ConversationStatus::Closed { .. })) => {
                self.apply(Event::Reopened(cid), None).await
            }
            // A transfer to an agent who could not take it at once: it waits for them at its
            // old place (the row carries the pin); or its pin changed (dropped after the
            // fallback on another path). The state takes the row as it is and sweeps.
            ("queued", Some(ConversationStatus::Assigned { .. }))
                if row.pinned_user_id.is_some() =>
            {
                self.state.restore(data, ConversationStatus::Waiting);
                self.apply(Event::Tick, None).await
            }
            ("queued", Some(ConversationStatus::Waiting))
                if self.state.conversation(cid).map(|c| c.pinned_agent)
                    != Some(data.pinned_agent) =>
            {
                self.state.restore(data, ConversationStatus::Waiting);
                self.apply(Event::Tick, None).await
            }
            ("queued", Some(_)) if category_moved => {
                let event = Event::TransferToCategory {
                    conversation: cid,
                    category: data.category,
                };
                self.apply(event, None).await
            }
            ("queued", Some(ConversationStatus::Assigned { .. })) => {
                self.apply(Event::Unassigned(cid), None).await
            }
            _ => Ok(()),
        }
    }

    /// Brings one agent in line with the database (presence, status, skills, auto-allocate).
    async fn sync_agent(&mut self, user: &str) -> Result<(), Error> {
        let now = Utc::now();
        let previous = self
            .ids
            .agents
            .get(user)
            .and_then(|a| self.state.agent(AgentId(a)))
            .cloned();
        let agent = match self
            .store
            .routing_agent(user, now.timestamp_millis())
            .await?
        {
            Some(row) => convert::agent(&row, self.capacity, now, previous.as_ref(), &mut self.ids),
            // No longer an agent (role changed): keep the profile, offline.
            None => match previous.clone() {
                Some(mut agent) => {
                    agent.status = AgentStatus::Offline;
                    agent
                }
                None => return Ok(()),
            },
        };
        if let Some(old) = &previous {
            let unchanged = old.status == agent.status
                && old.connection == agent.connection
                && old.auto_allocate == agent.auto_allocate
                && old.capacity == agent.capacity
                && old.skills == agent.skills;
            if unchanged {
                return Ok(());
            }
        }
        let reason = (agent.status == AgentStatus::Offline).then_some("agent_offline");
        self.apply(Event::AgentRegistered(agent), reason).await
    }

    /// Disconnect graces that ran out, widening thresholds crossed, the periodic sweep.
    async fn timers(&mut self) -> Result<(), Error> {
        let now = Utc::now();
        let due = self.state.next_timer(now).is_some_and(|at| at <= now);
        if due {
            let grace = self.state.settings().grace();
            let expired: Vec<AgentId> = self
                .state
                .agents()
                .filter(|a| match a.connection {
                    contact_routing::Connection::Disconnected { since } => since + grace <= now,
                    contact_routing::Connection::Connected => false,
                })
                .filter(|a| self.state.assigned_to(a.id).next().is_some())
                .map(|a| a.id)
                .collect();
            for agent in expired {
                self.apply(Event::GraceExpired(agent), Some("grace_expired"))
                    .await?;
            }
        }
        if due || self.last_sweep.elapsed() >= SWEEP_EVERY {
            self.expire_pins(now).await?;
            self.reconcile().await?;
            self.apply(Event::Tick, None).await?;
        }
        Ok(())
    }

    /// Transfers that waited longer than the fallback for their agent: the pin is dropped in
    /// the database (with a `pin_expired` decision) and in the state; the sweep that follows
    /// offers them to everyone eligible. Checked at each sweep, so at most [`SWEEP_EVERY`] late.
    async fn expire_pins(&mut self, now: chrono::DateTime<Utc>) -> Result<(), Error> {
        let Some(fallback) = self.pin_fallback else {
            return Ok(());
        };
        let cutoff = (now - fallback).timestamp_millis();
        for id in self
            .store
            .expire_pins(cutoff, now.timestamp_millis())
            .await?
        {
            if let Some(row) = self.store.routing_conversation(&id).await?
                && let Some(data) = convert::conversation(&row, &self.categories, &mut self.ids)
            {
                self.state.restore(data, ConversationStatus::Waiting);
            }
        }
        Ok(())
    }

    /// Safety net before each periodic sweep: a conversation the database has in the queue but
    /// the state does not (an input missed, whatever the cause) is read again.
    async fn reconcile(&mut self) -> Result<(), Error> {
        let queued = self.store.queued_conversation_ids().await?;
        let mut fixed = 0;
        for id in queued {
            let waiting = self
                .ids
                .conversations
                .get(&id)
                .and_then(|c| self.state.status(ConversationId(c)))
                == Some(ConversationStatus::Waiting);
            if !waiting {
                fixed += 1;
                match self.ids.conversations.get(&id).map(ConversationId) {
                    Some(_) => self.sync_conversation(&id).await?,
                    None => self.arrive(&id).await?,
                }
            }
        }
        if fixed > 0 {
            tracing::warn!(fixed, "routing: queued conversations the state had missed");
        }
        Ok(())
    }

    /// Applies an event and persists what it decided. `returned` names why conversations that
    /// leave their agent (offline, grace) go back to the queue.
    async fn apply(&mut self, event: Event, returned: Option<&str>) -> Result<(), Error> {
        let now = Utc::now();
        if matches!(event, Event::Tick) {
            self.last_sweep = Instant::now();
        }
        let leaving: Vec<(ConversationId, AgentId)> = match &event {
            Event::AgentOffline(a) | Event::GraceExpired(a) => {
                self.state.assigned_to(*a).map(|c| (c, *a)).collect()
            }
            Event::AgentRegistered(agent) => self
                .state
                .assigned_to(agent.id)
                .map(|c| (c, agent.id))
                .collect(),
            _ => Vec::new(),
        };
        let decisions = match self.state.apply(event, now) {
            Ok(decisions) => decisions,
            Err(e) => {
                // The database is the truth and the event was read from it; a refusal means
                // the state already had it (a replayed event), which is harmless.
                tracing::debug!(error = %e, "routing: event refused by the state");
                return Ok(());
            }
        };
        let returns = leaving
            .into_iter()
            .filter(|(c, a)| {
                !matches!(self.state.status(*c), Some(ConversationStatus::Assigned { agent, .. }) if agent == *a)
            })
            .filter_map(|(c, a)| {
                Some(Return {
                    conversation_id: self.ids.conversations.text(c.0)?.to_owned(),
                    user_id: self.ids.agents.text(a.0)?.to_owned(),
                    reason: returned.unwrap_or("returned").to_owned(),
                })
            })
            .collect();
        self.persist(returns, decisions).await
    }

    /// Writes returns and claims in one transaction; lost claims are read again.
    async fn persist(
        &mut self,
        returns: Vec<Return>,
        decisions: Vec<Decision>,
    ) -> Result<(), Error> {
        if returns.is_empty() && decisions.is_empty() {
            return Ok(());
        }
        let claims: Vec<Claim> = decisions
            .iter()
            .filter_map(|d| {
                Some(Claim {
                    conversation_id: self.ids.conversations.text(d.conversation.0)?.to_owned(),
                    user_id: self.ids.agents.text(d.agent.0)?.to_owned(),
                    reason: convert::reason(&d.explanation.reason),
                    explanation: {
                        let mut v =
                            serde_json::to_value(&d.explanation).unwrap_or(serde_json::Value::Null);
                        convert::name_agents(&mut v, &self.ids.agents);
                        convert::trim_candidates(&mut v);
                        v
                    },
                })
            })
            .collect();
        let won = match self
            .store
            .commit_routing(
                &self.holder,
                self.epoch,
                &returns,
                &claims,
                Some(i64::from(self.capacity)),
            )
            .await
        {
            Ok(won) => won,
            Err(crate::storage::Error::Contended) => return Err(Error::Deposed),
            Err(e) => return Err(e.into()),
        };
        self.live.wake();
        for (claim, won) in claims.into_iter().zip(won) {
            if !won {
                tracing::info!(conversation = %claim.conversation_id, "routing: claim lost, resynchronizing");
                self.resync.push(claim.conversation_id);
            }
        }
        Ok(())
    }
}

fn assignee(row: &OpenConversationRow, ids: &mut Ids) -> AgentId {
    AgentId(ids.agents.id(row.assigned_user_id.as_deref().unwrap_or("")))
}

fn restored_status(row: &OpenConversationRow, ids: &mut Ids) -> ConversationStatus {
    match (row.status.as_str(), row.assigned_user_id.as_deref()) {
        ("assigned", Some(user)) => ConversationStatus::Assigned {
            agent: AgentId(ids.agents.id(user)),
            since: from_ms(row.assigned_at.unwrap_or(row.enqueued_at)),
        },
        _ => ConversationStatus::Waiting,
    }
}
