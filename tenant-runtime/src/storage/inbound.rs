//! The webhook write path: one transaction per callback, committed before the webhook answers.
//!
//! Every transaction also records the callback's signature nonce, so the nonce and its effect are
//! durable together: a replay after a restart is refused, and a callback whose transaction was
//! rolled back (crash, error) can be retried with the same nonce.

use super::{
    AsConn, Conn, Result, Store, WriteTx, append_audit, is_retryable, now_ms, on_driver, push_event,
};
use crate::domain::audit::prepare;
use crate::domain::{ChannelType, DeliveryStatus, MessageContent};

/// Records a callback's nonce inside its write transaction; `false` when it was already there
/// (a replay).
async fn claim_nonce(conn: &mut Conn<'_>, nonce: &Nonce) -> Result<bool> {
    let inserted = on_driver!(conn, |c| {
        sqlx::query(
        "INSERT INTO webhook_nonces (channel_app, nonce, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(&nonce.channel_app)
    .bind(&nonce.nonce)
    .bind(nonce.expires_at)
    .execute(&mut **c)
    .await?
    .rows_affected()
    });
    Ok(inserted == 1)
}

/// The id of the category every conversation falls into when nothing else applies.
pub const GENERAL_CATEGORY_ID: &str = "00000000-0000-0000-0000-000000000001";

/// A verified signature nonce to record with the callback's effects.
#[derive(Debug, Clone)]
pub struct Nonce {
    /// The channel app whose secret signed it.
    pub channel_app: String,
    /// The nonce.
    pub nonce: String,
    /// After this (epoch ms) the timestamp check alone rejects a replay, so the row may go.
    pub expires_at: i64,
}

/// A customer message taken from a `message` callback.
#[derive(Debug, Clone)]
pub struct InboundMessage {
    /// The configured channel app that received it.
    pub channel_app: String,
    /// The channel it came over.
    pub channel: ChannelType,
    /// The customer's identity on that channel.
    pub identity: String,
    /// The Conversation API message id (the idempotency key).
    pub external_id: String,
    /// What the customer sent.
    pub content: MessageContent,
    /// Category for a new conversation (the channel app's default).
    pub category_id: Option<String>,
    /// A conversation of this contact and app closed at or after this time (epoch ms) is
    /// reopened instead of a new one being started (`None`: always start a new one).
    pub reopen_closed_since: Option<i64>,
}

/// What [`Store::record_inbound`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundOutcome {
    /// Stored now.
    Stored {
        /// The new message.
        message_id: String,
        /// The conversation it joined or opened.
        conversation_id: String,
        /// The contact it came from.
        contact_id: String,
        /// Whether a new conversation was opened.
        opened_conversation: bool,
    },
    /// Already stored by an earlier delivery of the same callback; nothing changed.
    Duplicate {
        /// The message stored earlier.
        message_id: String,
    },
    /// The nonce was seen before: a replay; nothing changed.
    Replayed,
}

/// What [`Store::record_delivery_report`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// The message moved forward to this status.
    Updated {
        /// Our message id.
        message_id: String,
    },
    /// The report was older than what we know (or a repeat); nothing changed.
    Unchanged,
    /// No outbound message matches; nothing changed.
    UnknownMessage,
    /// The nonce was seen before: a replay; nothing changed.
    Replayed,
}

/// A delivery report taken from a `message_delivery_report` callback.
#[derive(Debug, Clone)]
pub struct DeliveryReport {
    /// The configured channel app that received it.
    pub channel_app: String,
    /// The Conversation API message id.
    pub external_id: String,
    /// The `correlation_id` we sent (our message id), when echoed.
    pub correlation_id: Option<String>,
    /// The reported status.
    pub status: DeliveryStatus,
    /// `code: description` of a failure.
    pub reason: Option<String>,
}

impl Store {
    /// Whether `nonce` was already used on `channel_app` (a read: used for callbacks we ignore).
    pub async fn nonce_seen(&self, channel_app: &str, nonce: &str) -> Result<bool> {
        let n: i64 = on_driver!(self, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM webhook_nonces WHERE channel_app = $1 AND nonce = $2"
        )
        .bind(channel_app)
        .bind(nonce)
        .fetch_one(pool)
        .await?);
        Ok(n > 0)
    }

    /// Forgets nonces whose timestamps are too old to pass the skew check anyway.
    pub async fn purge_nonces(&self, now_ms: i64) -> Result<u64> {
        Ok(on_driver!(self, |pool| sqlx::query(
            "DELETE FROM webhook_nonces WHERE expires_at < $1"
        )
        .bind(now_ms)
        .execute(pool)
        .await?
        .rows_affected()))
    }

    /// Stores an inbound message: finds or creates the contact and the open conversation,
    /// inserts the message unless it is already there, and records the nonce.
    pub async fn record_inbound(
        &self,
        nonce: &Nonce,
        msg: &InboundMessage,
    ) -> Result<InboundOutcome> {
        let mut attempt = 0;
        loop {
            // Two first messages from the same new customer race on the unique identity and
            // open-conversation indexes; the loser retries and then finds the winner's rows.
            match self.try_record_inbound(nonce, msg).await {
                Err(e) if attempt < 5 && is_retryable(&e) => attempt += 1,
                other => return other,
            }
        }
    }

    async fn try_record_inbound(
        &self,
        nonce: &Nonce,
        msg: &InboundMessage,
    ) -> Result<InboundOutcome> {
        let now = now_ms();
        let content = serde_json::to_string(&msg.content)
            .map_err(|e| super::Error::Corrupt(format!("message content: {e}")))?;
        // Look up first, outside the write transaction, in one round trip: on SQLite the write
        // lock is then held only for the writes. The lookups may be stale by the time we write;
        // every write below is guarded (unique indexes, `status <> 'closed'`) and a guard that
        // trips makes the caller retry from here with fresh lookups.
        let found: Lookup = on_driver!(self, |pool| {
            sqlx::query_as(LOOKUP)
                .bind(&msg.channel_app)
                .bind(&msg.external_id)
                .bind(msg.channel.as_str())
                .bind(&msg.identity)
                // No window: a bound no closed conversation reaches.
                .bind(msg.reopen_closed_since.unwrap_or(i64::MAX))
                .fetch_one(pool)
                .await?
        });
        if let (true, None, Some(contact), Some(conversation)) = (
            self.dialect().writes_in_with(),
            &found.existing,
            &found.contact_id,
            &found.open,
        ) {
            let fast = on_driver!(self, |pool| {
                let mut c = pool.acquire().await?;
                returning_customer_fast_path(
                    &mut c.conn(),
                    now,
                    nonce,
                    msg,
                    &content,
                    contact,
                    conversation,
                )
                .await?
            });
            if let Some(outcome) = fast {
                return Ok(outcome);
            }
        }
        on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let outcome = store_inbound(&mut tx.conn(), nonce, msg, found, &content, now).await?;
            // A replay rolls back (the transaction drops): it has no side effect.
            if outcome != InboundOutcome::Replayed {
                tx.commit().await?;
            }
            Ok(outcome)
        })
    }

    /// Applies a delivery report monotonically and records the nonce.
    pub async fn record_delivery_report(
        &self,
        nonce: &Nonce,
        report: &DeliveryReport,
    ) -> Result<ReportOutcome> {
        let now = now_ms();
        let correlation = report.correlation_id.as_deref().unwrap_or("");
        let outcome = on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let fresh = claim_nonce(&mut tx.conn(), nonce).await?;
            if !fresh {
                return Ok(ReportOutcome::Replayed);
            }
            // Match on the Conversation API id, or on our own id echoed as correlation_id: the
            // report can overtake the `messages:send` response that tells us the external id.
            let target: Option<ReportTarget> = sqlx::query_as(
                "SELECT id, conversation_id, status_rank FROM messages WHERE direction = 'outbound' AND channel_app = $1 AND (external_id = $2 OR id = $3)",
            )
            .bind(&report.channel_app)
            .bind(&report.external_id)
            .bind(correlation)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(ReportTarget { id, .. }) = &target {
                // The report may have overtaken the send response: it tells the external id too.
                sqlx::query(
                    "UPDATE messages SET external_id = $1 WHERE id = $2 AND external_id IS NULL",
                )
                .bind(&report.external_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            let outcome = match target {
                None => ReportOutcome::UnknownMessage,
                Some(ReportTarget {
                    id,
                    conversation_id,
                    status_rank,
                }) if report.status.rank() > status_rank => {
                    sqlx::query(
                        "UPDATE messages SET status = $1, status_rank = $2, status_reason = $3, updated_at = $4 WHERE id = $5 AND status_rank < $2",
                    )
                    .bind(report.status.as_str())
                    .bind(report.status.rank())
                    .bind(&report.reason)
                    .bind(now)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "INSERT INTO conversation_events (conversation_id, kind, data, created_at) VALUES ($1, 'message_status', $2, $3)",
                    )
                    .bind(&conversation_id)
                    .bind(serde_json::json!({ "message_id": id, "status": report.status }).to_string())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    ReportOutcome::Updated { message_id: id }
                }
                Some(_) => ReportOutcome::Unchanged,
            };
            tx.commit().await?;
            outcome
        });
        Ok(outcome)
    }
}

/// The outbound message a delivery report is about.
#[derive(sqlx::FromRow)]
struct ReportTarget {
    id: String,
    conversation_id: String,
    status_rank: i64,
}

/// What the webhook write path looks up before it writes, in one round trip: the message if it
/// was stored already, the sender's contact, their open conversation on this channel app, and
/// a recently closed one that a new message reopens.
#[derive(sqlx::FromRow)]
struct Lookup {
    existing: Option<String>,
    contact_id: Option<String>,
    open: Option<String>,
    reopenable: Option<String>,
}

/// `$1` channel app, `$2` external id, `$3` channel, `$4` identity, `$5` reopen window start.
const LOOKUP: &str = "SELECT (SELECT id FROM messages WHERE channel_app = $1 AND external_id = $2) AS existing, \
        (SELECT contact_id FROM contact_identities WHERE channel = $3 AND identity = $4) AS contact_id, \
        (SELECT c.id FROM conversations c JOIN contact_identities i ON i.contact_id = c.contact_id \
          WHERE i.channel = $3 AND i.identity = $4 AND c.channel_app = $1 AND c.status <> 'closed') AS open, \
        (SELECT c.id FROM conversations c JOIN contact_identities i ON i.contact_id = c.contact_id \
          WHERE i.channel = $3 AND i.identity = $4 AND c.channel_app = $1 AND c.status = 'closed' \
            AND c.closed_at >= $5 ORDER BY c.closed_at DESC LIMIT 1) AS reopenable";

/// The general webhook write path, inside the caller's transaction: nonce, contact, conversation
/// (joined, reopened or opened), message, events and audit entries.
async fn store_inbound(
    conn: &mut Conn<'_>,
    nonce: &Nonce,
    msg: &InboundMessage,
    found: Lookup,
    content: &str,
    now: i64,
) -> Result<InboundOutcome> {
    if !claim_nonce(conn, nonce).await? {
        return Ok(InboundOutcome::Replayed);
    }
    if let Some(message_id) = found.existing {
        return Ok(InboundOutcome::Duplicate { message_id });
    }
    let (contact_id, new_identity) = match found.contact_id {
        Some(id) => (id, None),
        None => (
            create_contact(conn, msg, now).await?,
            Some((msg.channel.as_str(), msg.identity.as_str())),
        ),
    };
    let (conversation_id, opened) = match (found.open, found.reopenable) {
        (Some(id), _) => (touch_conversation(conn, &id, now).await?, false),
        (None, Some(id)) => (
            reopen_conversation(conn, &id, &contact_id, now).await?,
            false,
        ),
        (None, None) => (open_conversation(conn, msg, &contact_id, now).await?, true),
    };
    let message_id = super::new_id();
    // A concurrent delivery of the same message trips the unique (channel_app, external_id)
    // index; the retry then finds it and answers Duplicate.
    on_driver!(conn, |c| {
        sqlx::query(
            "INSERT INTO messages (id, conversation_id, channel_app, direction, external_id, kind, content, status, status_rank, status_reason, author_user_id, idempotency_key, created_at, updated_at) \
             VALUES ($1, $2, $3, 'inbound', $4, $5, $6, $7, $8, NULL, NULL, NULL, $9, $9)",
        )
        .bind(&message_id)
        .bind(&conversation_id)
        .bind(&msg.channel_app)
        .bind(&msg.external_id)
        .bind(msg.content.kind())
        .bind(content)
        .bind(DeliveryStatus::Received.as_str())
        .bind(DeliveryStatus::Received.rank())
        .bind(now)
        .execute(&mut **c)
        .await?;
        push_event(
            &mut c.conn(),
            &conversation_id,
            "message_received",
            serde_json::json!({ "message_id": message_id }).to_string(),
            now,
        )
        .await?;
    });
    let audit = super::audit::entries::inbound(
        &msg.channel_app,
        &contact_id,
        new_identity,
        &message_id,
        content,
    );
    append_audit(conn, now, &audit).await?;
    Ok(InboundOutcome::Stored {
        message_id,
        conversation_id,
        contact_id,
        opened_conversation: opened,
    })
}

/// A new contact for the sender's identity; returns its id. A concurrent first message from
/// the same identity trips the identity's primary key (the caller retries).
async fn create_contact(conn: &mut Conn<'_>, msg: &InboundMessage, now: i64) -> Result<String> {
    let id = super::new_id();
    on_driver!(conn, |c| {
        sqlx::query("INSERT INTO contacts (id, display_name, created_at) VALUES ($1, NULL, $2)")
            .bind(&id)
            .bind(now)
            .execute(&mut **c)
            .await?;
        sqlx::query(
            "INSERT INTO contact_identities (channel, identity, contact_id, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(msg.channel.as_str())
        .bind(&msg.identity)
        .bind(&id)
        .bind(now)
        .execute(&mut **c)
        .await?;
    });
    Ok(id)
}

/// Records a new customer message on the open conversation `id`; returns the id. A conversation
/// closed since the lookup makes the caller start over (a new one opens).
async fn touch_conversation(conn: &mut Conn<'_>, id: &str, now: i64) -> Result<String> {
    let touched = on_driver!(conn, |c| {
        sqlx::query(
        "UPDATE conversations SET last_inbound_at = $1, updated_at = $1 WHERE id = $2 AND status <> 'closed'",
    )
    .bind(now)
    .bind(id)
    .execute(&mut **c)
    .await?
    .rows_affected()
    });
    if touched == 0 {
        return Err(super::Error::Contended);
    }
    Ok(id.to_owned())
}

/// The customer writes again soon after a close: the same conversation (history, category,
/// skills) goes back to the queue, at the end of it. The partial unique index still allows only
/// one open conversation; reopened or deleted since the lookup makes the caller start over.
async fn reopen_conversation(
    conn: &mut Conn<'_>,
    id: &str,
    contact_id: &str,
    now: i64,
) -> Result<String> {
    on_driver!(conn, |c| {
        let touched = sqlx::query(
            "UPDATE conversations SET status = 'queued', assigned_user_id = NULL, assigned_at = NULL, closed_at = NULL, \
             enqueued_at = $1, last_inbound_at = $1, updated_at = $1 WHERE id = $2 AND status = 'closed'",
        )
        .bind(now)
        .bind(id)
        .execute(&mut **c)
        .await?
        .rows_affected();
        if touched == 0 {
            return Err(super::Error::Contended);
        }
        push_event(
            &mut c.conn(),
            id,
            "conversation_reopened",
            serde_json::json!({ "contact_id": contact_id }).to_string(),
            now,
        )
        .await?;
    });
    Ok(id.to_owned())
}

/// Opens a conversation in the message's category (General by default) with the category's
/// skill requirements; returns its id. The partial unique index allows one open conversation
/// per contact and app.
async fn open_conversation(
    conn: &mut Conn<'_>,
    msg: &InboundMessage,
    contact_id: &str,
    now: i64,
) -> Result<String> {
    let id = super::new_id();
    let category = msg.category_id.as_deref().unwrap_or(GENERAL_CATEGORY_ID);
    on_driver!(conn, |c| {
        sqlx::query(
            "INSERT INTO conversations (id, contact_id, channel, channel_app, identity, category_id, status, assigned_user_id, created_at, updated_at, assigned_at, closed_at, last_inbound_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'queued', NULL, $7, $7, NULL, NULL, $7)",
        )
        .bind(&id)
        .bind(contact_id)
        .bind(msg.channel.as_str())
        .bind(&msg.channel_app)
        .bind(&msg.identity)
        .bind(category)
        .bind(now)
        .execute(&mut **c)
        .await?;
        // Skill requirements start as the category's; routing may refine them.
        sqlx::query(
            "INSERT INTO conversation_skills (conversation_id, skill_id) SELECT $1, skill_id FROM category_skills WHERE category_id = $2",
        )
        .bind(&id)
        .bind(category)
        .execute(&mut **c)
        .await?;
        push_event(
            &mut c.conn(),
            &id,
            "conversation_opened",
            serde_json::json!({ "contact_id": contact_id }).to_string(),
            now,
        )
        .await?;
    });
    Ok(id)
}

/// Fast path for the common case, a returning customer with an open conversation, where the
/// dialect writes several tables from one `WITH` (PostgreSQL):
/// the writes of the general path (nonce, conversation touch, message, event, audit entry) as one
/// statement, i.e. one round trip and one implicit transaction instead of seven.
///
/// Every insert hangs off the conversation update, which only matches while the conversation is
/// open and the nonce unused. `None` means nothing was written, and the general path sorts out
/// why (replay, closed meanwhile). A concurrent redelivery or replay trips a unique index, which
/// rolls the statement back and makes the caller retry.
async fn returning_customer_fast_path(
    conn: &mut Conn<'_>,
    now: i64,
    nonce: &Nonce,
    msg: &InboundMessage,
    content: &str,
    contact_id: &str,
    conversation_id: &str,
) -> Result<Option<InboundOutcome>> {
    let message_id = super::new_id();
    let changes =
        super::audit::entries::inbound(&msg.channel_app, contact_id, None, &message_id, content);
    let [change] = changes.as_slice() else {
        // The hook records more than the content: leave it to the general path.
        return Ok(None);
    };
    let audit = prepare(now, change);
    let touched: i64 = on_driver!(conn, |c| {
        sqlx::query_scalar(
        "WITH u AS ( \
           UPDATE conversations SET last_inbound_at = $4, updated_at = $4 \
           WHERE id = $5 AND status <> 'closed' \
             AND NOT EXISTS (SELECT 1 FROM webhook_nonces WHERE channel_app = $1 AND nonce = $2) \
           RETURNING id), \
         n AS (INSERT INTO webhook_nonces (channel_app, nonce, expires_at) SELECT $1, $2, $3 FROM u), \
         m AS (INSERT INTO messages (id, conversation_id, channel_app, direction, external_id, kind, content, status, status_rank, status_reason, author_user_id, idempotency_key, created_at, updated_at) \
           SELECT $6, u.id, $7, 'inbound', $8, $9, $10, $11, $12, NULL, NULL, NULL, $4, $4 FROM u), \
         e AS (INSERT INTO conversation_events (conversation_id, kind, data, created_at) \
           SELECT u.id, 'message_received', $13, $4 FROM u), \
         a AS (INSERT INTO audit_log (at, actor, action, entity, entity_id, subject_id, attribute, new_value, salt, value_hash) \
           SELECT $4, $14, $15, $16, $17, $18, $19, $20, $21, $22 FROM u) \
         SELECT COUNT(*) FROM u",
    )
    .bind(&nonce.channel_app)
    .bind(&nonce.nonce)
    .bind(nonce.expires_at)
    .bind(now)
    .bind(conversation_id)
    .bind(&message_id)
    .bind(&msg.channel_app)
    .bind(&msg.external_id)
    .bind(msg.content.kind())
    .bind(content)
    .bind(DeliveryStatus::Received.as_str())
    .bind(DeliveryStatus::Received.rank())
    .bind(serde_json::json!({ "message_id": message_id }).to_string())
    .bind(&audit.actor)
    .bind(audit.action)
    .bind(&audit.entity)
    .bind(&audit.entity_id)
    .bind(&audit.subject_id)
    .bind(&audit.attribute)
    .bind(&audit.new_value)
    .bind(&audit.salt)
    .bind(&audit.value_hash)
    .fetch_one(&mut **c)
    .await?
    });
    Ok((touched == 1).then(|| InboundOutcome::Stored {
        message_id,
        conversation_id: conversation_id.to_owned(),
        contact_id: contact_id.to_owned(),
        opened_conversation: false,
    }))
}
