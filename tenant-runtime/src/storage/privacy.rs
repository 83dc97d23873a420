//! Personal data queries: contact details, DPO search and subject data, anonymization,
//! contact edits and imports, and the retention batches. Every change is audited in the same
//! transaction that makes it.

use super::audit::append_audit;
use super::dialect::advisory_lock;
use super::messages::IdentityRow;
use super::{
    AsConn, Conn, Error, Result, Store, WriteTx, from_ms, is_retryable, new_id, on_driver,
};
use crate::domain::anonymize::{ANONYMIZED_NAME, ANONYMIZED_TEXT, anonymize_content_json};
use crate::domain::api::{
    AnonymizeReport, Contact, ContactDetails, ContactIdentity, ContactInput, SubjectData,
    normalize_phone,
};
use crate::domain::audit::{AuditAction, AuditChange};

/// What anonymizing one conversation replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Redacted {
    /// Messages whose content was replaced.
    pub messages: u64,
    /// Internal notes whose text was replaced.
    pub notes: u64,
}

/// A retention job's resumable position.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Checkpoint {
    /// The job.
    pub job: String,
    /// The cutoff the run started with (a resumed run keeps it).
    pub cutoff: i64,
    /// Sort key of the last processed row.
    pub cursor_at: i64,
    /// Id of the last processed row.
    pub cursor_id: String,
    /// Rows processed so far in this run.
    pub processed: i64,
}

fn like_pattern(q: &str) -> String {
    let escaped = q
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// A contact's own columns as read (identities and attributes come apart).
#[derive(sqlx::FromRow)]
struct DetailsRow {
    id: String,
    display_name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    created_at: i64,
    anonymized_at: Option<i64>,
}

/// A message's content as read.
#[derive(sqlx::FromRow)]
struct ContentRow {
    id: String,
    content: String,
}

/// A contact's identity or attribute, by contact.
#[derive(sqlx::FromRow)]
struct ContactItem {
    contact_id: String,
    name: String,
    value: String,
}

/// A conversation due for retention, with its position in the job.
#[derive(sqlx::FromRow)]
struct DueRow {
    at: i64,
    id: String,
    contact_id: String,
}

/// How many conversations a contact has, and how many still keep content.
#[derive(sqlx::FromRow)]
struct KeptRow {
    total: i64,
    kept: i64,
}

// Transaction-level privacy operations, shared by the DPO actions and the retention job:
// they run inside the caller's write transaction.

/// Replaces the content of one conversation (messages and internal notes); returns how
/// many of each were replaced.
async fn anonymize_conversation_tx(conn: &mut Conn<'_>, id: &str, now: i64) -> Result<Redacted> {
    on_driver!(conn, |c| {
        let rows: Vec<ContentRow> = sqlx::query_as(
            "SELECT id, content FROM messages WHERE conversation_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&mut **c)
        .await?;
        for row in &rows {
            sqlx::query("UPDATE messages SET content = $1 WHERE id = $2")
                .bind(anonymize_content_json(&row.content))
                .bind(&row.id)
                .execute(&mut **c)
                .await?;
        }
        // Notes are the agents' free text about the customer: replaced like message
        // texts, keeping the row (author, time) so counts survive as they do for messages.
        let notes = sqlx::query(
            "UPDATE conversation_notes SET text = $1 WHERE conversation_id = $2 AND text <> $1",
        )
        .bind(ANONYMIZED_TEXT)
        .bind(id)
        .execute(&mut **c)
        .await?
        .rows_affected();
        // The outbox payload repeats the text and the recipient.
        sqlx::query(
                "UPDATE outbox SET payload = '{}', last_error = NULL WHERE id IN (SELECT id FROM messages WHERE conversation_id = $1)",
            )
            .bind(id)
            .execute(&mut **c)
            .await?;
        sqlx::query(
                "UPDATE audit_log SET new_value = NULL, salt = NULL, redacted_at = $2 \
                 WHERE redacted_at IS NULL AND entity = 'message' AND entity_id IN (SELECT id FROM messages WHERE conversation_id = $1)",
            )
            .bind(id)
            .bind(now)
            .execute(&mut **c)
            .await?;
        // Decisions explain who got the conversation and why (candidates, sticky
        // history): they go with the content they explain.
        sqlx::query("DELETE FROM routing_decisions WHERE conversation_id = $1")
            .bind(id)
            .execute(&mut **c)
            .await?;
        sqlx::query(
            "UPDATE conversations SET identity = 'anonymized', anonymized_at = $2, \
                 status = 'closed', closed_at = COALESCE(closed_at, $2) WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .execute(&mut **c)
        .await?;
        Ok(Redacted {
            messages: rows.len() as u64,
            notes,
        })
    })
}

/// Replaces every piece of personal data of one contact.
async fn anonymize_contact_tx(
    conn: &mut Conn<'_>,
    id: &str,
    actor: &str,
    now: i64,
) -> Result<AnonymizeReport> {
    on_driver!(conn, |c| {
        let exists: Option<String> = sqlx::query_scalar("SELECT id FROM contacts WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut **c)
            .await?;
        if exists.is_none() {
            return Err(Error::NotFound {
                what: "contact",
                id: id.to_owned(),
            });
        }
        let mut report = AnonymizeReport {
            contact_id: id.to_owned(),
            ..Default::default()
        };
        let conversations: Vec<String> =
            sqlx::query_scalar("SELECT id FROM conversations WHERE contact_id = $1 ORDER BY id")
                .bind(id)
                .fetch_all(&mut **c)
                .await?;
        for conversation in &conversations {
            let redacted = anonymize_conversation_tx(&mut c.conn(), conversation, now).await?;
            report.messages += redacted.messages;
            report.notes += redacted.notes;
            report.conversations += 1;
        }
        let identities: Vec<IdentityRow> = sqlx::query_as(
                "SELECT channel, identity FROM contact_identities WHERE contact_id = $1 AND identity NOT LIKE 'anonymized:%'",
            )
            .bind(id)
            .fetch_all(&mut **c)
            .await?;
        for i in &identities {
            sqlx::query(
                "UPDATE contact_identities SET identity = $1 WHERE channel = $2 AND identity = $3",
            )
            .bind(format!("anonymized:{}", new_id()))
            .bind(&i.channel)
            .bind(&i.identity)
            .execute(&mut **c)
            .await?;
        }
        report.identities = identities.len() as u64;
        // Attributes are free text about the person: nothing of them is kept.
        sqlx::query("DELETE FROM contact_attributes WHERE contact_id = $1")
            .bind(id)
            .execute(&mut **c)
            .await?;
        sqlx::query(
                "UPDATE contacts SET display_name = CASE WHEN display_name IS NULL THEN NULL ELSE $2 END, \
                 email = NULL, phone = NULL, anonymized_at = $3 WHERE id = $1",
            )
            .bind(id)
            .bind(ANONYMIZED_NAME)
            .bind(now)
            .execute(&mut **c)
            .await?;
        report.audit_entries_redacted = sqlx::query(
                "UPDATE audit_log SET new_value = NULL, salt = NULL, redacted_at = $2 WHERE subject_id = $1 AND redacted_at IS NULL",
            )
            .bind(id)
            .bind(now)
            .execute(&mut **c)
            .await?
            .rows_affected();
        let changes: Vec<AuditChange> = [
            "display_name",
            "email",
            "phone",
            "identities",
            "attributes",
            "messages",
            "notes",
        ]
        .into_iter()
        .map(|attribute| {
            AuditChange::new(
                actor,
                AuditAction::Anonymize,
                "contact",
                id,
                attribute,
                None,
            )
            .about(id)
        })
        .collect();
        append_audit(&mut c.conn(), now, &changes).await?;
        Ok(report)
    })
}

/// Deletes one conversation with its messages, notes, outbox rows, events and skills.
async fn delete_conversation_tx(conn: &mut Conn<'_>, id: &str, now: i64) -> Result<()> {
    on_driver!(conn, |c| {
        sqlx::query(
                "UPDATE audit_log SET new_value = NULL, salt = NULL, redacted_at = $2 \
                 WHERE redacted_at IS NULL AND entity = 'message' AND entity_id IN (SELECT id FROM messages WHERE conversation_id = $1)",
            )
            .bind(id)
            .bind(now)
            .execute(&mut **c)
            .await?;
        for sql in [
            "DELETE FROM outbox WHERE id IN (SELECT id FROM messages WHERE conversation_id = $1)",
            "DELETE FROM messages WHERE conversation_id = $1",
            // The foreign key cascades too; explicit, as for routing decisions.
            "DELETE FROM conversation_notes WHERE conversation_id = $1",
            "DELETE FROM conversation_events WHERE conversation_id = $1",
            "DELETE FROM conversation_skills WHERE conversation_id = $1",
            // The foreign key cascades too; explicit so the list says what goes.
            "DELETE FROM routing_decisions WHERE conversation_id = $1",
            "DELETE FROM conversations WHERE id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut **c).await?;
        }
        Ok(())
    })
}

/// Creates a contact from `input` with `attributes`, audited as `actor`.
async fn create_contact_tx(
    conn: &mut Conn<'_>,
    input: &ContactInput,
    attributes: &std::collections::BTreeMap<String, String>,
    actor: &str,
    now: i64,
) -> Result<String> {
    on_driver!(conn, |c| {
        let id = new_id();
        sqlx::query(
                "INSERT INTO contacts (id, display_name, email, phone, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&id)
            .bind(&input.display_name)
            .bind(&input.email)
            .bind(&input.phone)
            .bind(now)
            .execute(&mut **c)
            .await?;
        let mut changes = Vec::new();
        for (attribute, value) in [
            ("display_name", &input.display_name),
            ("email", &input.email),
            ("phone", &input.phone),
        ] {
            if value.is_some() {
                changes.push(
                    AuditChange::new(
                        actor,
                        AuditAction::Create,
                        "contact",
                        &id,
                        attribute,
                        value.clone(),
                    )
                    .about(&id),
                );
            }
        }
        for ident in &input.identities {
            sqlx::query(
                    "INSERT INTO contact_identities (channel, identity, contact_id, created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(ident.channel.as_str())
                .bind(&ident.identity)
                .bind(&id)
                .bind(now)
                .execute(&mut **c)
                .await
                .map_err(|e| match &e {
                    sqlx::Error::Database(db) if db.is_unique_violation() => Error::Conflict(format!(
                        "identity {}:{}",
                        ident.channel, ident.identity
                    )),
                    _ => Error::Database(e),
                })?;
            changes.push(
                AuditChange::new(
                    actor,
                    AuditAction::Create,
                    "contact_identity",
                    &id,
                    format!("identity:{}", ident.channel),
                    Some(ident.identity.clone()),
                )
                .about(&id),
            );
        }
        // Audited per key as an attribute edit would be (`contact_attribute`).
        for (key, value) in attributes {
            sqlx::query(
                    "INSERT INTO contact_attributes (contact_id, key, value, updated_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(&id)
                .bind(key)
                .bind(value)
                .bind(now)
                .execute(&mut **c)
                .await?;
        }
        changes.extend(super::audit::entries::contact_attributes(
            actor,
            &id,
            &std::collections::BTreeMap::new(),
            attributes,
        ));
        append_audit(&mut c.conn(), now, &changes).await?;
        Ok(id)
    })
}

/// Saves a retention checkpoint.
async fn save_checkpoint_tx(conn: &mut Conn<'_>, cp: &Checkpoint, now: i64) -> Result<()> {
    on_driver!(conn, |c| {
        sqlx::query(
                "INSERT INTO retention_checkpoints (job, cutoff, cursor_at, cursor_id, processed, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (job) DO UPDATE SET cutoff = excluded.cutoff, cursor_at = excluded.cursor_at, cursor_id = excluded.cursor_id, \
                 processed = excluded.processed, updated_at = excluded.updated_at",
            )
            .bind(&cp.job)
            .bind(cp.cutoff)
            .bind(cp.cursor_at)
            .bind(&cp.cursor_id)
            .bind(cp.processed)
            .bind(now)
            .execute(&mut **c)
            .await?;
        Ok(())
    })
}

/// Advisory lock key that serializes retention batches on PostgreSQL ("retent" in ASCII).
const RETENTION_LOCK: i64 = 0x7265_7465_6e74;

/// Which retention step a batch runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetentionStep {
    /// Replace the content of closed conversations older than the cutoff.
    Anonymize,
    /// Delete closed conversations older than the cutoff.
    Delete,
}

impl RetentionStep {
    /// The checkpoint's job name.
    pub(crate) fn job(self) -> &'static str {
        match self {
            RetentionStep::Anonymize => "anonymize_conversations",
            RetentionStep::Delete => "delete_conversations",
        }
    }
}

impl Store {
    /// One contact with all its details.
    pub async fn contact_details(&self, id: &str) -> Result<ContactDetails> {
        let row: Option<DetailsRow> = on_driver!(self, |pool| {
            sqlx::query_as(
            "SELECT id, display_name, email, phone, created_at, anonymized_at FROM contacts WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(pool)
        .await?
        });
        let row = row.ok_or_else(|| Error::NotFound {
            what: "contact",
            id: id.to_owned(),
        })?;
        let Contact { identities, .. } = self.contact(id).await?;
        let mut out = details(row, identities);
        out.attributes = self.contact_attributes(id).await?;
        Ok(out)
    }

    /// Every contact with its details, oldest first.
    pub async fn all_contact_details(&self) -> Result<Vec<ContactDetails>> {
        let (rows, idents, attributes): (Vec<DetailsRow>, Vec<ContactItem>, Vec<ContactItem>) = on_driver!(
            self,
            |pool| {
                let rows = sqlx::query_as(
                    "SELECT id, display_name, email, phone, created_at, anonymized_at FROM contacts ORDER BY created_at, id",
                )
                .fetch_all(pool)
                .await?;
                let idents = sqlx::query_as(
                    "SELECT contact_id, channel AS name, identity AS value FROM contact_identities ORDER BY contact_id, channel, identity",
                )
                .fetch_all(pool)
                .await?;
                let attributes = sqlx::query_as(
                    "SELECT contact_id, key AS name, value FROM contact_attributes ORDER BY contact_id, key",
                )
                .fetch_all(pool)
                .await?;
                (rows, idents, attributes)
            }
        );
        let mut attributes_of: std::collections::HashMap<
            String,
            std::collections::BTreeMap<String, String>,
        > = std::collections::HashMap::new();
        for a in attributes {
            attributes_of
                .entry(a.contact_id)
                .or_default()
                .insert(a.name, a.value);
        }
        let mut by_contact: std::collections::HashMap<String, Vec<ContactIdentity>> =
            std::collections::HashMap::new();
        for i in idents {
            by_contact
                .entry(i.contact_id)
                .or_default()
                .push(ContactIdentity {
                    channel: i.name.parse().map_err(super::corrupt)?,
                    identity: i.value,
                });
        }
        Ok(rows
            .into_iter()
            .map(|row| {
                let identities = by_contact.remove(&row.id).unwrap_or_default();
                let attributes = attributes_of.remove(&row.id).unwrap_or_default();
                ContactDetails {
                    attributes,
                    ..details(row, identities)
                }
            })
            .collect())
    }

    /// Ids of the contacts `q` names: part of a name, an e-mail address, a phone number, a
    /// channel identity (phone numbers also match MSISDN identities) or an attribute's value. Earlier values count
    /// too: an address the contact had before an edit is still in the audit log, and so still
    /// the contact's personal data.
    pub(crate) async fn search_subjects(&self, q: &str, limit: i64) -> Result<Vec<String>> {
        let q = q.trim();
        // A one-letter name search would return everyone.
        let name = (q.chars().count() >= 2).then(|| like_pattern(q));
        let phone = normalize_phone(q);
        Ok(on_driver!(self, |pool| {
            sqlx::query_scalar(
            "SELECT DISTINCT c.id FROM contacts c LEFT JOIN contact_identities i ON i.contact_id = c.id \
             WHERE ($1 IS NOT NULL AND LOWER(c.display_name) LIKE $1 ESCAPE '\\') OR LOWER(c.email) = $2 \
             OR ($3 IS NOT NULL AND (c.phone = $3 OR i.identity = $3)) OR i.identity = $4 \
             OR c.id IN (SELECT contact_id FROM contact_attributes WHERE LOWER(value) = $2) \
             OR c.id IN (SELECT subject_id FROM audit_log WHERE subject_id IS NOT NULL \
                 AND entity IN ('contact', 'contact_identity', 'contact_attribute') AND new_value IS NOT NULL \
                 AND (LOWER(new_value) = $2 OR new_value = $3 OR new_value = $4)) \
             ORDER BY c.id LIMIT $5"
        )
        .bind(&name)
        .bind(q.to_lowercase())
        .bind(&phone)
        .bind(q)
        .bind(limit)
        .fetch_all(pool)
        .await?
        }))
    }

    /// Everything stored about contact `id`.
    pub(crate) async fn subject_data(&self, id: &str) -> Result<SubjectData> {
        let contact = self.contact_details(id).await?;
        let ids: Vec<String> = on_driver!(self, |pool| sqlx::query_scalar(
            "SELECT id FROM conversations WHERE contact_id = $1 ORDER BY created_at, id"
        )
        .bind(id)
        .fetch_all(pool)
        .await?);
        let mut conversations = Vec::with_capacity(ids.len());
        let mut messages = Vec::new();
        let mut notes = Vec::new();
        for c in &ids {
            conversations.push(self.conversation(c).await?);
            messages.extend(self.messages(c).await?);
            notes.extend(self.notes(c).await?);
        }
        let audit = self
            .audit_entries(&super::AuditQuery {
                subject_id: Some(id.to_owned()),
                after_seq: 0,
                limit: 0,
            })
            .await?;
        Ok(SubjectData {
            contact,
            conversations,
            messages,
            notes,
            audit,
        })
    }

    /// Replaces every piece of personal data of contact `id`, in one audited transaction.
    ///
    /// On PostgreSQL the redaction of not yet chained audit rows can meet the chainer's batch
    /// update in the opposite row order; the database then aborts one side (deadlock), and if it
    /// is this one the whole transaction runs again: an anonymization must not fail for that.
    pub async fn anonymize_contact(
        &self,
        id: &str,
        actor: &str,
        now: i64,
    ) -> Result<AnonymizeReport> {
        let mut attempt = 0;
        loop {
            match self.try_anonymize_contact(id, actor, now).await {
                Err(e) if attempt < 3 && is_retryable(&e) => attempt += 1,
                other => return other,
            }
        }
    }

    async fn try_anonymize_contact(
        &self,
        id: &str,
        actor: &str,
        now: i64,
    ) -> Result<AnonymizeReport> {
        Ok(on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let report = anonymize_contact_tx(&mut tx.conn(), id, actor, now).await?;
            tx.commit().await?;
            report
        }))
    }

    /// Erases a user's personal data (name, e-mail, password) on explicit request: the row
    /// stays, so messages they wrote and conversations they handled keep their counts and
    /// links, but nothing identifies the person any more. Audited as `actor`.
    ///
    /// Retried like [`Store::anonymize_contact`] when the database aborts it for a deadlock.
    pub(crate) async fn anonymize_user(&self, id: &str, actor: &str, now: i64) -> Result<u64> {
        let mut attempt = 0;
        loop {
            match self.try_anonymize_user(id, actor, now).await {
                Err(e) if attempt < 3 && is_retryable(&e) => attempt += 1,
                other => return other,
            }
        }
    }

    async fn try_anonymize_user(&self, id: &str, actor: &str, now: i64) -> Result<u64> {
        let redacted = on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let n = sqlx::query(
                "UPDATE users SET email = $2, display_name = $3, password_hash = NULL WHERE id = $1",
            )
            .bind(id)
            .bind(format!("anonymized-{id}@invalid"))
            .bind(ANONYMIZED_NAME)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Err(Error::NotFound {
                    what: "user",
                    id: id.to_owned(),
                });
            }
            let redacted = sqlx::query(
                "UPDATE audit_log SET new_value = NULL, salt = NULL, redacted_at = $2 WHERE subject_id = $1 AND redacted_at IS NULL",
            )
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let changes: Vec<AuditChange> = ["email", "display_name", "password_hash"]
                .into_iter()
                .map(|attribute| {
                    AuditChange::new(actor, AuditAction::Anonymize, "user", id, attribute, None)
                        .about(id)
                })
                .collect();
            append_audit(&mut tx.conn(), now, &changes).await?;
            tx.commit().await?;
            redacted
        });
        Ok(redacted)
    }

    /// Creates a contact from `input` with `attributes` (both validated by the caller), in one
    /// transaction audited as `actor`.
    pub async fn create_contact(
        &self,
        input: &ContactInput,
        attributes: &std::collections::BTreeMap<String, String>,
        actor: &str,
        now: i64,
    ) -> Result<String> {
        Ok(on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let id = create_contact_tx(&mut tx.conn(), input, attributes, actor, now).await?;
            tx.commit().await?;
            id
        }))
    }

    /// Sets the details of contact `id` that `input` names (`Some("")` clears one); identities
    /// in `input` are added. Each changed attribute is audited as `actor`.
    pub(crate) async fn update_contact(
        &self,
        id: &str,
        input: &ContactInput,
        actor: &str,
        now: i64,
    ) -> Result<ContactDetails> {
        let current = self.contact_details(id).await?;
        let mut changes = Vec::new();
        let mut set = |attribute: &str,
                       new: &Option<String>,
                       old: &Option<String>|
         -> Option<Option<String>> {
            let new = new.as_ref()?;
            let new = (!new.is_empty()).then(|| new.clone());
            if &new == old {
                return None;
            }
            changes.push(
                AuditChange::new(
                    actor,
                    AuditAction::Update,
                    "contact",
                    id,
                    attribute,
                    new.clone(),
                )
                .about(id),
            );
            Some(new)
        };
        let name = set("display_name", &input.display_name, &current.display_name);
        let email = set("email", &input.email, &current.email);
        let phone = set("phone", &input.phone, &current.phone);
        for ident in &input.identities {
            if !current.identities.contains(ident) {
                changes.push(
                    AuditChange::new(
                        actor,
                        AuditAction::Create,
                        "contact_identity",
                        id,
                        format!("identity:{}", ident.channel),
                        Some(ident.identity.clone()),
                    )
                    .about(id),
                );
            }
        }
        on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            for (column, value) in [
                ("display_name", &name),
                ("email", &email),
                ("phone", &phone),
            ] {
                if let Some(value) = value {
                    let sql = match column {
                        "display_name" => "UPDATE contacts SET display_name = $1 WHERE id = $2",
                        "email" => "UPDATE contacts SET email = $1 WHERE id = $2",
                        _ => "UPDATE contacts SET phone = $1 WHERE id = $2",
                    };
                    sqlx::query(sql)
                        .bind(value)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            for ident in &input.identities {
                if current.identities.contains(ident) {
                    continue;
                }
                sqlx::query(
                    "INSERT INTO contact_identities (channel, identity, contact_id, created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(ident.channel.as_str())
                .bind(&ident.identity)
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| match &e {
                    sqlx::Error::Database(db) if db.is_unique_violation() => Error::Conflict(format!(
                        "identity {}:{}",
                        ident.channel, ident.identity
                    )),
                    _ => Error::Database(e),
                })?;
            }
            append_audit(&mut tx.conn(), now, &changes).await?;
            tx.commit().await?;
        });
        self.contact_details(id).await
    }

    /// The checkpoint of `job`, if a run is under way.
    pub async fn retention_checkpoint(&self, job: &str) -> Result<Option<Checkpoint>> {
        Ok(on_driver!(self, |pool| {
            sqlx::query_as(
            "SELECT job, cutoff, cursor_at, cursor_id, processed FROM retention_checkpoints WHERE job = $1"
        )
        .bind(job)
        .fetch_optional(pool)
        .await?
        }))
    }

    /// Forgets the checkpoint of `job` (its run is complete).
    pub(crate) async fn clear_retention_checkpoint(&self, job: &str) -> Result<()> {
        on_driver!(self, |pool| sqlx::query(
            "DELETE FROM retention_checkpoints WHERE job = $1"
        )
        .bind(job)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    /// Runs one batch of `step` after `cp`'s cursor, in one transaction that also advances the
    /// checkpoint. Returns the new checkpoint and how many conversations the batch processed
    /// (0: the run is complete).
    pub(crate) async fn retention_batch(
        &self,
        step: RetentionStep,
        cp: &Checkpoint,
        batch: i64,
        now: i64,
    ) -> Result<(Checkpoint, u64)> {
        let select = match step {
            RetentionStep::Anonymize => {
                "SELECT COALESCE(closed_at, updated_at) AS at, id, contact_id FROM conversations \
                 WHERE status = 'closed' AND anonymized_at IS NULL AND COALESCE(closed_at, updated_at) < $1 \
                 AND (COALESCE(closed_at, updated_at) > $2 OR (COALESCE(closed_at, updated_at) = $2 AND id > $3)) \
                 ORDER BY COALESCE(closed_at, updated_at), id LIMIT $4"
            }
            RetentionStep::Delete => {
                "SELECT COALESCE(closed_at, updated_at) AS at, id, contact_id FROM conversations \
                 WHERE status = 'closed' AND COALESCE(closed_at, updated_at) < $1 \
                 AND (COALESCE(closed_at, updated_at) > $2 OR (COALESCE(closed_at, updated_at) = $2 AND id > $3)) \
                 ORDER BY COALESCE(closed_at, updated_at), id LIMIT $4"
            }
        };
        let actor = super::audit::entries::system_actor(step.job());
        // Several replicas on PostgreSQL may run the job at once: their batches take turns, and
        // each selects only rows still due, so none is processed twice. (SQLite writers are
        // serialized anyway.)
        let out = on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            advisory_lock(&mut tx.conn(), RETENTION_LOCK).await?;
            let rows: Vec<DueRow> = sqlx::query_as(select)
                .bind(cp.cutoff)
                .bind(cp.cursor_at)
                .bind(&cp.cursor_id)
                .bind(batch)
                .fetch_all(&mut *tx)
                .await?;
            let mut next = cp.clone();
            let mut contacts = std::collections::BTreeSet::new();
            let mut changes = Vec::new();
            for DueRow { at, id, contact_id } in &rows {
                match step {
                    RetentionStep::Anonymize => {
                        anonymize_conversation_tx(&mut tx.conn(), id, now).await?;
                        for attribute in ["messages", "notes"] {
                            changes.push(
                                AuditChange::new(
                                    &actor,
                                    AuditAction::Anonymize,
                                    "conversation",
                                    id,
                                    attribute,
                                    None,
                                )
                                .about(contact_id),
                            );
                        }
                    }
                    RetentionStep::Delete => {
                        delete_conversation_tx(&mut tx.conn(), id, now).await?;
                        changes.push(
                            AuditChange::new(
                                &actor,
                                AuditAction::Delete,
                                "conversation",
                                id,
                                "*",
                                None,
                            )
                            .about(contact_id),
                        );
                    }
                }
                contacts.insert(contact_id.clone());
                next.cursor_at = *at;
                next.cursor_id = id.clone();
                next.processed += 1;
            }
            append_audit(&mut tx.conn(), now, &changes).await?;
            // A contact none of whose conversations keep content is anonymized with them; one
            // with no conversation left at all is deleted.
            for contact_id in &contacts {
                let KeptRow { total, kept } = sqlx::query_as(
                    "SELECT COUNT(*) AS total, COUNT(*) - COUNT(anonymized_at) AS kept FROM conversations WHERE contact_id = $1",
                )
                .bind(contact_id)
                .fetch_one(&mut *tx)
                .await?;
                let anonymized: Option<i64> =
                    sqlx::query_scalar("SELECT anonymized_at FROM contacts WHERE id = $1")
                        .bind(contact_id)
                        .fetch_one(&mut *tx)
                        .await?;
                if kept == 0 && anonymized.is_none() {
                    anonymize_contact_tx(&mut tx.conn(), contact_id, &actor, now).await?;
                }
                if total == 0 && step == RetentionStep::Delete {
                    sqlx::query("DELETE FROM contact_attributes WHERE contact_id = $1")
                        .bind(contact_id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("DELETE FROM contact_identities WHERE contact_id = $1")
                        .bind(contact_id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("DELETE FROM contacts WHERE id = $1")
                        .bind(contact_id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            save_checkpoint_tx(&mut tx.conn(), &next, now).await?;
            tx.commit().await?;
            (next, rows.len() as u64)
        });
        Ok(out)
    }
}

fn details(row: DetailsRow, identities: Vec<ContactIdentity>) -> ContactDetails {
    ContactDetails {
        id: row.id,
        display_name: row.display_name,
        email: row.email,
        phone: row.phone,
        identities,
        attributes: std::collections::BTreeMap::new(),
        created_at: from_ms(row.created_at),
        anonymized_at: row.anonymized_at.map(from_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_normalize_to_digits() {
        assert_eq!(
            normalize_phone("+46 (70) 123-45.67").as_deref(),
            Some("46701234567")
        );
        assert_eq!(normalize_phone("alice@example.com"), None);
        assert_eq!(normalize_phone("  "), None);
        assert_eq!(normalize_phone("+"), None);
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("A_b%"), "%a\\_b\\%%");
    }
}
