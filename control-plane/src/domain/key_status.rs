//! Where an API key is in its life, as lists and details show it. One
//! function decides it from the stored times, so every view agrees.

use serde::Serialize;
use utoipa::ToSchema;

/// `active`: the edge accepts it (on the servers it can reach).
/// `disabled`: turned off; refused like a deleted key until turned on again.
/// `expired`: past its expiry; refused.
/// `revoked`: deleted, kept on record; refused for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Disabled,
    Expired,
    Revoked,
}

impl KeyStatus {
    /// The status of a key that is not revoked (revoked keys have their
    /// own records). Disabled wins over expired: turning the key on again is the action a
    /// person would take first, and it says why the key stopped first.
    pub fn of(disabled_at: Option<i64>, expires_at: Option<i64>, now: i64) -> Self {
        if disabled_at.is_some() {
            KeyStatus::Disabled
        } else if expires_at.is_some_and(|e| e <= now) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_from_times() {
        assert_eq!(KeyStatus::of(None, None, 10), KeyStatus::Active);
        assert_eq!(KeyStatus::of(None, Some(11), 10), KeyStatus::Active);
        // The edge refuses a key at and after its expiry instant.
        assert_eq!(KeyStatus::of(None, Some(10), 10), KeyStatus::Expired);
        assert_eq!(KeyStatus::of(Some(1), Some(5), 10), KeyStatus::Disabled);
        assert_eq!(KeyStatus::of(Some(1), None, 10), KeyStatus::Disabled);
    }
}
