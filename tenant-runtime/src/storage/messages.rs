//! Contacts, conversations and messages: reads for the API and the outbound write path.

use super::{
    AsConn, Error, Result, Store, WriteTx, append_audit, corrupt, from_ms, is_retryable, now_ms,
    on_driver,
};
use crate::domain::api::{Contact, ContactIdentity, Conversation, Message};
use crate::domain::{ConversationStatus, DeliveryStatus, MessageContent};

/// Filter for listing conversations.
#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    /// Only conversations in this status.
    pub status: Option<ConversationStatus>,
    /// At most this many (newest first).
    pub limit: i64,
}

/// An outbound message to store together with its outbox row.
#[derive(Debug, Clone)]
pub struct NewOutbound {
    /// Id of the new message (also the outbox id and the `correlation_id`).
    pub id: String,
    /// The conversation it belongs to.
    pub conversation_id: String,
    /// The content.
    pub content: MessageContent,
    /// The `messages:send` request body to deliver.
    pub payload: serde_json::Value,
    /// The agent who wrote it.
    pub author_user_id: Option<String>,
    /// Client-chosen key: a retried request with the same key returns the first message.
    pub idempotency_key: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(super) struct ConversationRow {
    id: String,
    contact_id: String,
    channel: String,
    channel_app: String,
    identity: String,
    category_id: Option<String>,
    status: String,
    assigned_user_id: Option<String>,
    created_at: i64,
    updated_at: i64,
    assigned_at: Option<i64>,
    closed_at: Option<i64>,
    last_inbound_at: Option<i64>,
}

impl ConversationRow {
    fn into_model(self, skill_requirements: Vec<String>) -> Result<Conversation> {
        Ok(Conversation {
            id: self.id,
            contact_id: self.contact_id,
            channel: self.channel.parse().map_err(corrupt)?,
            channel_app: self.channel_app,
            identity: self.identity,
            category_id: self.category_id,
            skill_requirements,
            status: self.status.parse().map_err(corrupt)?,
            assigned_user_id: self.assigned_user_id,
            created_at: from_ms(self.created_at),
            updated_at: from_ms(self.updated_at),
            assigned_at: self.assigned_at.map(from_ms),
            closed_at: self.closed_at.map(from_ms),
            last_inbound_at: self.last_inbound_at.map(from_ms),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct MessageRow {
    id: String,
    conversation_id: String,
    direction: String,
    external_id: Option<String>,
    content: String,
    status: String,
    status_reason: Option<String>,
    author_user_id: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl MessageRow {
    fn into_model(self) -> Result<Message> {
        Ok(Message {
            id: self.id,
            conversation_id: self.conversation_id,
            direction: self.direction.parse().map_err(corrupt)?,
            external_id: self.external_id,
            content: serde_json::from_str(&self.content)
                .map_err(|e| Error::Corrupt(format!("message content: {e}")))?,
            status: self.status.parse().map_err(corrupt)?,
            status_reason: self.status_reason,
            author_user_id: self.author_user_id,
            created_at: from_ms(self.created_at),
            updated_at: from_ms(self.updated_at),
        })
    }
}

/// A contact as read (its identities come apart).
#[derive(sqlx::FromRow)]
struct ContactRow {
    id: String,
    display_name: Option<String>,
    created_at: i64,
}

/// One channel identity of a contact as read.
#[derive(sqlx::FromRow)]
pub(super) struct IdentityRow {
    pub(super) channel: String,
    pub(super) identity: String,
}

impl IdentityRow {
    /// The identity with its channel parsed.
    pub(super) fn into_model(self) -> Result<ContactIdentity> {
        Ok(ContactIdentity {
            channel: self.channel.parse().map_err(corrupt)?,
            identity: self.identity,
        })
    }
}

/// A conversation event as read (data still JSON text).
#[derive(sqlx::FromRow)]
struct EventData {
    id: i64,
    kind: String,
    data: String,
}

#[cfg(test)]
const CONVERSATION_COLUMNS: &str = "id, contact_id, channel, channel_app, identity, category_id, status, assigned_user_id, created_at, updated_at, assigned_at, closed_at, last_inbound_at";
#[cfg(test)]
const MESSAGE_COLUMNS: &str = "id, conversation_id, direction, external_id, content, status, status_reason, author_user_id, created_at, updated_at";

// `const_format` would let these share CONVERSATION_COLUMNS; sqlx wants `&'static str` SQL and a
// literal keeps every statement greppable, so the column lists are spelled out and a unit test
// checks they agree.
const SELECT_CONVERSATION: &str = "SELECT id, contact_id, channel, channel_app, identity, category_id, status, assigned_user_id, created_at, updated_at, assigned_at, closed_at, last_inbound_at FROM conversations WHERE id = $1";
const LIST_CONVERSATIONS: &str = "SELECT id, contact_id, channel, channel_app, identity, category_id, status, assigned_user_id, created_at, updated_at, assigned_at, closed_at, last_inbound_at FROM conversations WHERE ($1 IS NULL OR status = $1) ORDER BY created_at DESC, id DESC LIMIT $2";
const SELECT_MESSAGE: &str = "SELECT id, conversation_id, direction, external_id, content, status, status_reason, author_user_id, created_at, updated_at FROM messages WHERE id = $1";
const LIST_MESSAGES: &str = "SELECT id, conversation_id, direction, external_id, content, status, status_reason, author_user_id, created_at, updated_at FROM messages WHERE conversation_id = $1 ORDER BY created_at, id";
const SELECT_MESSAGE_BY_KEY: &str = "SELECT id, conversation_id, direction, external_id, content, status, status_reason, author_user_id, created_at, updated_at FROM messages WHERE conversation_id = $1 AND idempotency_key = $2";

impl Store {
    /// One contact with its identities.
    pub async fn contact(&self, id: &str) -> Result<Contact> {
        let (row, identities): (Option<ContactRow>, Vec<IdentityRow>) = on_driver!(self, |pool| {
            let row =
                sqlx::query_as("SELECT id, display_name, created_at FROM contacts WHERE id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await?;
            let ids = sqlx::query_as(
                    "SELECT channel, identity FROM contact_identities WHERE contact_id = $1 ORDER BY channel, identity",
                )
                .bind(id)
                .fetch_all(pool)
                .await?;
            (row, ids)
        });
        let row = row.ok_or_else(|| Error::NotFound {
            what: "contact",
            id: id.to_owned(),
        })?;
        Ok(Contact {
            id: row.id,
            display_name: row.display_name,
            identities: identities
                .into_iter()
                .map(IdentityRow::into_model)
                .collect::<Result<_>>()?,
            created_at: from_ms(row.created_at),
        })
    }

    /// The newest contacts, at most `limit`.
    pub async fn contacts(&self, limit: i64) -> Result<Vec<Contact>> {
        let ids: Vec<String> = on_driver!(self, |pool| sqlx::query_scalar(
            "SELECT id FROM contacts ORDER BY created_at DESC, id DESC LIMIT $1"
        )
        .bind(limit)
        .fetch_all(pool)
        .await?);
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.contact(&id).await?);
        }
        Ok(out)
    }

    /// One conversation.
    pub async fn conversation(&self, id: &str) -> Result<Conversation> {
        let row: Option<ConversationRow> =
            on_driver!(self, |pool| sqlx::query_as(SELECT_CONVERSATION)
                .bind(id)
                .fetch_optional(pool)
                .await?);
        let row = row.ok_or_else(|| Error::NotFound {
            what: "conversation",
            id: id.to_owned(),
        })?;
        let skills = self.conversation_skills(id).await?;
        row.into_model(skills)
    }

    async fn conversation_skills(&self, id: &str) -> Result<Vec<String>> {
        Ok(on_driver!(self, |pool| sqlx::query_scalar(
            "SELECT skill_id FROM conversation_skills WHERE conversation_id = $1 ORDER BY skill_id"
        )
        .bind(id)
        .fetch_all(pool)
        .await?))
    }

    /// Conversations, newest first.
    pub async fn conversations(&self, filter: &ConversationFilter) -> Result<Vec<Conversation>> {
        let status = filter.status.map(|s| s.as_str());
        let rows: Vec<ConversationRow> =
            on_driver!(self, |pool| sqlx::query_as(LIST_CONVERSATIONS)
                .bind(status)
                .bind(filter.limit)
                .fetch_all(pool)
                .await?);
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let skills = self.conversation_skills(&row.id).await?;
            out.push(row.into_model(skills)?);
        }
        Ok(out)
    }

    /// Sets the skills a conversation requires (replacing earlier ones).
    pub async fn set_conversation_skills(&self, id: &str, skill_ids: &[String]) -> Result<()> {
        on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query("DELETE FROM conversation_skills WHERE conversation_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            for skill in skill_ids {
                sqlx::query(
                    "INSERT INTO conversation_skills (conversation_id, skill_id) VALUES ($1, $2)",
                )
                .bind(id)
                .bind(skill)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// One message.
    pub async fn message(&self, id: &str) -> Result<Message> {
        let row: Option<MessageRow> = on_driver!(self, |pool| sqlx::query_as(SELECT_MESSAGE)
            .bind(id)
            .fetch_optional(pool)
            .await?);
        row.ok_or_else(|| Error::NotFound {
            what: "message",
            id: id.to_owned(),
        })?
        .into_model()
    }

    /// The messages of a conversation, oldest first.
    pub async fn messages(&self, conversation_id: &str) -> Result<Vec<Message>> {
        let rows: Vec<MessageRow> = on_driver!(self, |pool| sqlx::query_as(LIST_MESSAGES)
            .bind(conversation_id)
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(MessageRow::into_model).collect()
    }

    /// Stores an outbound message and its outbox row in one transaction.
    ///
    /// Returns the stored message and whether it was created now (`false` when an earlier request
    /// with the same idempotency key already created it).
    pub async fn enqueue_outbound(&self, new: &NewOutbound) -> Result<(Message, bool)> {
        let mut attempt = 0;
        loop {
            match self.try_enqueue_outbound(new).await {
                Err(e) if attempt < 3 && is_retryable(&e) => attempt += 1,
                other => return other,
            }
        }
    }

    async fn try_enqueue_outbound(&self, new: &NewOutbound) -> Result<(Message, bool)> {
        let now = now_ms();
        let content = serde_json::to_string(&new.content)
            .map_err(|e| Error::Corrupt(format!("message content: {e}")))?;
        let payload = new.payload.to_string();
        let (row, created): (MessageRow, bool) = on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let existing: Option<MessageRow> = match &new.idempotency_key {
                Some(key) => {
                    sqlx::query_as(SELECT_MESSAGE_BY_KEY)
                        .bind(&new.conversation_id)
                        .bind(key)
                        .fetch_optional(&mut *tx)
                        .await?
                }
                None => None,
            };
            if let Some(row) = existing {
                tx.commit().await?;
                (row, false)
            } else {
                let channel_app: Option<String> =
                    sqlx::query_scalar("SELECT channel_app FROM conversations WHERE id = $1")
                        .bind(&new.conversation_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                let channel_app = channel_app.ok_or_else(|| Error::NotFound {
                    what: "conversation",
                    id: new.conversation_id.clone(),
                })?;
                sqlx::query(
                    "INSERT INTO messages (id, conversation_id, channel_app, direction, external_id, kind, content, status, status_rank, status_reason, author_user_id, idempotency_key, created_at, updated_at) \
                     VALUES ($1, $2, $3, 'outbound', NULL, $4, $5, $6, $7, NULL, $8, $9, $10, $10)",
                )
                .bind(&new.id)
                .bind(&new.conversation_id)
                .bind(&channel_app)
                .bind(new.content.kind())
                .bind(&content)
                .bind(DeliveryStatus::Pending.as_str())
                .bind(DeliveryStatus::Pending.rank())
                .bind(&new.author_user_id)
                .bind(&new.idempotency_key)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO outbox (id, channel_app, payload, state, attempts, available_at, lease_until, last_error, created_at, sent_at) \
                     VALUES ($1, $2, $3, 'pending', 0, $4, NULL, NULL, $4, NULL)",
                )
                .bind(&new.id)
                .bind(&channel_app)
                .bind(&payload)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO conversation_events (conversation_id, kind, data, created_at) VALUES ($1, 'message_sent', $2, $3)",
                )
                .bind(&new.conversation_id)
                .bind(serde_json::json!({ "message_id": new.id }).to_string())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let contact_id: Option<String> =
                    sqlx::query_scalar("SELECT contact_id FROM conversations WHERE id = $1")
                        .bind(&new.conversation_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                let audit = super::audit::entries::outbound(
                    new.author_user_id.as_deref(),
                    contact_id.as_deref(),
                    &new.id,
                    &content,
                );
                append_audit(&mut tx.conn(), now, &audit).await?;
                let row: MessageRow = sqlx::query_as(SELECT_MESSAGE)
                    .bind(&new.id)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                (row, true)
            }
        });
        Ok((row.into_model()?, created))
    }

    /// Conversation events after `after_id` (the seam for routing and live updates).
    pub async fn conversation_events(
        &self,
        conversation_id: &str,
        after_id: i64,
    ) -> Result<Vec<(i64, String, serde_json::Value)>> {
        let rows: Vec<EventData> = on_driver!(self, |pool| {
            sqlx::query_as(
            "SELECT id, kind, data FROM conversation_events WHERE conversation_id = $1 AND id > $2 ORDER BY id"
        )
        .bind(conversation_id)
        .bind(after_id)
        .fetch_all(pool)
        .await?
        });
        rows.into_iter()
            .map(|e| {
                let data = serde_json::from_str(&e.data)
                    .map_err(|e| Error::Corrupt(format!("event data: {e}")))?;
                Ok((e.id, e.kind, data))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelled_out_column_lists_match() {
        for sql in [SELECT_CONVERSATION, LIST_CONVERSATIONS] {
            assert!(sql.contains(CONVERSATION_COLUMNS), "{sql}");
        }
        for sql in [SELECT_MESSAGE, LIST_MESSAGES, SELECT_MESSAGE_BY_KEY] {
            assert!(sql.contains(MESSAGE_COLUMNS), "{sql}");
        }
    }
}
