//! Contact attributes: read, replace (audited in the same transaction), and whether an agent
//! holds a conversation of the contact (who may edit them besides admins).

use std::collections::BTreeMap;

use super::{AsConn, Error, Pair, Result, Store, WriteTx, append_audit, on_driver};

impl Store {
    /// The attributes of contact `id` (empty when it has none or does not exist).
    pub async fn contact_attributes(&self, id: &str) -> Result<BTreeMap<String, String>> {
        let rows: Vec<Pair> = on_driver!(self, |pool| {
            sqlx::query_as(
            "SELECT key AS owner, value AS item FROM contact_attributes WHERE contact_id = $1 ORDER BY key"
        )
        .bind(id)
        .fetch_all(pool)
        .await?
        });
        Ok(rows.into_iter().map(|p| (p.owner, p.item)).collect())
    }

    /// Replaces the attributes of contact `id` with `new` (validated by the caller), auditing
    /// each added, changed or removed key as `actor`; `NotFound` for an unknown contact.
    pub(crate) async fn set_contact_attributes(
        &self,
        id: &str,
        new: &BTreeMap<String, String>,
        actor: &str,
        now: i64,
    ) -> Result<()> {
        on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let exists: Option<String> =
                sqlx::query_scalar("SELECT id FROM contacts WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_none() {
                return Err(Error::NotFound {
                    what: "contact",
                    id: id.to_owned(),
                });
            }
            let old: Vec<Pair> = sqlx::query_as(
                "SELECT key AS owner, value AS item FROM contact_attributes WHERE contact_id = $1",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            let old: BTreeMap<String, String> =
                old.into_iter().map(|p| (p.owner, p.item)).collect();
            let changes = super::audit::entries::contact_attributes(actor, id, &old, new);
            if changes.is_empty() {
                return Ok(());
            }
            sqlx::query("DELETE FROM contact_attributes WHERE contact_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            for (key, value) in new {
                sqlx::query(
                    "INSERT INTO contact_attributes (contact_id, key, value, updated_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(id)
                .bind(key)
                .bind(value)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            append_audit(&mut tx.conn(), now, &changes).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Whether `user_id` holds an open conversation with contact `contact_id`.
    pub(crate) async fn holds_contact(&self, user_id: &str, contact_id: &str) -> Result<bool> {
        let n: i64 = on_driver!(self, |pool| {
            sqlx::query_scalar(
            "SELECT COUNT(*) FROM conversations WHERE contact_id = $1 AND assigned_user_id = $2 AND status = 'assigned'"
        )
        .bind(contact_id)
        .bind(user_id)
        .fetch_one(pool)
        .await?
        });
        Ok(n > 0)
    }
}
