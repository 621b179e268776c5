//! The account tables: users and their scopes, sessions, API tokens, and audit queries.

use super::{Caller, Place, Via};
use crate::ServerError;
use crate::db::{Database, parse, timestamp};
use chrono::{DateTime, Utc};
use dosewitness_domain::{DeviceId, PatientId, SiteId, StudyId};
use dosewitness_protocol::{AuditEntry, Role, Scope, UserView};
use sqlx::Row;

/// A stored session, found by the hash of its cookie.
#[derive(Debug, Clone)]
pub(crate) struct SessionRow {
    pub user_id: String,
    pub csrf_token: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

/// What a login needs to know of an account.
#[derive(Debug, Clone)]
pub(crate) struct LoginRow {
    pub user_id: String,
    pub password_hash: Option<String>,
    pub disabled: bool,
}

/// Filter of [`Database::audit_entries`].
#[derive(Debug, Default, Clone)]
pub(crate) struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub entity: Option<String>,
    pub after: Option<i64>,
    pub limit: i64,
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, ServerError> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| ServerError::Decode(format!("bad timestamp {text:?}")))
}

fn scope_parts(scope: Scope) -> (&'static str, String) {
    match scope {
        Scope::Study(id) => ("study", id.to_string()),
        Scope::Site(id) => ("site", id.to_string()),
        Scope::Patient(id) => ("patient", id.to_string()),
    }
}

fn scope_from(kind: &str, id: &str) -> Result<Scope, ServerError> {
    Ok(match kind {
        "study" => Scope::Study(parse(id)?),
        "site" => Scope::Site(parse(id)?),
        "patient" => Scope::Patient(parse(id)?),
        other => return Err(ServerError::Decode(format!("unknown scope kind {other:?}"))),
    })
}

async fn insert_scopes(
    transaction: &mut crate::db::Transaction,
    user_id: &str,
    scopes: &[Scope],
) -> Result<(), ServerError> {
    for scope in scopes {
        let (kind, target) = scope_parts(*scope);
        sqlx::query("INSERT INTO user_scopes (user_id, kind, target_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(user_id)
            .bind(kind)
            .bind(target)
            .execute(&mut **transaction)
            .await?;
    }
    Ok(())
}

fn role_from(text: &str) -> Result<Role, ServerError> {
    text.parse().map_err(ServerError::Decode)
}

impl Database {
    /// Stores a new account with its scopes, in one transaction. `Ok(false)` when the username
    /// is taken (nothing stored).
    pub(crate) async fn insert_user(
        &self,
        user_id: &str,
        username: &str,
        password_hash: Option<&str>,
        role: Role,
        scopes: &[Scope],
        at: DateTime<Utc>,
    ) -> Result<bool, ServerError> {
        let mut transaction = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, username, password_hash, role, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(user_id)
        .bind(username)
        .bind(password_hash)
        .bind(role.as_str())
        .bind(timestamp(at))
        .execute(&mut *transaction)
        .await?;
        if inserted.rows_affected() != 1 {
            return Ok(false);
        }
        insert_scopes(&mut transaction, user_id, scopes).await?;
        transaction.commit().await?;
        Ok(true)
    }

    /// Replaces the scopes of `user_id`. `Ok(false)` for an unknown account.
    pub(crate) async fn set_scopes(
        &self,
        user_id: &str,
        scopes: &[Scope],
    ) -> Result<bool, ServerError> {
        let mut transaction = self.pool.begin().await?;
        let exists = sqlx::query("SELECT id FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&mut *transaction)
            .await?;
        if exists.is_none() {
            return Ok(false);
        }
        sqlx::query("DELETE FROM user_scopes WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *transaction)
            .await?;
        insert_scopes(&mut transaction, user_id, scopes).await?;
        transaction.commit().await?;
        Ok(true)
    }

    async fn scopes_of(&self, user_id: &str) -> Result<Vec<Scope>, ServerError> {
        let rows = sqlx::query(
            "SELECT kind, target_id FROM user_scopes WHERE user_id = $1 ORDER BY kind, target_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| scope_from(&row.try_get::<String, _>(0)?, &row.try_get::<String, _>(1)?))
            .collect()
    }

    fn user_view(row: &sqlx::any::AnyRow, scopes: Vec<Scope>) -> Result<UserView, ServerError> {
        Ok(UserView {
            id: row.try_get("id")?,
            username: row.try_get("username")?,
            role: role_from(&row.try_get::<String, _>("role")?)?,
            scopes,
            created_at: parse_time(&row.try_get::<String, _>("created_at")?)?,
            disabled: row.try_get::<Option<String>, _>("disabled_at")?.is_some(),
        })
    }

    /// One account by id, or by username.
    pub(crate) async fn user(&self, key: UserKey<'_>) -> Result<Option<UserView>, ServerError> {
        let (sql, value) = match key {
            UserKey::Id(id) => (
                "SELECT id, username, role, created_at, disabled_at FROM users WHERE id = $1",
                id,
            ),
            UserKey::Username(name) => (
                "SELECT id, username, role, created_at, disabled_at FROM users WHERE username = $1",
                name,
            ),
        };
        let Some(row) = sqlx::query(sql)
            .bind(value)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let id: String = row.try_get("id")?;
        let scopes = self.scopes_of(&id).await?;
        Ok(Some(Self::user_view(&row, scopes)?))
    }

    /// Every account, oldest first.
    pub(crate) async fn users(&self) -> Result<Vec<UserView>, ServerError> {
        let rows = sqlx::query(
            "SELECT id, username, role, created_at, disabled_at FROM users ORDER BY created_at, username",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut users = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id")?;
            let scopes = self.scopes_of(&id).await?;
            users.push(Self::user_view(row, scopes)?);
        }
        Ok(users)
    }

    /// How many accounts exist (zero on a fresh deployment).
    pub async fn user_count(&self) -> Result<i64, ServerError> {
        Ok(sqlx::query("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?)
    }

    pub(crate) async fn login_row(&self, username: &str) -> Result<Option<LoginRow>, ServerError> {
        let row =
            sqlx::query("SELECT id, password_hash, disabled_at FROM users WHERE username = $1")
                .bind(username)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|row| {
            Ok(LoginRow {
                user_id: row.try_get(0)?,
                password_hash: row.try_get(1)?,
                disabled: row.try_get::<Option<String>, _>(2)?.is_some(),
            })
        })
        .transpose()
    }

    /// Disables an account: it can no longer log in, its sessions end and its API tokens are
    /// revoked. The row stays (the audit log names it). `Ok(false)` for an unknown account.
    pub(crate) async fn disable_user(
        &self,
        user_id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, ServerError> {
        let mut transaction = self.pool.begin().await?;
        let updated =
            sqlx::query("UPDATE users SET disabled_at = COALESCE(disabled_at, $2) WHERE id = $1")
                .bind(user_id)
                .bind(timestamp(at))
                .execute(&mut *transaction)
                .await?;
        if updated.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *transaction)
            .await?;
        sqlx::query(
            "UPDATE api_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
        )
        .bind(user_id)
        .bind(timestamp(at))
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(true)
    }

    /// Starts a session; also deletes sessions idle since before `stale_before`.
    pub(crate) async fn insert_session(
        &self,
        token_hash: &str,
        user_id: &str,
        csrf_token: &str,
        at: DateTime<Utc>,
        source: &str,
        stale_before: DateTime<Utc>,
    ) -> Result<(), ServerError> {
        let mut transaction = self.pool.begin().await?;
        sqlx::query("DELETE FROM sessions WHERE last_seen_at < $1")
            .bind(timestamp(stale_before))
            .execute(&mut *transaction)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, csrf_token, created_at, last_seen_at, source) VALUES ($1, $2, $3, $4, $4, $5)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(csrf_token)
        .bind(timestamp(at))
        .bind(source)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    pub(crate) async fn session(
        &self,
        token_hash: &str,
    ) -> Result<Option<SessionRow>, ServerError> {
        let row = sqlx::query(
            "SELECT user_id, csrf_token, created_at, last_seen_at FROM sessions WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(SessionRow {
                user_id: row.try_get(0)?,
                csrf_token: row.try_get(1)?,
                created_at: parse_time(&row.try_get::<String, _>(2)?)?,
                last_seen_at: parse_time(&row.try_get::<String, _>(3)?)?,
            })
        })
        .transpose()
    }

    pub(crate) async fn touch_session(
        &self,
        token_hash: &str,
        at: DateTime<Utc>,
    ) -> Result<(), ServerError> {
        sqlx::query("UPDATE sessions SET last_seen_at = $2 WHERE token_hash = $1")
            .bind(token_hash)
            .bind(timestamp(at))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn delete_session(&self, token_hash: &str) -> Result<(), ServerError> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores an API token of `user_id` by its hash.
    pub(crate) async fn insert_api_token(
        &self,
        token_id: &str,
        token_hash: &str,
        user_id: &str,
        label: &str,
        at: DateTime<Utc>,
    ) -> Result<(), ServerError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, token_hash, user_id, label, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_id)
        .bind(token_hash)
        .bind(user_id)
        .bind(label)
        .bind(timestamp(at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Revokes an API token (idempotent). `Ok(false)` for an unknown token id.
    pub(crate) async fn revoke_api_token(
        &self,
        token_id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, ServerError> {
        let updated = sqlx::query(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
        )
        .bind(token_id)
        .bind(timestamp(at))
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Revokes every live API token of `user_id`; returns how many.
    pub(crate) async fn revoke_tokens_of(
        &self,
        user_id: &str,
        at: DateTime<Utc>,
    ) -> Result<u64, ServerError> {
        let updated = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
        )
        .bind(user_id)
        .bind(timestamp(at))
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected())
    }

    /// The caller behind a live API token of an enabled account.
    pub(crate) async fn caller_by_api_token(
        &self,
        token_hash: &str,
        source: &str,
    ) -> Result<Option<Caller>, ServerError> {
        let row = sqlx::query(
            "SELECT t.id, u.id, u.username, u.role FROM api_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.disabled_at IS NULL",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let user_id: String = row.try_get(1)?;
        Ok(Some(Caller {
            scopes: self.scopes_of(&user_id).await?,
            user_id,
            username: row.try_get(2)?,
            role: role_from(&row.try_get::<String, _>(3)?)?,
            via: Via::ApiToken {
                id: row.try_get(0)?,
            },
            source: source.to_string(),
        }))
    }

    /// The enabled account `user_id` as a caller arriving `via`.
    pub(crate) async fn caller_by_user(
        &self,
        user_id: &str,
        via: Via,
        source: &str,
    ) -> Result<Option<Caller>, ServerError> {
        let row =
            sqlx::query("SELECT username, role FROM users WHERE id = $1 AND disabled_at IS NULL")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Caller {
            scopes: self.scopes_of(user_id).await?,
            user_id: user_id.to_string(),
            username: row.try_get(0)?,
            role: role_from(&row.try_get::<String, _>(1)?)?,
            via,
            source: source.to_string(),
        }))
    }

    /// Audit rows matching `filter`, in insertion order.
    pub(crate) async fn audit_entries(
        &self,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEntry>, ServerError> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, entity, source FROM audit_log
             WHERE id > $1 AND ($2 IS NULL OR actor = $2) AND ($3 IS NULL OR action = $3)
               AND ($4 IS NULL OR entity = $4)
             ORDER BY id LIMIT $5",
        )
        .bind(filter.after.unwrap_or(0))
        .bind(filter.actor.as_deref())
        .bind(filter.action.as_deref())
        .bind(filter.entity.as_deref())
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    id: row.try_get(0)?,
                    at: parse_time(&row.try_get::<String, _>(1)?)?,
                    actor: row.try_get(2)?,
                    action: row.try_get(3)?,
                    entity: row.try_get(4)?,
                    source: row.try_get(5)?,
                })
            })
            .collect()
    }

    /// Where a study sits in the trial (for scope checks); `None` if unknown.
    pub(crate) async fn study_place(&self, id: StudyId) -> Result<Option<Place>, ServerError> {
        let row = sqlx::query("SELECT id FROM studies WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|_| Place {
            study: id,
            site: None,
            patient: None,
        }))
    }

    pub(crate) async fn site_place(&self, id: SiteId) -> Result<Option<Place>, ServerError> {
        let row = sqlx::query("SELECT study_id FROM sites WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(Place {
                study: parse(&row.try_get::<String, _>(0)?)?,
                site: Some(id),
                patient: None,
            })
        })
        .transpose()
    }

    pub(crate) async fn patient_place(&self, id: PatientId) -> Result<Option<Place>, ServerError> {
        self.place_by(
            "SELECT s.study_id, s.id, p.id FROM patients p JOIN sites s ON s.id = p.site_id WHERE p.id = $1",
            id.to_string(),
        )
        .await
    }

    pub(crate) async fn device_place(&self, id: DeviceId) -> Result<Option<Place>, ServerError> {
        self.place_by(
            "SELECT s.study_id, s.id, p.id FROM devices d JOIN patients p ON p.id = d.patient_id
             JOIN sites s ON s.id = p.site_id WHERE d.id = $1",
            id.to_string(),
        )
        .await
    }

    /// Where the patient of dose event `event_id` sits.
    pub(crate) async fn event_place(&self, event_id: &str) -> Result<Option<Place>, ServerError> {
        self.place_by(
            "SELECT s.study_id, s.id, p.id FROM dose_events e JOIN patients p ON p.id = e.patient_id
             JOIN sites s ON s.id = p.site_id WHERE e.event_id = $1",
            event_id.to_string(),
        )
        .await
    }

    async fn place_by(&self, sql: &'static str, id: String) -> Result<Option<Place>, ServerError> {
        let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?;
        row.map(|row| {
            Ok(Place {
                study: parse(&row.try_get::<String, _>(0)?)?,
                site: Some(parse(&row.try_get::<String, _>(1)?)?),
                patient: Some(parse(&row.try_get::<String, _>(2)?)?),
            })
        })
        .transpose()
    }
}

/// How [`Database::user`] finds an account.
#[derive(Debug, Clone, Copy)]
pub(crate) enum UserKey<'a> {
    Id(&'a str),
    Username(&'a str),
}
