//! The key lifetime policy admins set (`/api/settings/key-policy`), and
//! every decision it makes, as pure functions of the policy, the key and
//! the time: the expiry a new key gets, whether an expiry edit is allowed,
//! and when a key has gone unused too long. The routes and the sweep only
//! load the policy and apply these.
//!
//! The rules, in one place:
//! - A new key without an expiry gets `defaultLifetimeDays` (or, with no
//!   default, `maxLifetimeDays`: a key must not outlive the maximum); an
//!   expiry after now + `maxLifetimeDays` is refused.
//! - An expiry edit may always shorten a key; it may lengthen it only up to
//!   its creation + `maxLifetimeDays`, and may not remove the expiry while a
//!   maximum exists. Lifetime counts from creation, so repeated edits
//!   cannot keep a key alive past the maximum.
//! - Keys that existed before a limit was set keep their expiry (nothing is
//!   shortened); `maxUnusedDays` applies to every key, old ones included.

use crate::error::ApiError;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

pub const DAY: i64 = 86_400;
/// The largest limit, in days (ten years): beyond it a limit means nothing,
/// and day counts stay far from overflowing unix seconds.
pub const MAX_POLICY_DAYS: u32 = 3650;

pub const FIELD_MAX_LIFETIME: &str = "maxLifetimeDays";
pub const FIELD_DEFAULT_LIFETIME: &str = "defaultLifetimeDays";
pub const FIELD_MAX_UNUSED: &str = "maxUnusedDays";

/// The policy; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyPolicy {
    /// A key may live at most this many days from its creation.
    pub max_lifetime_days: Option<u32>,
    /// A key created without an expiry expires this many days later.
    pub default_lifetime_days: Option<u32>,
    /// A key not used for this many days (from its last use, or from its
    /// creation when never used) is turned off.
    pub max_unused_days: Option<u32>,
}

fn days(n: u32) -> i64 {
    i64::from(n) * DAY
}

fn plural_days(n: u32) -> String {
    if n == 1 {
        "1 day".to_owned()
    } else {
        format!("{n} days")
    }
}

/// One limit from the body: absent or `null` is no limit.
fn limit(field: &str, value: Option<&Value>) -> Result<Option<u32>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=u64::from(MAX_POLICY_DAYS)).contains(n))
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{field} must be a whole number of days from 1 to {MAX_POLICY_DAYS}, or null"
                ))
            }),
    }
}

impl KeyPolicy {
    /// Parses a `PUT` body: an object with any of the three fields (a field
    /// left out, or `null`, is no limit); anything else is a 400 whose
    /// message names the field.
    pub fn from_json(body: &Value) -> Result<Self, ApiError> {
        let Some(obj) = body.as_object() else {
            return Err(ApiError::bad_request(
                "the key policy must be a JSON object",
            ));
        };
        if let Some(unknown) = obj.keys().find(|k| {
            ![FIELD_MAX_LIFETIME, FIELD_DEFAULT_LIFETIME, FIELD_MAX_UNUSED].contains(&k.as_str())
        }) {
            return Err(ApiError::bad_request(format!(
                "unknown field: {unknown} (expected {FIELD_MAX_LIFETIME}, \
                 {FIELD_DEFAULT_LIFETIME} or {FIELD_MAX_UNUSED})"
            )));
        }
        let policy = KeyPolicy {
            max_lifetime_days: limit(FIELD_MAX_LIFETIME, obj.get(FIELD_MAX_LIFETIME))?,
            default_lifetime_days: limit(FIELD_DEFAULT_LIFETIME, obj.get(FIELD_DEFAULT_LIFETIME))?,
            max_unused_days: limit(FIELD_MAX_UNUSED, obj.get(FIELD_MAX_UNUSED))?,
        };
        if let (Some(d), Some(m)) = (policy.default_lifetime_days, policy.max_lifetime_days)
            && d > m
        {
            return Err(ApiError::bad_request(format!(
                "{FIELD_DEFAULT_LIFETIME} ({d}) must not be more than {FIELD_MAX_LIFETIME} ({m})"
            )));
        }
        Ok(policy)
    }

    fn beyond_max(max: u32) -> String {
        format!(
            "expiresAt is beyond the key policy's maximum lifetime of {}",
            plural_days(max)
        )
    }

    /// The expiry of a new key created at `now`: the one asked for (refused
    /// past now + the maximum), or the default when none was asked for.
    pub fn new_key_expiry(
        &self,
        requested: Option<i64>,
        now: i64,
    ) -> Result<Option<i64>, ApiError> {
        match requested {
            Some(at) => match self.max_lifetime_days {
                Some(max) if at > now.saturating_add(days(max)) => {
                    Err(ApiError::bad_request(Self::beyond_max(max)))
                }
                _ => Ok(Some(at)),
            },
            None => Ok(self
                .default_lifetime_days
                .or(self.max_lifetime_days)
                .map(|d| now.saturating_add(days(d)))),
        }
    }

    /// Whether a key created at `created_at`, expiring at `current`, may be
    /// given the expiry `new` (`None`: none). Shortening is always allowed;
    /// lengthening only up to creation + the maximum.
    pub fn check_expiry_edit(
        &self,
        new: Option<i64>,
        current: Option<i64>,
        created_at: i64,
    ) -> Result<(), ApiError> {
        let Some(max) = self.max_lifetime_days else {
            return Ok(());
        };
        let shortens = match (new, current) {
            (_, None) => true,
            (Some(n), Some(c)) => n <= c,
            (None, Some(_)) => false,
        };
        if shortens && new.is_some() {
            return Ok(());
        }
        let Some(new) = new else {
            // Removing an expiry (or keeping none) while a maximum exists.
            if current.is_none() {
                return Ok(());
            }
            return Err(ApiError::bad_request(format!(
                "expiresAt cannot be removed: the key policy's maximum lifetime is {}",
                plural_days(max)
            )));
        };
        let bound = created_at.saturating_add(days(max));
        if new > bound {
            return Err(ApiError::bad_request(format!(
                "{} from the key's creation (at most {} for this key)",
                Self::beyond_max(max),
                crate::domain::format_time(bound)
            )));
        }
        Ok(())
    }

    /// Keys whose last activity is at or before this instant have gone
    /// unused for `maxUnusedDays` at `now`; `None` without that limit.
    pub fn unused_cutoff(&self, now: i64) -> Option<i64> {
        self.max_unused_days.map(|d| now.saturating_sub(days(d)))
    }

    /// What a key turned off by the sweep shows as its `disabledReason`.
    pub fn unused_reason(max_unused_days: u32) -> String {
        format!("unused for {} (key policy)", plural_days(max_unused_days))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(e: ApiError) -> String {
        e.to_string()
    }

    #[test]
    fn parses_and_validates() {
        assert_eq!(
            KeyPolicy::from_json(&json!({})).unwrap(),
            KeyPolicy::default()
        );
        let p = KeyPolicy::from_json(
            &json!({"maxLifetimeDays": 90, "defaultLifetimeDays": 30, "maxUnusedDays": null}),
        )
        .unwrap();
        assert_eq!(p.max_lifetime_days, Some(90));
        assert_eq!(p.default_lifetime_days, Some(30));
        assert_eq!(p.max_unused_days, None);
        for bad in [
            json!(0),
            json!(-1),
            json!(3651),
            json!(1.5),
            json!("30"),
            json!(true),
        ] {
            assert_eq!(
                msg(KeyPolicy::from_json(&json!({ "maxUnusedDays": bad })).unwrap_err()),
                "maxUnusedDays must be a whole number of days from 1 to 3650, or null"
            );
        }
        assert_eq!(
            msg(
                KeyPolicy::from_json(&json!({"maxLifetimeDays": 30, "defaultLifetimeDays": 31}))
                    .unwrap_err()
            ),
            "defaultLifetimeDays (31) must not be more than maxLifetimeDays (30)"
        );
        assert!(
            msg(KeyPolicy::from_json(&json!({"maxLifetime": 3})).unwrap_err())
                .starts_with("unknown field: maxLifetime")
        );
        assert_eq!(
            msg(KeyPolicy::from_json(&json!([1])).unwrap_err()),
            "the key policy must be a JSON object"
        );
        assert!(KeyPolicy::from_json(&json!({"maxLifetimeDays": 3650})).is_ok());
    }

    #[test]
    fn new_keys() {
        let now = 1_000_000;
        let none = KeyPolicy::default();
        assert_eq!(none.new_key_expiry(None, now).unwrap(), None);
        assert_eq!(
            none.new_key_expiry(Some(now + 999 * DAY), now).unwrap(),
            Some(now + 999 * DAY)
        );
        let p = KeyPolicy {
            max_lifetime_days: Some(90),
            default_lifetime_days: Some(30),
            max_unused_days: None,
        };
        assert_eq!(p.new_key_expiry(None, now).unwrap(), Some(now + 30 * DAY));
        assert_eq!(
            p.new_key_expiry(Some(now + 90 * DAY), now).unwrap(),
            Some(now + 90 * DAY)
        );
        assert_eq!(
            msg(p.new_key_expiry(Some(now + 90 * DAY + 1), now).unwrap_err()),
            "expiresAt is beyond the key policy's maximum lifetime of 90 days"
        );
        // A maximum without a default: a key without an expiry gets the maximum.
        let max_only = KeyPolicy {
            max_lifetime_days: Some(1),
            ..KeyPolicy::default()
        };
        assert_eq!(max_only.new_key_expiry(None, now).unwrap(), Some(now + DAY));
        assert_eq!(
            msg(max_only
                .new_key_expiry(Some(now + DAY + 1), now)
                .unwrap_err()),
            "expiresAt is beyond the key policy's maximum lifetime of 1 day"
        );
    }

    #[test]
    fn expiry_edits() {
        let created = 1_000_000;
        let p = KeyPolicy {
            max_lifetime_days: Some(90),
            ..KeyPolicy::default()
        };
        let bound = created + 90 * DAY;
        // Within creation + maximum: fine, longer or shorter.
        assert!(
            p.check_expiry_edit(Some(bound), Some(created + DAY), created)
                .is_ok()
        );
        // Past it: refused, naming the limit and the key's last instant.
        let e = msg(p
            .check_expiry_edit(Some(bound + 1), Some(created + DAY), created)
            .unwrap_err());
        assert!(
            e.starts_with("expiresAt is beyond the key policy's maximum lifetime of 90 days"),
            "{e}"
        );
        assert!(e.contains(&crate::domain::format_time(bound)), "{e}");
        // Removing the expiry: refused while a maximum exists.
        assert_eq!(
            msg(p
                .check_expiry_edit(None, Some(created + DAY), created)
                .unwrap_err()),
            "expiresAt cannot be removed: the key policy's maximum lifetime is 90 days"
        );
        // An old key (no expiry, or past the bound) may always be shortened.
        assert!(
            p.check_expiry_edit(Some(bound + 500 * DAY), None, created)
                .is_ok()
        );
        assert!(
            p.check_expiry_edit(Some(bound + 5 * DAY), Some(bound + 9 * DAY), created)
                .is_ok()
        );
        assert!(
            p.check_expiry_edit(Some(bound + 10 * DAY), Some(bound + 9 * DAY), created)
                .is_err()
        );
        assert!(p.check_expiry_edit(None, None, created).is_ok());
        // No maximum: anything goes.
        assert!(
            KeyPolicy::default()
                .check_expiry_edit(None, Some(1), created)
                .is_ok()
        );
    }

    #[test]
    fn unused() {
        let p = KeyPolicy {
            max_unused_days: Some(30),
            ..KeyPolicy::default()
        };
        assert_eq!(p.unused_cutoff(100 * DAY), Some(70 * DAY));
        assert_eq!(KeyPolicy::default().unused_cutoff(100 * DAY), None);
        assert_eq!(
            KeyPolicy::unused_reason(30),
            "unused for 30 days (key policy)"
        );
        assert_eq!(KeyPolicy::unused_reason(1), "unused for 1 day (key policy)");
    }
}
