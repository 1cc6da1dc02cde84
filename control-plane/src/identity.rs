//! A person as an OpenID provider describes them, and the one definition of
//! what keygate makes of that: which user they are (found by issuer and
//! subject, created on first sight) and which role they get
//! (`--oidc-admin-email`, `--oidc-admin-group`, the `email_verified` rule).
//!
//! Both ways in use it: API bearer JWTs ([`crate::oidc`]) and the browser
//! sign-in ([`crate::login`]). A user whose role source is `oidc` gets the
//! role the current claims imply each time, promotion and demotion alike.

use crate::config::OidcConfig;
use crate::db::{Db, users};
use crate::domain::{Email, Role, RoleSource, Username};
use crate::error::ApiError;

/// The claims keygate reads, from whichever token carried them. The issuer
/// and subject have been verified by the caller.
#[derive(Debug, Clone)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    pub preferred_username: Option<String>,
    pub email: Option<String>,
    pub email_verified: bool,
    pub groups: Vec<String>,
}

/// `email_verified` is a bool per the spec; some providers send the string "true".
pub fn verified_claim(v: Option<&serde_json::Value>) -> bool {
    match v {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// `groups` as a list of strings, or one string; anything else is no group.
pub fn groups_claim(v: Option<&serde_json::Value>) -> Vec<String> {
    match v {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|g| g.as_str().map(str::to_owned))
            .collect(),
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// The role these claims imply under the configured admin rules.
pub fn role_for(cfg: &OidcConfig, id: &Identity) -> Role {
    // An unverified email can be whatever the person typed in.
    let email_counts = id.email_verified || cfg.trust_unverified_email;
    let by_email = email_counts
        && id
            .email
            .as_deref()
            .is_some_and(|e| cfg.admin_emails.iter().any(|a| a.eq_ignore_ascii_case(e)));
    let by_group = id
        .groups
        .iter()
        .any(|g| cfg.admin_groups.iter().any(|a| a == g));
    if by_email || by_group {
        Role::Admin
    } else {
        Role::User
    }
}

/// The user these claims belong to, created on first sight, with its role
/// brought in line with the claims when the provider decides it.
pub async fn find_or_create(
    db: &Db,
    cfg: &OidcConfig,
    id: &Identity,
) -> Result<users::UserRow, ApiError> {
    if id.subject.is_empty() {
        return Err(ApiError::InvalidToken);
    }
    let role = role_for(cfg, id);
    let mut conn = db.conn().await?;
    if let Some(u) = users::get_by_oidc_identity(&mut conn, &id.issuer, &id.subject).await? {
        // The provider decides, both ways, unless an admin pinned the
        // role through the API (role source `api`).
        if u.role_source() != RoleSource::Oidc || u.role() == role {
            return Ok(u);
        }
        if users::follow_oidc_role(&mut conn, u.id, role).await? {
            tracing::info!(
                user_id = u.id,
                old_role = u.role().as_str(),
                new_role = role.as_str(),
                source = RoleSource::Oidc.as_str(),
                "user role changed"
            );
        }
        // Re-read: a concurrent API pin may have won.
        return users::get(&mut conn, u.id)
            .await?
            .ok_or(ApiError::InvalidToken);
    }
    let email = id
        .email
        .as_deref()
        .and_then(|e| Email::parse(e).ok())
        .map(|e| e.as_str().to_owned());
    let preferred = id
        .preferred_username
        .as_deref()
        .or(id.email.as_deref())
        .and_then(|n| Username::parse(n).ok())
        // Never a name that could pass for the built-in admin.
        .filter(|n| !users::is_reserved_name(n.as_str()));
    let fallback =
        Username::parse(&format!("oidc-{}", id.subject)).map_err(|_| ApiError::InvalidToken)?;
    let mut candidates = preferred.into_iter().collect::<Vec<_>>();
    candidates.push(fallback);
    for name in candidates {
        match users::create(
            &mut conn,
            name.as_str(),
            email.as_deref(),
            role,
            RoleSource::Oidc,
            Some((&id.issuer, &id.subject)),
        )
        .await
        {
            Ok(u) => return Ok(u),
            Err(ApiError::Conflict(_)) => {
                // A concurrent first request may have created this identity.
                if let Some(u) =
                    users::get_by_oidc_identity(&mut conn, &id.issuer, &id.subject).await?
                {
                    return Ok(u);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::Conflict("username already exists"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> OidcConfig {
        OidcConfig {
            issuer: "https://idp".into(),
            audience: None,
            client: None,
            admin_emails: vec!["Boss@Example.com".into()],
            admin_groups: vec!["admins".into()],
            trust_unverified_email: false,
            jwks_refetch_interval: OidcConfig::DEFAULT_JWKS_REFETCH,
        }
    }

    fn person(email: Option<&str>, verified: bool, groups: &[&str]) -> Identity {
        Identity {
            issuer: "https://idp".into(),
            subject: "s".into(),
            preferred_username: None,
            email: email.map(str::to_owned),
            email_verified: verified,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn admin_rules() {
        let c = cfg();
        assert_eq!(
            role_for(&c, &person(Some("boss@example.com"), true, &[])),
            Role::Admin
        );
        assert_eq!(
            role_for(&c, &person(Some("boss@example.com"), false, &[])),
            Role::User
        );
        assert_eq!(role_for(&c, &person(None, false, &["admins"])), Role::Admin);
        assert_eq!(role_for(&c, &person(None, false, &["Admins"])), Role::User);
        let mut trusting = cfg();
        trusting.trust_unverified_email = true;
        assert_eq!(
            role_for(&trusting, &person(Some("boss@example.com"), false, &[])),
            Role::Admin
        );
    }

    #[test]
    fn claim_shapes() {
        assert!(verified_claim(Some(&json!(true))));
        assert!(verified_claim(Some(&json!("TRUE"))));
        assert!(!verified_claim(Some(&json!("yes"))));
        assert!(!verified_claim(None));
        assert_eq!(groups_claim(Some(&json!(["a", 1, "b"]))), vec!["a", "b"]);
        assert_eq!(groups_claim(Some(&json!("a"))), vec!["a"]);
        assert!(groups_claim(Some(&json!({"a": 1}))).is_empty());
    }
}
