//! The statements the write operations (the `write` module) run inside their transaction: the rows
//! they read to decide (versions, old values for events, scopes to authorise) and the changes
//! they make that no general `upsert_*` covers. Each call runs on the write's own connection.

use anyhow::{Context, Result};
use sqlx::{AnyConnection, Row};

use crate::domain::recovery::{Rollout, Stage};
use crate::domain::*;

// ---------------------------------------------------------------------------------------------
// Availability statements

/// A statement's stored version (0 when there is none).
pub async fn statement_version(c: &mut AnyConnection, ags: &str, service: &str) -> Result<i64> {
    let v: Option<i64> =
        sqlx::query_scalar("SELECT version FROM statements WHERE scope_ags = $1 AND service_slug = $2")
            .bind(ags)
            .bind(service)
            .fetch_optional(&mut *c)
            .await?;
    Ok(v.unwrap_or(0))
}

/// One statement as stored (`None`: there is none).
pub async fn statement(c: &mut AnyConnection, ags: &str, service: &str) -> Result<Option<Statement>> {
    let row = sqlx::query("SELECT * FROM statements WHERE scope_ags = $1 AND service_slug = $2")
        .bind(ags)
        .bind(service)
        .fetch_optional(&mut *c)
        .await?;
    let Some(r) = row else { return Ok(None) };
    let level: String = r.try_get("level")?;
    Ok(Some(Statement {
        scope_ags: r.try_get("scope_ags")?,
        service_slug: r.try_get("service_slug")?,
        level: Level::parse(&level).with_context(|| format!("unknown level {level:?} in statements"))?,
        restrictions: r.try_get("restrictions")?,
        workaround: r.try_get("workaround")?,
        backlog: r.try_get("backlog")?,
        expected_return: r.try_get("expected_return")?,
        author: r.try_get("author")?,
        stated_at: r.try_get("stated_at")?,
        version: r.try_get("version")?,
        review_on: r.try_get("review_on")?,
    }))
}

pub async fn delete_statement(c: &mut AnyConnection, ags: &str, service: &str) -> Result<()> {
    sqlx::query("DELETE FROM statements WHERE scope_ags = $1 AND service_slug = $2")
        .bind(ags)
        .bind(service)
        .execute(&mut *c)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Announcements and FAQ

/// An announcement as stored, its version included (`None`: there is none).
pub async fn announcement(c: &mut AnyConnection, id: &str) -> Result<Option<Announcement>> {
    let row = sqlx::query("SELECT * FROM announcements WHERE id = $1").bind(id).fetch_optional(&mut *c).await?;
    row.as_ref().map(super::row_to_announcement).transpose()
}

/// Stores an edited announcement (all but its id and author) and counts its version up.
pub async fn update_announcement(c: &mut AnyConnection, a: &Announcement) -> Result<()> {
    sqlx::query(
        "UPDATE announcements SET scope_kind = $1, scope_ref = $2, lang = $3, title = $4, body = $5, published_at = $6,
         updated_at = $7, version = version + 1 WHERE id = $8",
    )
    .bind(a.scope_kind.as_str())
    .bind(&a.scope_ref)
    .bind(&a.lang)
    .bind(&a.title)
    .bind(&a.body)
    .bind(&a.published_at)
    .bind(&a.updated_at)
    .bind(&a.id)
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub async fn delete_announcement(c: &mut AnyConnection, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM announcements WHERE id = $1").bind(id).execute(&mut *c).await?;
    Ok(())
}

/// An FAQ entry's stored scope (kind, reference) and version (`None`: there is none).
pub async fn faq_scope_and_version(c: &mut AnyConnection, id: &str) -> Result<Option<(ScopeKind, String, i64)>> {
    let row = sqlx::query("SELECT scope_kind, scope_ref, version FROM faq_entries WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
    let Some(r) = row else { return Ok(None) };
    let kind = ScopeKind::parse(&r.try_get::<String, _>(0)?).unwrap_or(ScopeKind::Area);
    Ok(Some((kind, r.try_get(1)?, r.try_get(2)?)))
}

pub async fn delete_faq(c: &mut AnyConnection, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM faq_entries WHERE id = $1").bind(id).execute(&mut *c).await?;
    Ok(())
}

pub async fn set_faq_version(c: &mut AnyConnection, id: &str, version: i64) -> Result<()> {
    sqlx::query("UPDATE faq_entries SET version = $1 WHERE id = $2").bind(version).bind(id).execute(&mut *c).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Referrals and contact channels

/// Whose residents a stored referral is for (`None`: there is no such referral).
pub async fn referral_for_ags(c: &mut AnyConnection, id: &str) -> Result<Option<String>> {
    Ok(sqlx::query_scalar("SELECT for_ags FROM referrals WHERE id = $1").bind(id).fetch_optional(&mut *c).await?)
}

/// Office and service of a stored referral (an error if there is none).
pub async fn referral_office_and_service(c: &mut AnyConnection, id: &str) -> Result<(String, String)> {
    let row = sqlx::query("SELECT office_slug, service_slug FROM referrals WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *c)
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

pub async fn delete_referral(c: &mut AnyConnection, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM referrals WHERE id = $1").bind(id).execute(&mut *c).await?;
    Ok(())
}

/// Stores the contact channels of a district (`district`) or town and counts its version up.
pub async fn update_contact(c: &mut AnyConnection, district: bool, ags: &str, contact: &Contact) -> Result<()> {
    let sql: &'static str = if district {
        "UPDATE districts SET phone = $1, email = $2, website = $3, emergency_website = $4, social_media = $5,
         version = version + 1 WHERE ags = $6"
    } else {
        "UPDATE municipalities SET phone = $1, email = $2, website = $3, emergency_website = $4, social_media = $5,
         version = version + 1 WHERE ags = $6"
    };
    sqlx::query(sql)
        .bind(&contact.phone)
        .bind(&contact.email)
        .bind(&contact.website)
        .bind(&contact.emergency_website)
        .bind(&contact.social_media)
        .bind(ags)
        .execute(&mut *c)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Accounts and tokens

/// Sets a user's role and disabled flag.
pub async fn set_role_and_disabled(
    c: &mut AnyConnection,
    user_id: i64,
    role: crate::domain::authz::Role,
    disabled: bool,
) -> Result<()> {
    sqlx::query("UPDATE users SET role = $1, disabled = $2 WHERE id = $3")
        .bind(role.as_str())
        .bind(disabled as i64)
        .bind(user_id)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// Forgets a user's password and second factor (a new setup link sets them again).
pub async fn clear_credentials(c: &mut AnyConnection, user_id: i64) -> Result<()> {
    sqlx::query("UPDATE users SET password_hash = '', totp_secret = '' WHERE id = $1")
        .bind(user_id)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// A token's owner (user id) and role as stored (`None`: there is no such token).
pub async fn token_owner_and_role(c: &mut AnyConnection, id: i64) -> Result<Option<(i64, String)>> {
    let row =
        sqlx::query("SELECT user_id, role FROM api_tokens WHERE id = $1").bind(id).fetch_optional(&mut *c).await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some((row.try_get(0)?, row.try_get(1)?)))
}

// ---------------------------------------------------------------------------------------------
// Recovery: procedures and rollouts

/// Removes every service's link to a procedure (before the links are stored anew).
pub async fn unlink_services_from_procedure(c: &mut AnyConnection, procedure: &str) -> Result<()> {
    sqlx::query("DELETE FROM service_procedures WHERE procedure_slug = $1").bind(procedure).execute(&mut *c).await?;
    Ok(())
}

/// Moves a procedure to a stage since `since` and counts its version up.
pub async fn set_procedure_stage(c: &mut AnyConnection, procedure: &str, stage: Stage, since: &str) -> Result<()> {
    sqlx::query("UPDATE procedures SET stage = $1, stage_since = $2, version = version + 1 WHERE slug = $3")
        .bind(stage.as_str())
        .bind(since)
        .bind(procedure)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// A town's stored rollout stage of a procedure (`None`: no record, or one not understood).
pub async fn rollout_stage(c: &mut AnyConnection, procedure: &str, ags: &str) -> Result<Option<Rollout>> {
    let stage: Option<String> =
        sqlx::query_scalar("SELECT stage FROM rollouts WHERE procedure_slug = $1 AND municipality_ags = $2")
            .bind(procedure)
            .bind(ags)
            .fetch_optional(&mut *c)
            .await?;
    Ok(stage.as_deref().and_then(Rollout::parse))
}
