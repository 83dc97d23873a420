//! Users, skills and categories: the tenant's directory that routing and the UI build on.

use std::collections::BTreeMap;

use super::{
    AsConn, Error, Result, Store, WriteTx, append_audit, from_ms, level, new_id, now_ms, on_driver,
};
use crate::domain::api::{
    Category, NewCategory, NewSkill, NewUser, Skill, SkillOption, User, UserSkill,
};

/// A user as read (their skills come apart).
#[derive(sqlx::FromRow)]
struct UserRow {
    id: String,
    email: String,
    display_name: String,
    role: String,
    created_at: i64,
}

/// A skill a user holds, as read.
#[derive(sqlx::FromRow)]
struct UserSkillRow {
    skill_id: String,
    active: bool,
    level: Option<i64>,
}

/// A skill as read.
#[derive(sqlx::FromRow)]
struct SkillRow {
    id: String,
    name: String,
    created_at: i64,
}

/// A category as read (its skills come apart).
#[derive(sqlx::FromRow)]
struct CategoryRow {
    id: String,
    name: String,
    description: String,
    created_at: i64,
}

/// A skill a category requires, as read.
#[derive(sqlx::FromRow)]
struct CategorySkillRow {
    category_id: String,
    skill_id: String,
    min_level: Option<i64>,
    optional: bool,
}

fn conflict_on_unique(e: sqlx::Error, what: &str) -> Error {
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
    /// Creates a user.
    pub async fn create_user(&self, new: &NewUser) -> Result<User> {
        let id = new_id();
        let now = now_ms();
        let what = format!("user with e-mail `{}`", new.email);
        on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO users (id, email, display_name, role, password_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&id)
            .bind(&new.email)
            .bind(&new.display_name)
            .bind(new.role.as_str())
            .bind(&new.password_hash)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict_on_unique(e, &what))?;
            for skill in &new.skill_ids {
                sqlx::query(
                    "INSERT INTO user_skills (user_id, skill_id, active) VALUES ($1, $2, $3)",
                )
                .bind(&id)
                .bind(skill)
                .bind(true)
                .execute(&mut *tx)
                .await
                .map_err(|e| conflict_on_unique(e, "user skill"))?;
            }
            let audit = super::audit::entries::user_created(
                "api",
                &id,
                &new.email,
                &new.display_name,
                new.role.as_str(),
            );
            append_audit(&mut tx.conn(), now, &audit).await?;
            tx.commit().await?;
        });
        self.user(&id).await
    }

    /// One user.
    pub async fn user(&self, id: &str) -> Result<User> {
        let (row, skills): (Option<UserRow>, Vec<UserSkillRow>) = on_driver!(self, |pool| {
            let row = sqlx::query_as(
                "SELECT id, email, display_name, role, created_at FROM users WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?;
            let skills = sqlx::query_as(
                "SELECT skill_id, active, level FROM user_skills WHERE user_id = $1 ORDER BY skill_id",
            )
            .bind(id)
            .fetch_all(pool)
            .await?;
            (row, skills)
        });
        let row = row.ok_or_else(|| Error::NotFound {
            what: "user",
            id: id.to_owned(),
        })?;
        Ok(User {
            id: row.id,
            email: row.email,
            display_name: row.display_name,
            role: row.role.parse().map_err(super::corrupt)?,
            skills: skills
                .into_iter()
                .map(|s| UserSkill {
                    skill_id: s.skill_id,
                    active: s.active,
                    level: level(s.level),
                })
                .collect(),
            created_at: from_ms(row.created_at),
        })
    }

    /// Every user, by e-mail.
    pub async fn users(&self) -> Result<Vec<User>> {
        let ids: Vec<String> = on_driver!(self, |pool| sqlx::query_scalar(
            "SELECT id FROM users ORDER BY email"
        )
        .fetch_all(pool)
        .await?);
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.user(&id).await?);
        }
        Ok(out)
    }

    /// Creates a skill.
    pub async fn create_skill(&self, new: &NewSkill) -> Result<Skill> {
        let id = new_id();
        let now = now_ms();
        let what = format!("skill `{}`", new.name);
        on_driver!(self, |pool| sqlx::query(
            "INSERT INTO skills (id, name, created_at) VALUES ($1, $2, $3)"
        )
        .bind(&id)
        .bind(&new.name)
        .bind(now)
        .execute(pool)
        .await
        .map_err(|e| conflict_on_unique(e, &what))?
        .rows_affected());
        Ok(Skill {
            id,
            name: new.name.clone(),
            created_at: from_ms(now),
        })
    }

    /// Every skill, by name.
    pub async fn skills(&self) -> Result<Vec<Skill>> {
        let rows: Vec<SkillRow> = on_driver!(self, |pool| sqlx::query_as(
            "SELECT id, name, created_at FROM skills ORDER BY name"
        )
        .fetch_all(pool)
        .await?);
        Ok(rows
            .into_iter()
            .map(|s| Skill {
                id: s.id,
                name: s.name,
                created_at: from_ms(s.created_at),
            })
            .collect())
    }

    /// Creates a category.
    pub async fn create_category(&self, new: &NewCategory) -> Result<Category> {
        let id = new_id();
        let now = now_ms();
        let what = format!("category `{}`", new.name);
        on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO categories (id, name, description, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(&id)
            .bind(&new.name)
            .bind(&new.description)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict_on_unique(e, &what))?;
            for skill in &new.skill_ids {
                sqlx::query("INSERT INTO category_skills (category_id, skill_id) VALUES ($1, $2)")
                    .bind(&id)
                    .bind(skill)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| conflict_on_unique(e, "category skill"))?;
            }
            tx.commit().await?;
        });
        let mut skill_ids = new.skill_ids.clone();
        skill_ids.sort();
        Ok(Category {
            id,
            name: new.name.clone(),
            description: new.description.clone(),
            skill_ids,
            skill_options: BTreeMap::new(),
            created_at: from_ms(now),
        })
    }

    /// Every category, by name.
    pub async fn categories(&self) -> Result<Vec<Category>> {
        let (rows, links): (Vec<CategoryRow>, Vec<CategorySkillRow>) = on_driver!(self, |pool| {
            let rows = sqlx::query_as(
                "SELECT id, name, description, created_at FROM categories ORDER BY name",
            )
            .fetch_all(pool)
            .await?;
            let links = sqlx::query_as(
                "SELECT category_id, skill_id, min_level, optional FROM category_skills ORDER BY skill_id",
            )
            .fetch_all(pool)
            .await?;
            (rows, links)
        });
        Ok(rows
            .into_iter()
            .map(|c| {
                let own = || links.iter().filter(|l| l.category_id == c.id);
                Category {
                    skill_ids: own().map(|l| l.skill_id.clone()).collect(),
                    skill_options: own()
                        .map(|l| {
                            let option = SkillOption {
                                min_level: level(l.min_level),
                                optional: l.optional,
                            };
                            (l.skill_id.clone(), option)
                        })
                        .filter(|(_, o)| o.is_set())
                        .collect(),
                    id: c.id,
                    name: c.name,
                    description: c.description,
                    created_at: from_ms(c.created_at),
                }
            })
            .collect())
    }

    /// The id of the category named `name`, if any.
    pub async fn category_id_by_name(&self, name: &str) -> Result<Option<String>> {
        Ok(on_driver!(self, |pool| sqlx::query_scalar(
            "SELECT id FROM categories WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(pool)
        .await?))
    }
}
