//! Accounts: password hashes, server-side sessions and one-time invites.
//!
//! Session ids and invite tokens reach this layer already hashed (SHA-256, see
//! `http::auth`): the database never holds anything that lets a reader log in.

use chrono::{DateTime, Utc};

use super::{Error, Result, Store, WriteTx, from_ms, new_id, now_ms, on_driver};
use crate::domain::Role;
use crate::domain::api::Invite;

/// What a login needs to know about an account.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Credentials {
    /// User id.
    pub user_id: String,
    /// argon2 PHC string; `None` when the user has not set a password yet.
    pub password_hash: Option<String>,
}

/// A live session joined with its user.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// The user.
    pub user_id: String,
    /// The user's e-mail.
    pub email: String,
    /// The user's display name.
    pub display_name: String,
    /// The user's role (read at every request, so a role change applies at once).
    pub role: Role,
    /// The session's synchronizer CSRF token.
    pub csrf_token: String,
    /// When the session ends.
    pub expires_at: DateTime<Utc>,
}

/// A new invite (the token is hashed by the caller).
#[derive(Debug, Clone)]
pub struct NewInvite {
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    /// Who is invited.
    pub email: String,
    /// Name for the new account.
    pub display_name: String,
    /// Role the account gets.
    pub role: Role,
    /// The admin inviting.
    pub created_by: Option<String>,
    /// Expiry (epoch ms).
    pub expires_at: i64,
}

/// Why an invite could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// The account exists with the password set; the user id.
    Accepted(String),
    /// No invite has this token.
    Unknown,
    /// The invite expired or was used already.
    Spent,
    /// A user with this e-mail already has a password.
    AccountExists,
}

/// An invite as read.
#[derive(sqlx::FromRow)]
struct InviteRow {
    id: String,
    email: String,
    display_name: String,
    role: String,
    created_at: i64,
    expires_at: i64,
    accepted_at: Option<i64>,
}

fn invite_from_row(row: InviteRow) -> Result<Invite> {
    Ok(Invite {
        id: row.id,
        email: row.email,
        display_name: row.display_name,
        role: parse_role(&row.role)?,
        created_at: from_ms(row.created_at),
        expires_at: from_ms(row.expires_at),
        accepted_at: row.accepted_at.map(from_ms),
    })
}

/// A live session joined with its user, as read.
#[derive(sqlx::FromRow)]
struct SessionRow {
    user_id: String,
    email: String,
    display_name: String,
    role: String,
    csrf_token: String,
    expires_at: i64,
}

/// An invite's state at acceptance.
#[derive(sqlx::FromRow)]
struct InviteState {
    email: String,
    display_name: String,
    role: String,
    expires_at: i64,
    accepted_at: Option<i64>,
}

fn parse_role(role: &str) -> Result<Role> {
    role.parse().map_err(super::corrupt)
}

impl Store {
    /// Login data of the user with this e-mail (case-insensitive), if any.
    pub async fn credentials(&self, email: &str) -> Result<Option<Credentials>> {
        Ok(on_driver!(self, |pool| sqlx::query_as(
            "SELECT id AS user_id, password_hash FROM users WHERE LOWER(email) = LOWER($1)"
        )
        .bind(email)
        .fetch_optional(pool)
        .await?))
    }

    /// Sets (or replaces) a user's password hash.
    pub(crate) async fn set_password_hash(&self, user_id: &str, hash: &str) -> Result<()> {
        let n = on_driver!(self, |pool| sqlx::query(
            "UPDATE users SET password_hash = $1 WHERE id = $2"
        )
        .bind(hash)
        .bind(user_id)
        .execute(pool)
        .await?
        .rows_affected());
        if n == 0 {
            return Err(Error::NotFound {
                what: "user",
                id: user_id.to_owned(),
            });
        }
        Ok(())
    }

    /// Stores a new session.
    pub async fn create_session(
        &self,
        id_hash: &str,
        user_id: &str,
        csrf_token: &str,
        expires_at: i64,
    ) -> Result<()> {
        let now = now_ms();
        on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            // Each login is a chance to forget sessions that ended.
            sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, expires_at, last_seen_at) VALUES ($1, $2, $3, $4, $5, $4)",
            )
            .bind(id_hash)
            .bind(user_id)
            .bind(csrf_token)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The unexpired session with this id hash, with its user.
    pub async fn session(&self, id_hash: &str) -> Result<Option<SessionRecord>> {
        let row: Option<SessionRow> = on_driver!(self, |pool| {
            sqlx::query_as(
                "SELECT u.id AS user_id, u.email, u.display_name, u.role, s.csrf_token, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = $1 AND s.expires_at > $2",
            )
            .bind(id_hash)
            .bind(now_ms())
            .fetch_optional(pool)
            .await?
        });
        row.map(|r| {
            Ok(SessionRecord {
                user_id: r.user_id,
                email: r.email,
                display_name: r.display_name,
                role: parse_role(&r.role)?,
                csrf_token: r.csrf_token,
                expires_at: from_ms(r.expires_at),
            })
        })
        .transpose()
    }

    /// Ends a session (logout).
    pub async fn delete_session(&self, id_hash: &str) -> Result<()> {
        on_driver!(self, |pool| sqlx::query(
            "DELETE FROM sessions WHERE id_hash = $1"
        )
        .bind(id_hash)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    /// Changes a user's role (sessions pick it up at their next request).
    pub async fn set_user_role(&self, user_id: &str, role: Role) -> Result<()> {
        let n = on_driver!(self, |pool| sqlx::query(
            "UPDATE users SET role = $1 WHERE id = $2"
        )
        .bind(role.as_str())
        .bind(user_id)
        .execute(pool)
        .await?
        .rows_affected());
        if n == 0 {
            return Err(Error::NotFound {
                what: "user",
                id: user_id.to_owned(),
            });
        }
        Ok(())
    }

    /// Deactivates a user: removes the password and ends every session (a new invite
    /// reactivates the account).
    pub async fn deactivate_user(&self, user_id: &str) -> Result<()> {
        let n = on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let n = sqlx::query("UPDATE users SET password_hash = NULL WHERE id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            n
        });
        if n == 0 {
            return Err(Error::NotFound {
                what: "user",
                id: user_id.to_owned(),
            });
        }
        Ok(())
    }

    /// Stores an invite.
    pub async fn create_invite(&self, new: &NewInvite) -> Result<Invite> {
        let id = new_id();
        let now = now_ms();
        on_driver!(self, |pool| {
            sqlx::query(
            "INSERT INTO invites (id, token_hash, email, display_name, role, created_by, created_at, expires_at, accepted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL)"
        )
        .bind(&id)
        .bind(&new.token_hash)
        .bind(&new.email)
        .bind(&new.display_name)
        .bind(new.role.as_str())
        .bind(&new.created_by)
        .bind(now)
        .bind(new.expires_at)
        .execute(pool)
        .await?
        .rows_affected()
        });
        Ok(Invite {
            id,
            email: new.email.clone(),
            display_name: new.display_name.clone(),
            role: new.role,
            created_at: from_ms(now),
            expires_at: from_ms(new.expires_at),
            accepted_at: None,
        })
    }

    /// Invites, newest first.
    pub async fn invites(&self) -> Result<Vec<Invite>> {
        let rows: Vec<InviteRow> = on_driver!(self, |pool| {
            sqlx::query_as(
            "SELECT id, email, display_name, role, created_at, expires_at, accepted_at FROM invites ORDER BY created_at DESC LIMIT 200"
        )
        .fetch_all(pool)
        .await?
        });
        rows.into_iter().map(invite_from_row).collect()
    }

    /// The invite with this token hash, if any (expired or used ones included).
    pub(crate) async fn invite_by_token_hash(&self, token_hash: &str) -> Result<Option<Invite>> {
        let row: Option<InviteRow> = on_driver!(self, |pool| {
            sqlx::query_as(
            "SELECT id, email, display_name, role, created_at, expires_at, accepted_at FROM invites WHERE token_hash = $1"
        )
        .bind(token_hash)
        .fetch_optional(pool)
        .await?
        });
        row.map(invite_from_row).transpose()
    }

    /// Uses an invite: marks it accepted (once, before it expires) and creates the account with
    /// the password, or sets the password of a password-less account with the same e-mail.
    pub async fn accept_invite(
        &self,
        token_hash: &str,
        password_hash: &str,
        display_name: Option<&str>,
    ) -> Result<AcceptOutcome> {
        let now = now_ms();
        let outcome = on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let row: Option<InviteState> = sqlx::query_as(
                "SELECT email, display_name, role, expires_at, accepted_at FROM invites WHERE token_hash = $1",
            )
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(InviteState {
                email,
                display_name: invited_name,
                role,
                expires_at,
                accepted_at,
            }) = row
            else {
                return Ok(AcceptOutcome::Unknown);
            };
            if accepted_at.is_some() || expires_at <= now {
                return Ok(AcceptOutcome::Spent);
            }
            // The conditional update is the one-time guard: of two concurrent accepts one wins.
            let used = sqlx::query(
                "UPDATE invites SET accepted_at = $1 WHERE token_hash = $2 AND accepted_at IS NULL AND expires_at > $1",
            )
            .bind(now)
            .bind(token_hash)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if used != 1 {
                return Ok(AcceptOutcome::Spent);
            }
            let existing: Option<Credentials> = sqlx::query_as(
                "SELECT id AS user_id, password_hash FROM users WHERE LOWER(email) = LOWER($1)",
            )
            .bind(&email)
            .fetch_optional(&mut *tx)
            .await?;
            let name = display_name
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .unwrap_or(&invited_name)
                .to_owned();
            let user_id = match existing {
                Some(Credentials {
                    password_hash: Some(_),
                    ..
                }) => return Ok(AcceptOutcome::AccountExists),
                Some(Credentials {
                    user_id: id,
                    password_hash: None,
                }) => {
                    sqlx::query(
                        "UPDATE users SET password_hash = $1, display_name = $2, role = $3 WHERE id = $4",
                    )
                    .bind(password_hash)
                    .bind(&name)
                    .bind(&role)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                    id
                }
                None => {
                    let id = new_id();
                    sqlx::query(
                        "INSERT INTO users (id, email, display_name, role, password_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(&id)
                    .bind(&email)
                    .bind(&name)
                    .bind(&role)
                    .bind(password_hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    id
                }
            };
            tx.commit().await?;
            AcceptOutcome::Accepted(user_id)
        });
        Ok(outcome)
    }
}
