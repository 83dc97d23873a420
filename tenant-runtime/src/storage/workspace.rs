//! What the Workspace and the Configurator read and change: the queue, atomic picks, close and
//! transfer, internal notes, agent switches, dashboard figures, skill and category edits, channel
//! health and tenant settings.
//!
//! Every change of a conversation writes a row to `conversation_events` in the same transaction;
//! `http::live` tails that table to push the change to browsers.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{
    AsConn, Error, Pair, Result, Store, WriteTx, corrupt, from_ms, new_id, now_ms, on_driver,
    push_event,
};
use crate::domain::CategoryRule;
use crate::domain::api::{CategoryEdit, ChannelHealth, Figures, Note, QueueItem};

/// Routing attributes of a category.
#[derive(Debug, Clone, Serialize)]
pub struct CategoryRouting {
    /// Priority.
    pub priority: i64,
    /// Rules.
    pub rules: Vec<CategoryRule>,
}

/// A queued conversation as read for the queue.
#[derive(sqlx::FromRow)]
struct QueueRow {
    id: String,
    channel: String,
    channel_app: String,
    category_id: Option<String>,
    category: Option<String>,
    priority: Option<i64>,
    contact_name: Option<String>,
    identity: String,
    created_at: i64,
    last_inbound_at: Option<i64>,
    waiting_for: Option<String>,
    waiting_for_name: Option<String>,
}

/// A note as read, with its author's name.
#[derive(sqlx::FromRow)]
struct NoteRow {
    id: String,
    author_user_id: Option<String>,
    author_name: Option<String>,
    text: String,
    created_at: i64,
}

/// A user as read for the Workspace's colleague list.
#[derive(sqlx::FromRow)]
struct SummaryRow {
    id: String,
    display_name: String,
    role: String,
    auto_allocate: bool,
}

/// A category's routing attributes as read (rules still JSON text).
#[derive(sqlx::FromRow)]
struct RoutingAttributesRow {
    id: String,
    priority: i64,
    rules: String,
}

/// The last inbound message of a channel app.
#[derive(sqlx::FromRow)]
struct LastInbound {
    channel_app: String,
    at: i64,
}

/// The last failed outbound message of a channel app.
#[derive(sqlx::FromRow)]
struct FailureRow {
    channel_app: String,
    failed_at: i64,
    reason: Option<String>,
}

/// A count and an average (dashboard figures).
#[derive(sqlx::FromRow)]
struct CountAverage {
    count: i64,
    average: Option<f64>,
}

/// A count and the oldest time among the counted (dashboard figures).
#[derive(sqlx::FromRow)]
struct CountOldest {
    count: i64,
    oldest: Option<i64>,
}

/// A conversation event as read, with its conversation's status and assignee now.
#[derive(sqlx::FromRow)]
pub(super) struct EventRecord {
    id: i64,
    conversation_id: String,
    kind: String,
    data: String,
    created_at: i64,
    status: String,
    assigned_user_id: Option<String>,
}

impl From<EventRecord> for EventRow {
    fn from(e: EventRecord) -> Self {
        EventRow {
            id: e.id,
            conversation_id: e.conversation_id,
            kind: e.kind,
            data: serde_json::from_str(&e.data).unwrap_or(serde_json::Value::Null),
            created_at: from_ms(e.created_at),
            status: e.status,
            assigned_user_id: e.assigned_user_id,
        }
    }
}

fn start_of_day_ms(now: i64) -> i64 {
    now - now.rem_euclid(86_400_000)
}

fn fk_or(e: sqlx::Error, what: &str) -> Error {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => Error::Conflict(what.to_owned()),
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => Error::NotFound {
            what: "skill",
            id: "(one of skill_ids)".to_owned(),
        },
        _ => Error::Database(e),
    }
}

impl Store {
    /// Queued conversations: highest category priority first, then longest waiting.
    pub async fn queue(&self) -> Result<Vec<QueueItem>> {
        let (rows, skills): (Vec<QueueRow>, Vec<Pair>) = on_driver!(self, |pool| {
            let rows = sqlx::query_as(
                "SELECT c.id, c.channel, c.channel_app, c.category_id, k.name AS category, k.priority, p.display_name AS contact_name, c.identity, c.created_at, c.last_inbound_at, \
                 c.pinned_user_id AS waiting_for, w.display_name AS waiting_for_name \
                 FROM conversations c LEFT JOIN categories k ON k.id = c.category_id JOIN contacts p ON p.id = c.contact_id \
                 LEFT JOIN users w ON w.id = c.pinned_user_id \
                 WHERE c.status = 'queued' ORDER BY COALESCE(k.priority, 0) DESC, c.created_at, c.id LIMIT 500",
            )
            .fetch_all(pool)
            .await?;
            let skills = sqlx::query_as(
                "SELECT cs.conversation_id AS owner, s.name AS item FROM conversation_skills cs JOIN skills s ON s.id = cs.skill_id JOIN conversations c ON c.id = cs.conversation_id WHERE c.status = 'queued' ORDER BY s.name",
            )
            .fetch_all(pool)
            .await?;
            (rows, skills)
        });
        let mut by_conv: HashMap<String, Vec<String>> = HashMap::new();
        for Pair { owner, item } in skills {
            by_conv.entry(owner).or_default().push(item);
        }
        rows.into_iter()
            .map(|r| {
                Ok(QueueItem {
                    required_skills: by_conv.remove(&r.id).unwrap_or_default(),
                    id: r.id,
                    channel: r.channel.parse().map_err(corrupt)?,
                    channel_app: r.channel_app,
                    category_id: r.category_id,
                    category: r.category,
                    priority: r.priority.unwrap_or(0),
                    contact_name: r.contact_name,
                    identity: r.identity,
                    queued_since: from_ms(r.created_at),
                    last_inbound_at: r.last_inbound_at.map(from_ms),
                    waiting_for: r.waiting_for,
                    waiting_for_name: r.waiting_for_name,
                })
            })
            .collect()
    }
    /// Closes an open conversation; `owner` restricts it to that assignee. Returns whether it
    /// was closed now.
    pub async fn close_conversation(
        &self,
        id: &str,
        owner: Option<&str>,
        by: &str,
    ) -> Result<bool> {
        let now = now_ms();
        Ok(on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let n = sqlx::query(
                "UPDATE conversations SET status = 'closed', closed_at = $1, updated_at = $1 WHERE id = $2 AND status <> 'closed' AND ($3 IS NULL OR assigned_user_id = $3)",
            )
            .bind(now)
            .bind(id)
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                push_event(
                    &mut tx.conn(),
                    id,
                    "conversation_closed",
                    serde_json::json!({ "by": by }).to_string(),
                    now,
                )
                .await?;
            }
            tx.commit().await?;
            n == 1
        }))
    }

    /// Hands an assigned conversation to `to` (another agent) unconditionally, or back to the
    /// queue (`None`); `owner` restricts it to that assignee. Returns whether it moved. The API
    /// hands to an agent through [`Store::transfer_to_agent`], which checks that they can take
    /// it now and otherwise pins it to them.
    pub async fn transfer_conversation(
        &self,
        id: &str,
        owner: Option<&str>,
        to: Option<&str>,
        by: &str,
    ) -> Result<bool> {
        let now = now_ms();
        Ok(on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let n = match to {
                Some(to) => sqlx::query(
                    "UPDATE conversations SET assigned_user_id = $1, assigned_at = $2, updated_at = $2 WHERE id = $3 AND status = 'assigned' AND ($4 IS NULL OR assigned_user_id = $4)",
                )
                .bind(to)
                .bind(now)
                .bind(id)
                .bind(owner)
                .execute(&mut *tx)
                .await?,
                None => sqlx::query(
                    "UPDATE conversations SET status = 'queued', avoid_user_id = assigned_user_id, assigned_user_id = NULL, assigned_at = NULL, updated_at = $1 WHERE id = $2 AND status = 'assigned' AND ($3 IS NULL OR assigned_user_id = $3)",
                )
                .bind(now)
                .bind(id)
                .bind(owner)
                .execute(&mut *tx)
                .await?,
            }
            .rows_affected();
            if n == 1 {
                let (kind, data) = match to {
                    Some(to) => (
                        "conversation_assigned",
                        serde_json::json!({ "user_id": to, "by": "transfer", "from": by }),
                    ),
                    None => ("conversation_queued", serde_json::json!({ "by": by })),
                };
                push_event(&mut tx.conn(), id, kind, data.to_string(), now).await?;
            }
            tx.commit().await?;
            n == 1
        }))
    }

    /// Open conversations assigned to `user_id`, most recently active first.
    pub async fn assigned_conversation_ids(&self, user_id: &str) -> Result<Vec<String>> {
        Ok(on_driver!(self, |pool| {
            sqlx::query_scalar(
            "SELECT id FROM conversations WHERE assigned_user_id = $1 AND status = 'assigned' ORDER BY updated_at DESC, id LIMIT 200"
        )
        .bind(user_id)
        .fetch_all(pool)
        .await?
        }))
    }

    /// Adds an internal note.
    pub async fn add_note(&self, conversation_id: &str, author: &str, text: &str) -> Result<Note> {
        let id = new_id();
        let now = now_ms();
        on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO conversation_notes (id, conversation_id, author_user_id, text, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&id)
            .bind(conversation_id)
            .bind(author)
            .bind(text)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            push_event(
                &mut tx.conn(),
                conversation_id,
                "note_added",
                serde_json::json!({ "note_id": id }).to_string(),
                now,
            )
            .await?;
            tx.commit().await?;
        });
        let user = self.user(author).await.ok();
        Ok(Note {
            id,
            conversation_id: conversation_id.to_owned(),
            author_user_id: Some(author.to_owned()),
            author_name: user.map(|u| u.display_name),
            text: text.to_owned(),
            created_at: from_ms(now),
        })
    }

    /// The notes of a conversation, oldest first.
    pub async fn notes(&self, conversation_id: &str) -> Result<Vec<Note>> {
        let rows: Vec<NoteRow> = on_driver!(self, |pool| {
            sqlx::query_as(
                "SELECT n.id, n.author_user_id, u.display_name AS author_name, n.text, n.created_at FROM conversation_notes n LEFT JOIN users u ON u.id = n.author_user_id WHERE n.conversation_id = $1 ORDER BY n.created_at, n.id"
            )
            .bind(conversation_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|n| Note {
                id: n.id,
                conversation_id: conversation_id.to_owned(),
                author_user_id: n.author_user_id,
                author_name: n.author_name,
                text: n.text,
                created_at: from_ms(n.created_at),
            })
            .collect())
    }

    /// `(id, display_name, role, auto_allocate)` of every user, in one query (the directory's
    /// `users()` loads skills per user, too slow for views refreshed on every live event).
    pub(crate) async fn user_summaries(&self) -> Result<Vec<UserSummary>> {
        let rows: Vec<SummaryRow> = on_driver!(self, |pool| sqlx::query_as(
            "SELECT id, display_name, role, auto_allocate FROM users ORDER BY display_name, id"
        )
        .fetch_all(pool)
        .await?);
        rows.into_iter()
            .map(|u| {
                Ok(UserSummary {
                    id: u.id,
                    display_name: u.display_name,
                    role: u.role.parse().map_err(corrupt)?,
                    auto_allocate: u.auto_allocate,
                })
            })
            .collect()
    }

    /// Whether the user takes automatically allocated conversations.
    pub async fn auto_allocate(&self, user_id: &str) -> Result<bool> {
        let v: Option<bool> = on_driver!(self, |pool| sqlx::query_scalar(
            "SELECT auto_allocate FROM users WHERE id = $1"
        )
        .bind(user_id)
        .fetch_optional(pool)
        .await?);
        v.ok_or_else(|| Error::NotFound {
            what: "user",
            id: user_id.to_owned(),
        })
    }

    /// Sets the auto-allocate switch.
    pub async fn set_auto_allocate(&self, user_id: &str, on: bool) -> Result<()> {
        on_driver!(self, |pool| sqlx::query(
            "UPDATE users SET auto_allocate = $1 WHERE id = $2"
        )
        .bind(on)
        .bind(user_id)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    /// Switches one of the user's skills on or off; `NotFound` when the user lacks the skill.
    pub(crate) async fn set_user_skill_active(
        &self,
        user_id: &str,
        skill_id: &str,
        active: bool,
    ) -> Result<()> {
        let n = on_driver!(self, |pool| sqlx::query(
            "UPDATE user_skills SET active = $1 WHERE user_id = $2 AND skill_id = $3"
        )
        .bind(active)
        .bind(user_id)
        .bind(skill_id)
        .execute(pool)
        .await?
        .rows_affected());
        if n == 0 {
            return Err(Error::NotFound {
                what: "skill of this user",
                id: skill_id.to_owned(),
            });
        }
        Ok(())
    }

    /// Grants (or revokes) skills of a user: replaces the user's skill set and levels (a skill
    /// missing from `levels` has none), keeping the agent's on/off switches.
    pub(crate) async fn set_user_skills(
        &self,
        user_id: &str,
        skill_ids: &[String],
        levels: &BTreeMap<String, u8>,
    ) -> Result<()> {
        on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let held: Vec<String> =
                sqlx::query_scalar("SELECT skill_id FROM user_skills WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_all(&mut *tx)
                    .await?;
            for s in held.iter().filter(|s| !skill_ids.contains(s)) {
                sqlx::query("DELETE FROM user_skills WHERE user_id = $1 AND skill_id = $2")
                    .bind(user_id)
                    .bind(s)
                    .execute(&mut *tx)
                    .await?;
            }
            for s in skill_ids {
                let level = levels.get(s).copied().map(i64::from);
                if held.contains(s) {
                    sqlx::query(
                        "UPDATE user_skills SET level = $1 WHERE user_id = $2 AND skill_id = $3",
                    )
                    .bind(level)
                    .bind(user_id)
                    .bind(s)
                    .execute(&mut *tx)
                    .await?;
                } else {
                    sqlx::query(
                        "INSERT INTO user_skills (user_id, skill_id, active, level) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(user_id)
                    .bind(s)
                    .bind(true)
                    .bind(level)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| fk_or(e, "user skill"))?;
                }
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Dashboard figures of `user_id` and the tenant, at `now` (epoch ms).
    pub async fn figures(&self, user_id: &str, now: i64) -> Result<Figures> {
        let day = start_of_day_ms(now);
        let (assigned, closed, handling, first, waiting, oldest): (
            i64,
            i64,
            Option<f64>,
            Option<f64>,
            i64,
            Option<i64>,
        ) = on_driver!(self, |pool| {
            let assigned: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM conversations WHERE assigned_user_id = $1 AND status = 'assigned'",
            )
            .bind(user_id)
            .fetch_one(pool)
            .await?;
            let CountAverage {
                count: closed,
                average: handling,
            } = sqlx::query_as(
                "SELECT COUNT(*) AS count, AVG(CAST(closed_at - assigned_at AS DOUBLE PRECISION)) AS average FROM conversations WHERE assigned_user_id = $1 AND status = 'closed' AND closed_at >= $2",
            )
            .bind(user_id)
            .bind(day)
            .fetch_one(pool)
            .await?;
            let first: Option<f64> = sqlx::query_scalar(
                "SELECT AVG(CAST(f.first_at - c.assigned_at AS DOUBLE PRECISION)) FROM conversations c \
                 JOIN (SELECT conversation_id, MIN(created_at) AS first_at FROM messages WHERE direction = 'outbound' AND author_user_id = $1 GROUP BY conversation_id) f ON f.conversation_id = c.id \
                 WHERE c.assigned_user_id = $1 AND c.assigned_at >= $2 AND f.first_at >= c.assigned_at",
            )
            .bind(user_id)
            .bind(day)
            .fetch_one(pool)
            .await?;
            let CountOldest {
                count: waiting,
                oldest,
            } = sqlx::query_as(
                "SELECT COUNT(*) AS count, MIN(created_at) AS oldest FROM conversations WHERE status = 'queued'",
            )
            .fetch_one(pool)
            .await?;
            (assigned, closed, handling, first, waiting, oldest)
        });
        Ok(Figures {
            assigned_now: assigned,
            closed_today: closed,
            avg_first_response_secs: first.map(|ms| ms / 1000.0),
            avg_handling_secs: handling.map(|ms| ms / 1000.0),
            waiting_now: waiting,
            longest_wait_secs: oldest.map(|t| (now - t).max(0) / 1000),
        })
    }

    /// Renames a skill.
    pub async fn rename_skill(&self, id: &str, name: &str) -> Result<()> {
        let what = format!("skill `{name}`");
        let n = on_driver!(self, |pool| sqlx::query(
            "UPDATE skills SET name = $1 WHERE id = $2"
        )
        .bind(name)
        .bind(id)
        .execute(pool)
        .await
        .map_err(|e| fk_or(e, &what))?
        .rows_affected());
        if n == 0 {
            return Err(Error::NotFound {
                what: "skill",
                id: id.to_owned(),
            });
        }
        Ok(())
    }

    /// Deletes a skill (users, categories and conversations lose it).
    pub async fn delete_skill(&self, id: &str) -> Result<()> {
        let n = on_driver!(self, |pool| sqlx::query("DELETE FROM skills WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected());
        if n == 0 {
            return Err(Error::NotFound {
                what: "skill",
                id: id.to_owned(),
            });
        }
        Ok(())
    }

    /// Priority and rules of every category, by id.
    pub async fn category_routing(&self) -> Result<HashMap<String, CategoryRouting>> {
        let rows: Vec<RoutingAttributesRow> = on_driver!(self, |pool| sqlx::query_as(
            "SELECT id, priority, rules FROM categories"
        )
        .fetch_all(pool)
        .await?);
        rows.into_iter()
            .map(|c| {
                let rules = serde_json::from_str(&c.rules)
                    .map_err(|e| Error::Corrupt(format!("category rules: {e}")))?;
                Ok((
                    c.id,
                    CategoryRouting {
                        priority: c.priority,
                        rules,
                    },
                ))
            })
            .collect()
    }

    /// Creates (`id` = `None`) or replaces a category with its routing attributes; returns its id.
    pub async fn save_category(&self, id: Option<&str>, edit: &CategoryEdit) -> Result<String> {
        let now = now_ms();
        let rules = serde_json::to_string(&edit.rules)
            .map_err(|e| Error::Corrupt(format!("category rules: {e}")))?;
        let what = format!("category `{}`", edit.name);
        let id = id.map(str::to_owned);
        let new = id.is_none();
        let id = id.unwrap_or_else(new_id);
        on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let n = if new {
                sqlx::query(
                    "INSERT INTO categories (id, name, description, created_at, priority, rules) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&id)
                .bind(&edit.name)
                .bind(&edit.description)
                .bind(now)
                .bind(edit.priority)
                .bind(&rules)
                .execute(&mut *tx)
                .await
                .map_err(|e| fk_or(e, &what))?
                .rows_affected()
            } else {
                sqlx::query(
                    "UPDATE categories SET name = $1, description = $2, priority = $3, rules = $4 WHERE id = $5",
                )
                .bind(&edit.name)
                .bind(&edit.description)
                .bind(edit.priority)
                .bind(&rules)
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(|e| fk_or(e, &what))?
                .rows_affected()
            };
            if n == 0 {
                return Err(Error::NotFound {
                    what: "category",
                    id: id.clone(),
                });
            }
            sqlx::query("DELETE FROM category_skills WHERE category_id = $1")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            for skill in &edit.skill_ids {
                let option = edit.skill_options.get(skill).copied().unwrap_or_default();
                sqlx::query(
                    "INSERT INTO category_skills (category_id, skill_id, min_level, optional) VALUES ($1, $2, $3, $4)",
                )
                .bind(&id)
                .bind(skill)
                .bind(option.min_level.map(i64::from))
                .bind(option.optional)
                .execute(&mut *tx)
                .await
                .map_err(|e| fk_or(e, "category skill"))?;
            }
            tx.commit().await?;
        });
        Ok(id)
    }

    /// Deletes a category; its conversations move to the General category.
    pub async fn delete_category(&self, id: &str) -> Result<()> {
        // The caller refuses to delete the default category itself.
        let general = super::GENERAL_CATEGORY_ID;
        let n = on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query("UPDATE conversations SET category_id = $1 WHERE category_id = $2")
                .bind(general)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let n = sqlx::query("DELETE FROM categories WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            n
        });
        if n == 0 {
            return Err(Error::NotFound {
                what: "category",
                id: id.to_owned(),
            });
        }
        Ok(())
    }

    /// Last inbound message and last failed outbound message per channel app.
    pub(crate) async fn channel_health(&self) -> Result<HashMap<String, ChannelHealth>> {
        let (inbound, failed): (Vec<LastInbound>, Vec<FailureRow>) = on_driver!(self, |pool| {
            let inbound = sqlx::query_as(
                    "SELECT channel_app, MAX(created_at) AS at FROM messages WHERE direction = 'inbound' GROUP BY channel_app",
                )
                .fetch_all(pool)
                .await?;
            let failed = sqlx::query_as(
                    "SELECT m.channel_app, m.updated_at AS failed_at, m.status_reason AS reason FROM messages m WHERE m.status = 'FAILED' AND m.updated_at = (SELECT MAX(updated_at) FROM messages x WHERE x.channel_app = m.channel_app AND x.status = 'FAILED')",
                )
                .fetch_all(pool)
                .await?;
            (inbound, failed)
        });
        let mut out: HashMap<String, ChannelHealth> = HashMap::new();
        for i in inbound {
            out.entry(i.channel_app).or_default().last_inbound_at = Some(from_ms(i.at));
        }
        for f in failed {
            let h = out.entry(f.channel_app).or_default();
            h.last_failure_at = Some(from_ms(f.failed_at));
            h.last_failure_reason = f.reason;
        }
        Ok(out)
    }

    /// A tenant setting (JSON), if set.
    pub(crate) async fn tenant_setting(&self, key: &str) -> Result<Option<serde_json::Value>> {
        let v: Option<String> = on_driver!(self, |pool| sqlx::query_scalar(
            "SELECT value FROM tenant_settings WHERE key = $1"
        )
        .bind(key)
        .fetch_optional(pool)
        .await?);
        v.map(|v| {
            serde_json::from_str(&v).map_err(|e| Error::Corrupt(format!("setting {key}: {e}")))
        })
        .transpose()
    }

    /// Sets a tenant setting.
    pub(crate) async fn set_tenant_setting(
        &self,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<()> {
        on_driver!(self, |pool| {
            sqlx::query(
            "INSERT INTO tenant_settings (key, value, updated_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
        )
        .bind(key)
        .bind(value.to_string())
        .bind(now_ms())
        .execute(pool)
        .await?
        .rows_affected()
        });
        Ok(())
    }

    /// Conversation events after `after_id` across all conversations, with each conversation's
    /// current status and assignee (what `http::live` needs to filter per user).
    pub async fn events_after(&self, after_id: i64, limit: i64) -> Result<Vec<EventRow>> {
        let rows: Vec<EventRecord> = on_driver!(self, |pool| {
            sqlx::query_as(
                "SELECT e.id, e.conversation_id, e.kind, e.data, e.created_at, c.status, c.assigned_user_id FROM conversation_events e JOIN conversations c ON c.id = e.conversation_id WHERE e.id > $1 ORDER BY e.id LIMIT $2"
            )
            .bind(after_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(EventRow::from).collect())
    }

    /// The id of the newest conversation event (0 when there is none).
    pub async fn last_event_id(&self) -> Result<i64> {
        let v: Option<i64> = on_driver!(self, |pool| sqlx::query_scalar(
            "SELECT MAX(id) FROM conversation_events"
        )
        .fetch_one(pool)
        .await?);
        Ok(v.unwrap_or(0))
    }
}

/// A user as the Workspace lists colleagues.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct UserSummary {
    /// Id.
    pub id: String,
    /// Name.
    pub display_name: String,
    /// Role.
    pub role: crate::domain::Role,
    /// Auto-allocate switch.
    pub auto_allocate: bool,
}

/// A conversation event with the conversation's current status and assignee.
#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    /// Event id (monotonic).
    pub id: i64,
    /// Conversation.
    pub conversation_id: String,
    /// `conversation_opened`, `message_received`, `message_sent`, `message_status`,
    /// `conversation_assigned`, `conversation_queued`, `conversation_closed`, `note_added`, …
    pub kind: String,
    /// Event data.
    pub data: serde_json::Value,
    /// When.
    pub created_at: DateTime<Utc>,
    /// The conversation's status now.
    pub status: String,
    /// The conversation's assignee now.
    pub assigned_user_id: Option<String>,
}
