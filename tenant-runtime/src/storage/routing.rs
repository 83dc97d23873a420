//! What the routing service reads and writes: the snapshot it rebuilds its state from, the
//! allocator lease, atomic claims with their explanations, returns to the queue, agent presence
//! and status, and the signals that tell the allocator an agent changed.
//!
//! Every claim is one conditional `UPDATE … WHERE status = 'queued'` in a transaction that also
//! checks the caller still holds the lease epoch (`FOR SHARE` on PostgreSQL, so a takeover waits
//! for the claim to commit) and writes the `conversation_events` row that `http::live` pushes.

use std::collections::HashMap;

use super::dialect::lock_user;
use super::{
    AsConn, Conn, Error, Result, Store, WriteTx, from_ms, level, now_ms, on_driver, push_event,
};
use crate::domain::api::DecisionRecord;

/// Replaces a conversation's skill requirements with its category's, inside the caller's
/// transaction.
async fn replace_skills(conn: &mut Conn<'_>, id: &str, category: &str) -> Result<()> {
    on_driver!(conn, |c| {
        sqlx::query("DELETE FROM conversation_skills WHERE conversation_id = $1")
            .bind(id)
            .execute(&mut **c)
            .await?;
        sqlx::query(
            "INSERT INTO conversation_skills (conversation_id, skill_id) SELECT $1, skill_id FROM category_skills WHERE category_id = $2",
        )
        .bind(id)
        .bind(category)
        .execute(&mut **c)
        .await?;
    });
    Ok(())
}

/// The lease row's name: one allocator per tenant database.
pub(crate) const LEASE: &str = "allocator";

/// An agent as stored, for the routing snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRow {
    /// User id.
    pub user_id: String,
    /// Auto-allocate switch.
    pub auto_allocate: bool,
    /// `available`, `away` or `offline`.
    pub status: String,
    /// Skills held.
    pub skills: Vec<HeldSkill>,
    /// Live Workspace sessions on replicas with a fresh heartbeat.
    pub sessions: i64,
    /// When the agent's presence last changed (epoch ms), if ever.
    pub presence_changed_at: Option<i64>,
    /// When the agent last received a conversation (epoch ms), if ever.
    pub last_assigned_at: Option<i64>,
}

/// An open conversation as stored, for the routing snapshot.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OpenConversationRow {
    /// Id.
    pub id: String,
    /// Contact.
    pub contact_id: String,
    /// Channel (`WHATSAPP`, …).
    pub channel: String,
    /// Channel app.
    pub channel_app: String,
    /// Category.
    pub category_id: Option<String>,
    /// `queued` or `assigned` (or `closed` for a single-row read).
    pub status: String,
    /// Assignee.
    pub assigned_user_id: Option<String>,
    /// Queue position (epoch ms).
    pub enqueued_at: i64,
    /// Assigned at (epoch ms).
    pub assigned_at: Option<i64>,
    /// Transfer target.
    pub pinned_user_id: Option<String>,
    /// The transfer to `pinned_user_id` overrode the category's required skills (`force`).
    pub pin_overrides_skills: bool,
    /// The agent who put it back.
    pub avoid_user_id: Option<String>,
    /// The agent who last closed a conversation with this contact.
    pub last_agent: Option<String>,
    /// When that conversation closed (epoch ms).
    pub last_agent_closed_at: Option<i64>,
}

/// A category as stored, for the routing snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CategoryRow {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Priority.
    pub priority: i64,
    /// Rules (JSON, see `workspace::CategoryRule`).
    pub rules: Vec<crate::domain::CategoryRule>,
    /// Required skills.
    pub skills: Vec<NeededSkill>,
}

/// A skill an agent holds, for the routing snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldSkill {
    /// Skill name.
    pub name: String,
    /// Switched on by the agent.
    pub active: bool,
    /// Proficiency 1..=5, if an admin set one.
    pub level: Option<u8>,
}

/// A skill a category requires, for the routing snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NeededSkill {
    /// Skill name.
    pub name: String,
    /// Minimum proficiency, if any.
    pub min_level: Option<u8>,
    /// Dropped after the optional-skill wait.
    pub optional: bool,
}

/// A skill an agent holds, as read.
#[derive(sqlx::FromRow)]
struct HeldSkillRow {
    name: String,
    active: bool,
    level: Option<i64>,
}

impl From<HeldSkillRow> for HeldSkill {
    fn from(r: HeldSkillRow) -> Self {
        HeldSkill {
            name: r.name,
            active: r.active,
            level: level(r.level),
        }
    }
}

/// A skill a category requires, as read.
#[derive(sqlx::FromRow)]
struct NeededSkillRow {
    name: String,
    min_level: Option<i64>,
    optional: bool,
}

impl From<NeededSkillRow> for NeededSkill {
    fn from(r: NeededSkillRow) -> Self {
        NeededSkill {
            name: r.name,
            min_level: level(r.min_level),
            optional: r.optional,
        }
    }
}

/// Everything the routing service rebuilds its state from.
#[derive(Debug, Clone, Default)]
pub(crate) struct RoutingRows {
    /// Agents (users with the agent role).
    pub agents: Vec<AgentRow>,
    /// Open conversations.
    pub conversations: Vec<OpenConversationRow>,
    /// Categories in configured (creation) order.
    pub categories: Vec<CategoryRow>,
    /// The tenant's `routing` setting, if an admin saved one.
    pub settings: Option<serde_json::Value>,
    /// The newest conversation event when the rows were read.
    pub events_from: i64,
    /// The newest routing signal when the rows were read.
    pub signals_from: i64,
}

/// What categorization looks at for a new conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArrivalFacts {
    /// The conversation as stored.
    pub conversation: OpenConversationRow,
    /// The text of its first customer message (empty for media without caption, …).
    pub first_message: String,
    /// The contact's attributes, for rules on them.
    pub contact_attributes: std::collections::BTreeMap<String, String>,
}

/// One decision to persist.
#[derive(Debug, Clone)]
pub struct Claim {
    /// Conversation.
    pub conversation_id: String,
    /// Agent.
    pub user_id: String,
    /// `WinReason` in snake case.
    pub reason: String,
    /// The explanation (JSON).
    pub explanation: serde_json::Value,
}

/// A conversation the allocator put back in the queue (agent offline, grace expired).
#[derive(Debug, Clone)]
pub struct Return {
    /// Conversation.
    pub conversation_id: String,
    /// The agent it left.
    pub user_id: String,
    /// Why (`agent_offline`, `grace_expired`).
    pub reason: String,
}

/// A routing signal: an agent-level change.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct Signal {
    /// Id (monotonic).
    pub id: i64,
    /// The agent, when the signal is about one.
    pub user_id: Option<String>,
    /// `presence`, `status`, `skills`, `auto_allocate`, `settings`.
    pub kind: String,
}

/// A transfer to a named agent, as the caller asks for it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AgentTransfer<'a> {
    /// The conversation.
    pub conversation_id: &'a str,
    /// Only if assigned to this user (an agent transfers only their own).
    pub owner: Option<&'a str>,
    /// The target agent.
    pub to: &'a str,
    /// Who transfers it (a user id, or `api`).
    pub by: &'a str,
    /// How many conversations the target may hold.
    pub capacity: i64,
    /// After how long a pin to a target who cannot take it falls back (`None`: never).
    pub fallback_secs: Option<u64>,
    /// Now (epoch ms).
    pub now: i64,
}

/// What a transfer's transaction reads about its target, for the caller's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TransferTarget {
    /// The target's stored status (`None`: never set one).
    pub status: Option<String>,
    /// The target's live Workspace sessions on replicas with a fresh heartbeat.
    pub sessions: i64,
    /// Conversations the target holds, this one aside.
    pub load: i64,
    /// What the conversation's category requires, by skill name.
    pub required: Vec<NeededSkill>,
    /// What the target holds.
    pub held: Vec<HeldSkill>,
}

/// The caller's decision on a transfer, over a [`TransferTarget`]; `M` names the unmet skill
/// requirements (the routing core's exclusions), which storage records as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TransferPlan<M> {
    /// Change nothing, answer this.
    Refuse(TransferOutcome<M>),
    /// Hand it over now (`waiting_for: None`), or queue it pinned to the target.
    Proceed {
        /// Why the target cannot take it now (`away`, `disconnected`, `at_capacity`).
        waiting_for: Option<&'static str>,
        /// The unmet requirements a forced transfer overrode.
        overridden: Option<M>,
    },
}

/// What a transfer to a named agent did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TransferOutcome<M> {
    /// The agent had room: the conversation is theirs now.
    Assigned,
    /// The agent is `away`, `disconnected` or `at_capacity`: the conversation is back in the
    /// queue at its old place, pinned to them.
    Waiting {
        /// Why they could not take it now.
        because: &'static str,
    },
    /// The agent is offline: nothing changed.
    AgentOffline,
    /// The agent does not meet the conversation's required skills and the transfer was not
    /// forced: nothing changed.
    LacksSkills {
        /// Every unmet requirement, in the category's order.
        missing: M,
    },
    /// The conversation is not assigned (to the caller, when one was given): nothing changed.
    NotAssigned,
}

/// The decision a transfer records beside its event: none for a plain hand-over, one that says
/// who overrode the skill requirement for a forced one, `waiting_for_agent` for a pin.
fn transfer_explanation(
    t: &AgentTransfer<'_>,
    target: &TransferTarget,
    waiting_for: Option<&'static str>,
    overridden: Option<&serde_json::Value>,
) -> Option<(&'static str, serde_json::Value)> {
    match (waiting_for, overridden) {
        (None, None) => None,
        // A direct hand-over leaves no decision otherwise; one that overrode the requirement
        // must say so, and who did it.
        (None, Some(overridden)) => Some((
            "skills_overridden",
            serde_json::json!({
                "reason": "skills_overridden",
                "transferred_to": t.to,
                "transferred_by": t.by,
                "skills_overridden": overridden,
            }),
        )),
        (Some(because), overridden) => Some((
            "waiting_for_agent",
            serde_json::json!({
                "reason": "waiting_for_agent",
                "waiting_for": t.to,
                "because": because,
                "load": target.load,
                "capacity": t.capacity,
                "transferred_by": t.by,
                "fallback_after_secs": t.fallback_secs,
                "skills_overridden": overridden,
            }),
        )),
    }
}

/// Reads a transfer's [`TransferTarget`] inside the caller's transaction.
async fn transfer_target(conn: &mut Conn<'_>, t: &AgentTransfer<'_>) -> Result<TransferTarget> {
    on_driver!(conn, |c| {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM routing_agents WHERE user_id = $1")
                .bind(t.to)
                .fetch_optional(&mut **c)
                .await?;
        let sessions: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(p.sessions), 0) AS BIGINT) FROM routing_presence p \
             JOIN routing_replicas r ON r.replica = p.replica WHERE p.user_id = $1 AND r.seen_at >= $2",
        )
        .bind(t.to)
        .bind(t.now - REPLICA_STALE_MS)
        .fetch_one(&mut **c)
        .await?;
        let load: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM conversations WHERE assigned_user_id = $1 AND status = 'assigned' AND id <> $2",
        )
        .bind(t.to)
        .bind(t.conversation_id)
        .fetch_one(&mut **c)
        .await?;
        // Read in the transaction, so the verdict is about the skills the commit sees.
        let required: Vec<NeededSkillRow> = sqlx::query_as(
            "SELECT s.name, cs.min_level, cs.optional FROM conversations c \
             JOIN category_skills cs ON cs.category_id = COALESCE(c.category_id, $2) \
             JOIN skills s ON s.id = cs.skill_id WHERE c.id = $1 ORDER BY s.name",
        )
        .bind(t.conversation_id)
        .bind(super::GENERAL_CATEGORY_ID)
        .fetch_all(&mut **c)
        .await?;
        let held: Vec<HeldSkillRow> = sqlx::query_as(
            "SELECT s.name, us.active, us.level FROM user_skills us JOIN skills s ON s.id = us.skill_id WHERE us.user_id = $1",
        )
        .bind(t.to)
        .fetch_all(&mut **c)
        .await?;
        Ok(TransferTarget {
            status,
            sessions,
            load,
            required: required.into_iter().map(NeededSkill::from).collect(),
            held: held.into_iter().map(HeldSkill::from).collect(),
        })
    })
}

/// Why a manual pick was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickRefusal {
    /// Someone else was faster, or it is not queued.
    NotQueued {
        /// Current status.
        status: String,
    },
    /// The agent already holds `capacity` open conversations.
    AtCapacity {
        /// Open conversations.
        load: i64,
        /// Capacity.
        capacity: i64,
    },
    /// It was transferred to another agent.
    PinnedToOther {
        /// That agent.
        user_id: String,
    },
}

/// A category as read (its rules still JSON text).
#[derive(sqlx::FromRow)]
struct CategoryRecord {
    id: String,
    name: String,
    priority: i64,
    rules: String,
}

/// One skill a category requires, by category.
#[derive(sqlx::FromRow)]
struct CategorySkillRow {
    category_id: String,
    name: String,
    min_level: Option<i64>,
    optional: bool,
}

/// A queued conversation whose pin is due to expire.
#[derive(sqlx::FromRow)]
struct PinRow {
    id: String,
    pinned_user_id: String,
    pinned_at: i64,
}

/// Why a pick lost: the conversation's state and the agent's load.
#[derive(sqlx::FromRow)]
struct PickState {
    status: String,
    pinned_user_id: Option<String>,
    load: i64,
}

/// A routing decision as read, with the agent's name.
#[derive(sqlx::FromRow)]
struct DecisionRow {
    id: i64,
    user_id: Option<String>,
    user_name: Option<String>,
    kind: String,
    reason: String,
    explanation: String,
    created_at: i64,
}

/// An agent as read, before their skills and presence are joined in.
#[derive(sqlx::FromRow)]
struct AgentRecord {
    id: String,
    auto_allocate: bool,
    status: Option<String>,
    last_assigned_at: Option<i64>,
}

/// One skill an agent holds, by agent.
#[derive(sqlx::FromRow)]
struct UserSkillRow {
    user_id: String,
    name: String,
    active: bool,
    level: Option<i64>,
}

/// An agent's live sessions on fresh replicas and when their presence last changed.
#[derive(sqlx::FromRow)]
struct PresenceRow {
    user_id: String,
    sessions: i64,
    changed_at: Option<i64>,
}

/// The columns of an [`OpenConversationRow`], named as its fields (a macro so that queries stay
/// `&'static str`).
macro_rules! conversation_columns {
    () => {
        "c.id, c.contact_id, c.channel, c.channel_app, c.category_id, c.status, c.assigned_user_id, \
     COALESCE(c.enqueued_at, c.created_at) AS enqueued_at, c.assigned_at, c.pinned_user_id, c.pin_overrides_skills, c.avoid_user_id, \
     (SELECT x.assigned_user_id FROM conversations x WHERE x.contact_id = c.contact_id AND x.status = 'closed' AND x.assigned_user_id IS NOT NULL ORDER BY x.closed_at DESC LIMIT 1) AS last_agent, \
     (SELECT x.closed_at FROM conversations x WHERE x.contact_id = c.contact_id AND x.status = 'closed' AND x.assigned_user_id IS NOT NULL ORDER BY x.closed_at DESC LIMIT 1) AS last_agent_closed_at"
    };
}

/// Claims queued conversation `$3` for agent `$1` at `$2`, unless it is pinned to someone else or
/// the agent already holds `$4` assigned conversations (`NULL`: no limit).
const CLAIM: &str = "UPDATE conversations SET status = 'assigned', assigned_user_id = $1, assigned_at = $2, updated_at = $2, pinned_user_id = NULL, avoid_user_id = NULL \
     WHERE id = $3 AND status = 'queued' AND (pinned_user_id IS NULL OR pinned_user_id = $1) \
     AND ($4 IS NULL OR (SELECT COUNT(*) FROM conversations o WHERE o.assigned_user_id = $1 AND o.status = 'assigned') < $4)";

/// A routing decision, recorded in the transaction that carries it out.
struct NewDecision<'a> {
    conversation_id: &'a str,
    /// The agent it went to (none for a transfer to a category).
    user_id: Option<&'a str>,
    /// `automatic`, `manual`, `returned` or `transfer`.
    kind: &'a str,
    reason: &'a str,
    /// JSON text.
    explanation: String,
    /// The allocator's lease epoch (automatic decisions and returns only).
    epoch: Option<i64>,
    at: i64,
}

/// Inserts `d` into `routing_decisions` inside the caller's transaction.
async fn record_decision(conn: &mut Conn<'_>, d: NewDecision<'_>) -> Result<()> {
    on_driver!(conn, |c| {
        sqlx::query(
            "INSERT INTO routing_decisions (conversation_id, user_id, kind, reason, explanation, epoch, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(d.conversation_id)
        .bind(d.user_id)
        .bind(d.kind)
        .bind(d.reason)
        .bind(d.explanation)
        .bind(d.epoch)
        .bind(d.at)
        .execute(&mut **c)
        .await?;
    });
    Ok(())
}

/// Records decision `d` and appends its conversation's `kind` event (`data` is JSON text), both
/// inside the caller's transaction: a decision never commits without the event the live stream
/// and the allocator read, nor the event without its decision.
async fn record_with_event(
    conn: &mut Conn<'_>,
    kind: &str,
    data: String,
    d: NewDecision<'_>,
) -> Result<()> {
    push_event(conn, d.conversation_id, kind, data, d.at).await?;
    record_decision(conn, d).await
}

/// Heartbeats older than this do not count: the replica's sessions are over.
pub(crate) const REPLICA_STALE_MS: i64 = 30_000;

impl Store {
    /// Reads everything the routing service rebuilds its state from. The event and signal
    /// positions are read first, so replaying from them after the rows never misses a change.
    pub(crate) async fn routing_rows(&self, now: i64) -> Result<RoutingRows> {
        let events_from = self.last_event_id().await?;
        let signals_from = self.last_signal_id().await?;
        let agents = self.routing_rows_agents(now).await?;
        let (conversations, categories, category_skills): (
            Vec<OpenConversationRow>,
            Vec<CategoryRecord>,
            Vec<CategorySkillRow>,
        ) = on_driver!(self, |pool| {
            let conversations = sqlx::query_as(concat!(
                "SELECT ",
                conversation_columns!(),
                " FROM conversations c WHERE c.status <> 'closed' ORDER BY c.id"
            ))
            .fetch_all(pool)
            .await?;
            let categories = sqlx::query_as(
                "SELECT id, name, priority, rules FROM categories ORDER BY created_at, id",
            )
            .fetch_all(pool)
            .await?;
            let category_skills = sqlx::query_as(
                "SELECT cs.category_id, s.name, cs.min_level, cs.optional FROM category_skills cs JOIN skills s ON s.id = cs.skill_id ORDER BY s.name",
            )
            .fetch_all(pool)
            .await?;
            (conversations, categories, category_skills)
        });
        let mut skills_of_category: HashMap<String, Vec<NeededSkill>> = HashMap::new();
        for s in category_skills {
            skills_of_category
                .entry(s.category_id)
                .or_default()
                .push(NeededSkill {
                    name: s.name,
                    min_level: level(s.min_level),
                    optional: s.optional,
                });
        }
        let categories = categories
            .into_iter()
            .map(|c| {
                Ok(CategoryRow {
                    rules: serde_json::from_str(&c.rules)
                        .map_err(|e| Error::Corrupt(format!("category rules: {e}")))?,
                    skills: skills_of_category.remove(&c.id).unwrap_or_default(),
                    id: c.id,
                    name: c.name,
                    priority: c.priority,
                })
            })
            .collect::<Result<_>>()?;
        Ok(RoutingRows {
            agents,
            conversations,
            categories,
            settings: self.tenant_setting("routing").await?,
            events_from,
            signals_from,
        })
    }

    /// One conversation as routing sees it (any status).
    pub async fn routing_conversation(&self, id: &str) -> Result<Option<OpenConversationRow>> {
        Ok(on_driver!(self, |pool| sqlx::query_as(concat!(
            "SELECT ",
            conversation_columns!(),
            " FROM conversations c WHERE c.id = $1"
        ))
        .bind(id)
        .fetch_optional(pool)
        .await?))
    }

    /// A conversation and the text of its first customer message, for categorization.
    pub(crate) async fn arrival_facts(&self, id: &str) -> Result<Option<ArrivalFacts>> {
        let Some(conversation) = self.routing_conversation(id).await? else {
            return Ok(None);
        };
        let content: Option<String> = on_driver!(self, |pool| {
            sqlx::query_scalar(
            "SELECT content FROM messages WHERE conversation_id = $1 AND direction = 'inbound' ORDER BY created_at, id LIMIT 1"
        )
        .bind(id)
        .fetch_optional(pool)
        .await?
        });
        let first_message = content
            .and_then(|c| serde_json::from_str::<crate::domain::MessageContent>(&c).ok())
            .map(|c| match c {
                crate::domain::MessageContent::Text { text } => text,
                crate::domain::MessageContent::Media { caption, .. } => caption.unwrap_or_default(),
                _ => String::new(),
            })
            .unwrap_or_default();
        let contact_attributes = self.contact_attributes(&conversation.contact_id).await?;
        Ok(Some(ArrivalFacts {
            conversation,
            first_message,
            contact_attributes,
        }))
    }

    /// Moves a queued conversation into the category categorization chose (skills follow).
    pub(crate) async fn set_conversation_category(
        &self,
        id: &str,
        category_id: &str,
    ) -> Result<bool> {
        Ok(on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let n = sqlx::query(
                "UPDATE conversations SET category_id = $1 WHERE id = $2 AND status = 'queued'",
            )
            .bind(category_id)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                replace_skills(&mut tx.conn(), id, category_id).await?;
            }
            tx.commit().await?;
            n == 1
        }))
    }

    /// Takes the allocator lease if it is free or expired; returns the new epoch.
    pub async fn acquire_lease(&self, holder: &str, now: i64, ttl_ms: i64) -> Result<Option<i64>> {
        Ok(on_driver!(self, |pool| {
            sqlx::query_scalar(
            "INSERT INTO routing_leader (name, holder, epoch, expires_at) VALUES ($1, $2, 1, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, epoch = routing_leader.epoch + 1, expires_at = excluded.expires_at \
             WHERE routing_leader.expires_at < $4 OR routing_leader.holder = excluded.holder \
             RETURNING epoch"
        )
        .bind(LEASE)
        .bind(holder)
        .bind(now + ttl_ms)
        .bind(now)
        .fetch_optional(pool)
        .await?
        }))
    }

    /// Extends the lease; `false` when it was taken over (the holder must stop allocating).
    pub async fn renew_lease(
        &self,
        holder: &str,
        epoch: i64,
        now: i64,
        ttl_ms: i64,
    ) -> Result<bool> {
        Ok(on_driver!(self, |pool| {
            sqlx::query(
            "UPDATE routing_leader SET expires_at = $1 WHERE name = $2 AND holder = $3 AND epoch = $4"
        )
        .bind(now + ttl_ms)
        .bind(LEASE)
        .bind(holder)
        .bind(epoch)
        .execute(pool)
        .await?
        .rows_affected()
            == 1
        }))
    }

    /// Gives the lease up (graceful shutdown), so another replica takes over at once.
    pub(crate) async fn release_lease(&self, holder: &str, epoch: i64) -> Result<()> {
        on_driver!(self, |pool| {
            sqlx::query(
            "UPDATE routing_leader SET expires_at = 0 WHERE name = $1 AND holder = $2 AND epoch = $3"
        )
        .bind(LEASE)
        .bind(holder)
        .bind(epoch)
        .execute(pool)
        .await?
        .rows_affected()
        });
        Ok(())
    }

    /// Persists the allocator's decisions in one transaction: first the returns to the queue,
    /// then each claim as a conditional update. Returns, per claim, whether it took effect; fails
    /// with [`Error::Contended`] (nothing written) when `epoch` no longer holds the lease.
    pub async fn commit_routing(
        &self,
        holder: &str,
        epoch: i64,
        returns: &[Return],
        claims: &[Claim],
        capacity: Option<i64>,
    ) -> Result<Vec<bool>> {
        let now = now_ms();
        let mut agents: Vec<&str> = claims.iter().map(|c| c.user_id.as_str()).collect();
        agents.sort_unstable();
        agents.dedup();
        // PostgreSQL: FOR SHARE makes a takeover (which updates the row) wait for this commit.
        let fence = self.dialect().lease_fence();
        Ok(on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let held: Option<i64> = sqlx::query_scalar(fence)
                .bind(LEASE)
                .bind(holder)
                .fetch_optional(&mut *tx)
                .await?;
            if held != Some(epoch) {
                return Err(Error::Contended);
            }
            // PostgreSQL: a manual pick for the same agent may commit meanwhile; holding the
            // agents' rows (all of them, in id order, before any conversation row, so a pick,
            // which locks its one agent and then its conversation, cannot deadlock with us)
            // makes the capacity check below see it. SQLite runs one writer at a time anyway.
            for agent in &agents {
                lock_user(&mut tx.conn(), agent).await?;
            }
            for r in returns {
                let n = sqlx::query(
                    "UPDATE conversations SET status = 'queued', assigned_user_id = NULL, assigned_at = NULL, pinned_user_id = NULL, updated_at = $1 \
                     WHERE id = $2 AND status = 'assigned' AND assigned_user_id = $3",
                )
                .bind(now)
                .bind(&r.conversation_id)
                .bind(&r.user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n == 1 {
                    let data = serde_json::json!({ "by": "routing", "epoch": epoch, "from": r.user_id, "reason": r.reason });
                    record_with_event(
                        &mut tx.conn(),
                        "conversation_queued",
                        data.to_string(),
                        NewDecision {
                            conversation_id: &r.conversation_id,
                            user_id: Some(&r.user_id),
                            kind: "returned",
                            reason: &r.reason,
                            explanation: "{}".to_owned(),
                            epoch: Some(epoch),
                            at: now,
                        },
                    )
                    .await?;
                }
            }
            let mut won = Vec::with_capacity(claims.len());
            for c in claims {
                let n = sqlx::query(CLAIM)
                    .bind(&c.user_id)
                    .bind(now)
                    .bind(&c.conversation_id)
                    .bind(capacity)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if n == 1 {
                    let data = serde_json::json!({ "user_id": c.user_id, "by": "routing", "epoch": epoch, "reason": c.reason });
                    record_with_event(
                        &mut tx.conn(),
                        "conversation_assigned",
                        data.to_string(),
                        NewDecision {
                            conversation_id: &c.conversation_id,
                            user_id: Some(&c.user_id),
                            kind: "automatic",
                            reason: &c.reason,
                            explanation: c.explanation.to_string(),
                            epoch: Some(epoch),
                            at: now,
                        },
                    )
                    .await?;
                }
                won.push(n == 1);
            }
            tx.commit().await?;
            won
        }))
    }

    /// Hands conversation `t.conversation_id` (assigned; to `t.owner` when given) to agent
    /// `t.to`, as `decide` rules on what the transaction reads of the target ([`TransferTarget`]):
    /// the routing service passes the routing core's transfer decision, so storage holds the
    /// transaction and the rule stays pure. Directly when the plan says so; otherwise the
    /// conversation goes back to the queue at its old place pinned to the target, with a
    /// `transfer` decision (`waiting_for_agent`) that says why and after how long the pin falls
    /// back. The target's row is locked on PostgreSQL, as claims do, so the capacity read holds
    /// until the commit. A forced hand-over that overrode skill requirements records who did it
    /// (`skills_overridden`).
    pub(crate) async fn transfer_to_agent<M: serde::Serialize + Send>(
        &self,
        t: &AgentTransfer<'_>,
        decide: impl FnOnce(&TransferTarget) -> TransferPlan<M> + Send,
    ) -> Result<TransferOutcome<M>> {
        Ok(on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            lock_user(&mut tx.conn(), t.to).await?;
            let target = transfer_target(&mut tx.conn(), t).await?;
            let (waiting_for, overridden) = match decide(&target) {
                TransferPlan::Refuse(outcome) => return Ok(outcome),
                TransferPlan::Proceed {
                    waiting_for,
                    overridden,
                } => (
                    waiting_for,
                    overridden.map(|missing| serde_json::json!({ "by": t.by, "missing": missing })),
                ),
            };
            let n = match waiting_for {
                None => sqlx::query(
                    "UPDATE conversations SET assigned_user_id = $1, assigned_at = $2, updated_at = $2, pinned_user_id = NULL, pinned_at = NULL \
                     WHERE id = $3 AND status = 'assigned' AND ($4 IS NULL OR assigned_user_id = $4)",
                )
                .bind(t.to)
                .bind(t.now)
                .bind(t.conversation_id)
                .bind(t.owner)
                .execute(&mut *tx)
                .await?,
                Some(_) => sqlx::query(
                    "UPDATE conversations SET status = 'queued', assigned_user_id = NULL, assigned_at = NULL, avoid_user_id = NULL, \
                     pinned_user_id = $1, pinned_at = $2, pin_overrides_skills = $5, updated_at = $2 \
                     WHERE id = $3 AND status = 'assigned' AND ($4 IS NULL OR assigned_user_id = $4)",
                )
                .bind(t.to)
                .bind(t.now)
                .bind(t.conversation_id)
                .bind(t.owner)
                .bind(overridden.is_some())
                .execute(&mut *tx)
                .await?,
            }
            .rows_affected();
            if n != 1 {
                return Ok(TransferOutcome::NotAssigned);
            }
            let (kind, data) = match waiting_for {
                None => (
                    "conversation_assigned",
                    serde_json::json!({ "user_id": t.to, "by": "transfer", "from": t.by }),
                ),
                Some(_) => (
                    "conversation_queued",
                    serde_json::json!({ "by": t.by, "pinned_user_id": t.to }),
                ),
            };
            push_event(
                &mut tx.conn(),
                t.conversation_id,
                kind,
                data.to_string(),
                t.now,
            )
            .await?;
            let explanation = transfer_explanation(t, &target, waiting_for, overridden.as_ref());
            if let Some((reason, explanation)) = explanation {
                record_decision(
                    &mut tx.conn(),
                    NewDecision {
                        conversation_id: t.conversation_id,
                        user_id: Some(t.to),
                        kind: "transfer",
                        reason,
                        explanation: explanation.to_string(),
                        epoch: None,
                        at: t.now,
                    },
                )
                .await?;
            }
            tx.commit().await?;
            match waiting_for {
                None => TransferOutcome::Assigned,
                Some(because) => TransferOutcome::Waiting { because },
            }
        }))
    }

    /// Drops the pins of queued conversations pinned at or before `cutoff` (epoch ms): each
    /// gets a `transfer` decision (`pin_expired`) and a `conversation_queued` event, and may go
    /// to anyone eligible from now on. Returns their ids.
    pub(crate) async fn expire_pins(&self, cutoff: i64, now: i64) -> Result<Vec<String>> {
        Ok(on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let due: Vec<PinRow> = sqlx::query_as(
                "SELECT id, pinned_user_id, pinned_at FROM conversations \
                 WHERE status = 'queued' AND pinned_user_id IS NOT NULL AND pinned_at IS NOT NULL AND pinned_at <= $1 ORDER BY id",
            )
            .bind(cutoff)
            .fetch_all(&mut *tx)
            .await?;
            let mut dropped = Vec::with_capacity(due.len());
            for PinRow {
                id,
                pinned_user_id: user,
                pinned_at,
            } in due
            {
                let n = sqlx::query(
                    "UPDATE conversations SET pinned_user_id = NULL, pinned_at = NULL, updated_at = $1 \
                     WHERE id = $2 AND status = 'queued' AND pinned_user_id = $3",
                )
                .bind(now)
                .bind(&id)
                .bind(&user)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n != 1 {
                    continue;
                }
                let explanation = serde_json::json!({
                    "reason": "pin_expired",
                    "waited_for": user,
                    "waited_secs": (now - pinned_at) / 1000,
                });
                record_with_event(
                    &mut tx.conn(),
                    "conversation_queued",
                    serde_json::json!({ "by": "system:routing", "pin_dropped": user }).to_string(),
                    NewDecision {
                        conversation_id: &id,
                        user_id: Some(&user),
                        kind: "transfer",
                        reason: "pin_expired",
                        explanation: explanation.to_string(),
                        epoch: None,
                        at: now,
                    },
                )
                .await?;
                dropped.push(id);
            }
            tx.commit().await?;
            dropped
        }))
    }

    /// A manual pick: claims a queued conversation for `user_id` unless it is pinned to someone
    /// else or the agent already holds `capacity` open conversations (`None`: no limit).
    pub async fn claim_pick(
        &self,
        id: &str,
        user_id: &str,
        capacity: Option<i64>,
    ) -> Result<Result<(), PickRefusal>> {
        let now = now_ms();
        on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            // Two picks by one agent at once must not both pass the capacity check (see
            // `commit_routing` for the lock order).
            lock_user(&mut tx.conn(), user_id).await?;
            let won = sqlx::query(CLAIM)
                .bind(user_id)
                .bind(now)
                .bind(id)
                .bind(capacity)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if won {
                record_with_event(
                    &mut tx.conn(),
                    "conversation_assigned",
                    serde_json::json!({ "user_id": user_id, "by": "pick" }).to_string(),
                    NewDecision {
                        conversation_id: id,
                        user_id: Some(user_id),
                        kind: "manual",
                        reason: "manual_pick",
                        explanation: serde_json::json!({ "reason": "manual_pick" }).to_string(),
                        epoch: None,
                        at: now,
                    },
                )
                .await?;
                tx.commit().await?;
                return Ok(Ok(()));
            }
            let row: Option<PickState> = sqlx::query_as(
                "SELECT status, pinned_user_id, (SELECT COUNT(*) FROM conversations o WHERE o.assigned_user_id = $2 AND o.status = 'assigned') AS load FROM conversations WHERE id = $1",
            )
            .bind(id)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
            match row {
                None => Err(Error::NotFound {
                    what: "conversation",
                    id: id.to_owned(),
                }),
                Some(PickState { status, .. }) if status != "queued" => {
                    Ok(Err(PickRefusal::NotQueued { status }))
                }
                Some(PickState {
                    pinned_user_id: Some(pinned),
                    ..
                }) if pinned != user_id => Ok(Err(PickRefusal::PinnedToOther { user_id: pinned })),
                Some(PickState { load, .. }) => Ok(Err(PickRefusal::AtCapacity {
                    load,
                    capacity: capacity.unwrap_or(load),
                })),
            }
        })
    }

    /// Moves an open conversation into another category: back in the queue at its old place,
    /// with the category's skills, avoiding the agent who had it. `owner` restricts it to that
    /// assignee. Returns whether it moved.
    pub(crate) async fn transfer_to_category(
        &self,
        id: &str,
        owner: Option<&str>,
        category_id: &str,
        by: &str,
    ) -> Result<bool> {
        let now = now_ms();
        Ok(on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let n = sqlx::query(
                "UPDATE conversations SET category_id = $1, status = 'queued', avoid_user_id = assigned_user_id, assigned_user_id = NULL, assigned_at = NULL, pinned_user_id = NULL, updated_at = $2 \
                 WHERE id = $3 AND status <> 'closed' AND ($4 IS NULL OR assigned_user_id = $4)",
            )
            .bind(category_id)
            .bind(now)
            .bind(id)
            .bind(owner)
            .execute(&mut *tx)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.is_foreign_key_violation() => Error::NotFound {
                    what: "category",
                    id: category_id.to_owned(),
                },
                _ => Error::Database(e),
            })?
            .rows_affected();
            if n == 1 {
                replace_skills(&mut tx.conn(), id, category_id).await?;
                record_with_event(
                    &mut tx.conn(),
                    "conversation_queued",
                    serde_json::json!({ "by": by, "category_id": category_id }).to_string(),
                    NewDecision {
                        conversation_id: id,
                        user_id: None,
                        kind: "transfer",
                        reason: "transfer_to_category",
                        explanation: serde_json::json!({ "category_id": category_id, "by": by })
                            .to_string(),
                        epoch: None,
                        at: now,
                    },
                )
                .await?;
            }
            tx.commit().await?;
            n == 1
        }))
    }

    /// The routing decisions of a conversation, oldest first.
    pub async fn routing_decisions(&self, conversation_id: &str) -> Result<Vec<DecisionRecord>> {
        let rows: Vec<DecisionRow> = on_driver!(self, |pool| {
            sqlx::query_as(
            "SELECT d.id, d.user_id, u.display_name AS user_name, d.kind, d.reason, d.explanation, d.created_at \
             FROM routing_decisions d LEFT JOIN users u ON u.id = d.user_id WHERE d.conversation_id = $1 ORDER BY d.id"
        )
        .bind(conversation_id)
        .fetch_all(pool)
        .await?
        });
        Ok(rows
            .into_iter()
            .map(|d| DecisionRecord {
                id: d.id,
                conversation_id: conversation_id.to_owned(),
                user_id: d.user_id,
                user_name: d.user_name,
                kind: d.kind,
                reason: d.reason,
                explanation: serde_json::from_str(&d.explanation)
                    .unwrap_or(serde_json::Value::Null),
                created_at: from_ms(d.created_at),
            })
            .collect())
    }

    /// Records an agent-level change for the allocator.
    pub(crate) async fn routing_signal(&self, user_id: Option<&str>, kind: &str) -> Result<()> {
        on_driver!(self, |pool| sqlx::query(
            "INSERT INTO routing_signals (user_id, kind, created_at) VALUES ($1, $2, $3)"
        )
        .bind(user_id)
        .bind(kind)
        .bind(now_ms())
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    /// Signals after `after`, oldest first.
    pub(crate) async fn signals_after(&self, after: i64, limit: i64) -> Result<Vec<Signal>> {
        Ok(on_driver!(self, |pool| sqlx::query_as(
            "SELECT id, user_id, kind FROM routing_signals WHERE id > $1 ORDER BY id LIMIT $2"
        )
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?))
    }

    /// The newest signal id (0 when none).
    pub(crate) async fn last_signal_id(&self) -> Result<i64> {
        let v: Option<i64> = on_driver!(self, |pool| sqlx::query_scalar(
            "SELECT MAX(id) FROM routing_signals"
        )
        .fetch_one(pool)
        .await?);
        Ok(v.unwrap_or(0))
    }

    /// Sets an agent's declared status and signals it.
    pub(crate) async fn set_agent_status(&self, user_id: &str, status: &str) -> Result<()> {
        let now = now_ms();
        on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO routing_agents (user_id, status, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at",
            )
            .bind(user_id)
            .bind(status)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if status == "offline" {
                // Transfers waiting for an agent who logs off are open to everyone at once (the
                // allocator's state drops them too), not only after the fallback.
                sqlx::query(
                    "UPDATE conversations SET pinned_user_id = NULL, pinned_at = NULL WHERE pinned_user_id = $1 AND status = 'queued'",
                )
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "INSERT INTO routing_signals (user_id, kind, created_at) VALUES ($1, 'status', $2)",
            )
            .bind(user_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// An agent's declared status (`available` when never set).
    pub(crate) async fn agent_status(&self, user_id: &str) -> Result<String> {
        let v: Option<String> = on_driver!(self, |pool| sqlx::query_scalar(
            "SELECT status FROM routing_agents WHERE user_id = $1"
        )
        .bind(user_id)
        .fetch_optional(pool)
        .await?);
        Ok(v.unwrap_or_else(|| "available".to_owned()))
    }

    /// Records how many live sessions `user_id` has on `replica` and signals the change.
    pub(crate) async fn set_presence(
        &self,
        replica: &str,
        user_id: &str,
        sessions: i64,
    ) -> Result<()> {
        let now = now_ms();
        on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO routing_replicas (replica, seen_at) VALUES ($1, $2) \
                 ON CONFLICT (replica) DO UPDATE SET seen_at = excluded.seen_at",
            )
            .bind(replica)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO routing_presence (replica, user_id, sessions, changed_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (replica, user_id) DO UPDATE SET sessions = excluded.sessions, changed_at = excluded.changed_at",
            )
            .bind(replica)
            .bind(user_id)
            .bind(sessions)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO routing_signals (user_id, kind, created_at) VALUES ($1, 'presence', $2)")
                .bind(user_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Keeps this replica's sessions counting; returns the users whose sessions were on replicas
    /// that just went stale (their presence changed without anyone saying so).
    pub(crate) async fn replica_heartbeat(&self, replica: &str, now: i64) -> Result<Vec<String>> {
        let stale = now - REPLICA_STALE_MS;
        Ok(on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO routing_replicas (replica, seen_at) VALUES ($1, $2) \
                 ON CONFLICT (replica) DO UPDATE SET seen_at = excluded.seen_at",
            )
            .bind(replica)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let gone: Vec<String> = sqlx::query_scalar(
                "SELECT DISTINCT p.user_id FROM routing_presence p JOIN routing_replicas r ON r.replica = p.replica WHERE r.seen_at < $1 AND p.sessions > 0",
            )
            .bind(stale)
            .fetch_all(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM routing_presence WHERE replica IN (SELECT replica FROM routing_replicas WHERE seen_at < $1)")
                .bind(stale)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM routing_replicas WHERE seen_at < $1")
                .bind(stale)
                .execute(&mut *tx)
                .await?;
            for user in &gone {
                sqlx::query("INSERT INTO routing_signals (user_id, kind, created_at) VALUES ($1, 'presence', $2)")
                    .bind(user)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            gone
        }))
    }

    /// One agent's routing row (`None` when the user is not an agent).
    pub async fn routing_agent(&self, user_id: &str, now: i64) -> Result<Option<AgentRow>> {
        // The agent set is small (hundreds); reading it whole keeps one code path.
        let rows = self.routing_rows_agents(now).await?;
        Ok(rows.into_iter().find(|a| a.user_id == user_id))
    }

    async fn routing_rows_agents(&self, now: i64) -> Result<Vec<AgentRow>> {
        let fresh = now - REPLICA_STALE_MS;
        let (agents, skills, presence): (Vec<AgentRecord>, Vec<UserSkillRow>, Vec<PresenceRow>) = on_driver!(
            self,
            |pool| {
                let agents = sqlx::query_as(
                "SELECT u.id, u.auto_allocate, a.status, \
                 (SELECT MAX(c.assigned_at) FROM conversations c WHERE c.assigned_user_id = u.id) AS last_assigned_at \
                 FROM users u LEFT JOIN routing_agents a ON a.user_id = u.id WHERE u.role = 'agent' ORDER BY u.id",
            )
            .fetch_all(pool)
            .await?;
                let skills = sqlx::query_as(
                "SELECT us.user_id, s.name, us.active, us.level FROM user_skills us JOIN skills s ON s.id = us.skill_id ORDER BY s.name",
            )
            .fetch_all(pool)
            .await?;
                let presence = sqlx::query_as(
                "SELECT p.user_id, CAST(SUM(CASE WHEN r.seen_at >= $1 THEN p.sessions ELSE 0 END) AS BIGINT) AS sessions, MAX(p.changed_at) AS changed_at \
                 FROM routing_presence p JOIN routing_replicas r ON r.replica = p.replica GROUP BY p.user_id",
            )
            .bind(fresh)
            .fetch_all(pool)
            .await?;
                (agents, skills, presence)
            }
        );
        let mut skills_of: HashMap<String, Vec<HeldSkill>> = HashMap::new();
        for s in skills {
            skills_of.entry(s.user_id).or_default().push(HeldSkill {
                name: s.name,
                active: s.active,
                level: level(s.level),
            });
        }
        let presence: HashMap<String, (i64, Option<i64>)> = presence
            .into_iter()
            .map(|p| (p.user_id, (p.sessions, p.changed_at)))
            .collect();
        Ok(agents
            .into_iter()
            .map(|a| {
                let (sessions, changed) = presence.get(&a.id).copied().unwrap_or((0, None));
                AgentRow {
                    skills: skills_of.remove(&a.id).unwrap_or_default(),
                    user_id: a.id,
                    auto_allocate: a.auto_allocate,
                    status: a.status.unwrap_or_else(|| "available".to_owned()),
                    sessions,
                    presence_changed_at: changed,
                    last_assigned_at: a.last_assigned_at,
                }
            })
            .collect())
    }
}
