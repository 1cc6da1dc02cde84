//! Validated domain types. Each constructor checks its input once, so code
//! holding one of these never re-validates; errors carry the stable 400 message.

pub mod access;
pub mod key_policy;
pub mod key_status;

use crate::error::ApiError;
use keygate_protocol::ServerName;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

fn char_len(s: &str) -> usize {
    s.chars().count()
}

/// True for characters no stored name or text may hold, because a name
/// holding one can display as something else, or as nothing, or fail the
/// INSERT on PostgreSQL (NUL):
/// - every C0 and C1 control (NUL, tab and newline included, and DEL);
/// - the bidirectional-formatting characters (U+202E turns `abc` around);
/// - line and paragraph separators (U+2028, U+2029) and the interlinear
///   annotation controls (U+FFF9–U+FFFB);
/// - invisible characters ([`is_invisible_char`]: zero-width spaces and
///   joiners, U+FEFF, soft hyphens, tag characters, …);
/// - private-use characters and noncharacters, which show as nothing or as a
///   box that means something only to someone's font.
pub fn is_forbidden_char(c: char) -> bool {
    let cp = u32::from(c);
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{E000}'..='\u{F8FF}'
                | '\u{F0000}'..='\u{10FFFF}'
                | '\u{FDD0}'..='\u{FDEF}'
        )
        || cp & 0xFFFE == 0xFFFE
        || (is_invisible_char(c) && !is_joiner(c))
}

/// Zero-width (non-)joiners are invisible but part of how text is written
/// (Persian words, Indic conjuncts, emoji sequences), so names and texts may
/// hold them between visible characters; usernames may not.
fn is_joiner(c: char) -> bool {
    matches!(c, '\u{200C}' | '\u{200D}')
}

/// Whether `s` shows anything at all: one character that is neither white
/// space nor invisible.
fn has_visible_char(s: &str) -> bool {
    s.chars()
        .any(|c| !c.is_whitespace() && !is_invisible_char(c))
}

/// The longest run of combining marks a name may hold: languages stack two
/// or three; dozens on one letter ("Zalgo" text) overflow any table.
const MAX_COMBINING_RUN: usize = 8;

/// True for characters that show nothing (zero-width spaces and joiners,
/// U+FEFF, soft hyphens and the other default-ignorable code points): their
/// UTS #39 skeleton is empty. `bob` and `bob\u{200B}` must not be two people
/// who look the same in a list.
pub fn is_invisible_char(c: char) -> bool {
    let mut buf = [0u8; 4];
    unicode_security::confusable_detection::skeleton(c.encode_utf8(&mut buf))
        .next()
        .is_none()
}

/// The lowercased UTS #39 skeleton of `s`: two names with the same skeleton
/// would look the same to a person (homoglyphs from other scripts, fullwidth
/// forms, invisible characters and `rn`/`m` all collapse).
pub fn skeleton_of(s: &str) -> String {
    unicode_security::confusable_detection::skeleton(&s.to_lowercase()).collect()
}

/// The one check every stored name and text goes through (a name must also
/// show something: see [`has_visible_char`]).
fn check_chars(field: &str, s: &str) -> Result<(), ApiError> {
    if s.chars().any(is_forbidden_char) {
        return Err(ApiError::bad_request(format!(
            "{field} must not contain control, formatting or invisible characters"
        )));
    }
    if has_long_combining_run(s) {
        return Err(ApiError::bad_request(format!(
            "{field} has too many combining marks in a row"
        )));
    }
    Ok(())
}

/// More than [`MAX_COMBINING_RUN`] combining marks in a row somewhere in `s`.
fn has_long_combining_run(s: &str) -> bool {
    let mut run = 0usize;
    s.chars().any(|c| {
        run = if unicode_normalization::char::is_combining_mark(c) {
            run + 1
        } else {
            0
        };
        run > MAX_COMBINING_RUN
    })
}

/// A key's (or access rule's) name: 1 to 100 characters, none forbidden.
#[derive(Debug, Clone)]
pub struct Name(String);

impl Name {
    pub fn parse(field: &str, s: &str) -> Result<Self, ApiError> {
        if !has_visible_char(s) || char_len(s) > 100 {
            return Err(ApiError::bad_request(format!(
                "{field} must be 1 to 100 characters"
            )));
        }
        check_chars(field, s)?;
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free text of bounded length (descriptions, display names), on one line:
/// tab and newline are refused like every other control character.
#[derive(Debug, Clone, Default)]
pub struct Text(String);

impl Text {
    pub fn parse(field: &str, s: Option<String>, max: usize) -> Result<Self, ApiError> {
        let s = s.unwrap_or_default();
        if char_len(&s) > max {
            return Err(ApiError::bad_request(format!(
                "{field} must be at most {max} characters"
            )));
        }
        check_chars(field, &s)?;
        Ok(Self(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub const MAX_DESCRIPTION: usize = 500;
pub const MAX_DISPLAY_NAME: usize = 200;

/// A username: 1 to 100 characters, no whitespace or forbidden characters.
#[derive(Debug, Clone)]
pub struct Username(String);

impl Username {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        if s.is_empty()
            || char_len(s) > 100
            || s.chars()
                .any(|c| c.is_whitespace() || is_forbidden_char(c) || is_invisible_char(c))
        {
            return Err(ApiError::bad_request(
                "username must be 1 to 100 visible characters without spaces",
            ));
        }
        if has_long_combining_run(s) {
            return Err(ApiError::bad_request(
                "username has too many combining marks in a row",
            ));
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An email address, checked only for plausibility (the identity provider owns it).
#[derive(Debug, Clone)]
pub struct Email(String);

impl Email {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let ok = char_len(s) <= 254
            && !s.chars().any(|c| c.is_whitespace() || is_forbidden_char(c))
            && matches!(s.split_once('@'), Some((l, d)) if !l.is_empty() && !d.is_empty());
        if !ok {
            return Err(ApiError::bad_request("email is not a valid address"));
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }
    /// Reads a stored role; anything unexpected is the least privileged.
    pub fn from_db(s: &str) -> Self {
        if s == "admin" {
            Role::Admin
        } else {
            Role::User
        }
    }
}

/// Where a user's role comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleSource {
    /// The identity provider's claims decide, on every authentication.
    Oidc,
    /// Set through the API; pinned until changed again.
    Api,
    /// The built-in admin the static admin token acts as; always admin.
    Builtin,
}

impl RoleSource {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleSource::Oidc => "oidc",
            RoleSource::Api => "api",
            RoleSource::Builtin => "builtin",
        }
    }
    /// Reads a stored source; anything unexpected is pinned (`api`), so
    /// neither a token nor the built-in checks ever act on it.
    pub fn from_db(s: &str) -> Self {
        match s {
            "oidc" => RoleSource::Oidc,
            "builtin" => RoleSource::Builtin,
            _ => RoleSource::Api,
        }
    }
}

/// A set of MCP servers: every server (`["*"]`), or named ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerSelection {
    All,
    Named(Vec<ServerName>),
}

impl ServerSelection {
    /// Parses `mcpServerIds`: non-empty, `*` alone or valid names (deduplicated, sorted).
    pub fn parse(ids: &[String]) -> Result<Self, ApiError> {
        if ids.is_empty() {
            return Err(ApiError::bad_request(
                "mcpServerIds must list at least one MCP server, or be [\"*\"]",
            ));
        }
        if ids.iter().any(|s| s == "*") {
            if ids.len() > 1 {
                return Err(ApiError::bad_request(
                    "\"*\" cannot be combined with server names in mcpServerIds",
                ));
            }
            return Ok(Self::All);
        }
        let mut names = Vec::with_capacity(ids.len());
        for id in ids {
            let name = ServerName::parse(id).map_err(|_| {
                ApiError::bad_request(format!("unknown or unreachable MCP server: {id}"))
            })?;
            names.push(name);
        }
        names.sort();
        names.dedup();
        Ok(Self::Named(names))
    }

    pub fn to_ids(&self) -> Vec<String> {
        match self {
            ServerSelection::All => vec!["*".to_owned()],
            ServerSelection::Named(n) => n.iter().map(|s| s.as_str().to_owned()).collect(),
        }
    }
}

/// Who an access rule applies to: everyone, or listed users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subjects {
    Everyone,
    Users(Vec<i64>),
}

impl Subjects {
    /// Parses `["*"]` or `["user:<id>", ...]`; `group:<name>` is reserved.
    pub fn parse(items: &[String]) -> Result<Self, ApiError> {
        if items.is_empty() {
            return Err(ApiError::bad_request(
                "subjects must list at least one subject, or be [\"*\"]",
            ));
        }
        if items.iter().any(|s| s == "*") {
            if items.len() > 1 {
                return Err(ApiError::bad_request(
                    "\"*\" cannot be combined with other subjects",
                ));
            }
            return Ok(Self::Everyone);
        }
        let mut ids = Vec::with_capacity(items.len());
        for s in items {
            if s.starts_with("group:") {
                return Err(ApiError::bad_request(
                    "group subjects are not supported yet",
                ));
            }
            let id = s
                .strip_prefix("user:")
                .and_then(parse_id)
                .ok_or_else(|| ApiError::bad_request(format!("invalid subject: {s}")))?;
            ids.push(id);
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(Self::Users(ids))
    }

    pub fn to_strings(&self) -> Vec<String> {
        match self {
            Subjects::Everyone => vec!["*".to_owned()],
            Subjects::Users(ids) => ids.iter().map(|i| format!("user:{i}")).collect(),
        }
    }
}

/// Parses a positive decimal database id (path segments, subjects).
pub fn parse_id(s: &str) -> Option<i64> {
    if s.is_empty() || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|v: &i64| *v > 0)
}

/// A key's expiry: RFC 3339, strictly in the future when the key is created.
pub fn parse_expiry(s: &str, now: i64) -> Result<i64, ApiError> {
    let t = OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|_| ApiError::bad_request("expiresAt must be an RFC 3339 timestamp"))?;
    let secs = t.unix_timestamp();
    if secs <= now {
        return Err(ApiError::bad_request("expiresAt must be in the future"));
    }
    Ok(secs)
}

/// Unix seconds as RFC 3339 (UTC) for API responses.
pub fn format_time(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(Name::parse("name", "k").is_ok());
        assert!(Name::parse("name", "").is_err());
        assert!(Name::parse("name", "   ").is_err());
        assert!(Name::parse("name", &"é".repeat(100)).is_ok());
        assert!(Name::parse("name", &"a".repeat(101)).is_err());
    }

    #[test]
    fn forbidden_characters() {
        let bad = [
            '\0',
            '\u{1}',
            '\t',
            '\n',
            '\r',
            '\u{1f}',
            '\u{7f}',
            '\u{80}',
            '\u{85}',
            '\u{9f}',
            '\u{61c}',
            '\u{200e}',
            '\u{200f}',
            '\u{202a}',
            '\u{202e}',
            '\u{2066}',
            '\u{2069}',
            '\u{2028}',
            '\u{2029}',
            '\u{200b}',
            '\u{2060}',
            '\u{feff}',
            '\u{ad}',
            '\u{180e}',
            '\u{fff9}',
            '\u{e0041}',
            '\u{e000}',
            '\u{f0000}',
            '\u{fdd0}',
            '\u{fffe}',
            '\u{1ffff}',
        ];
        let msg = "name must not contain control, formatting or invisible characters";
        for c in bad {
            let s = format!("a{c}b");
            assert!(is_forbidden_char(c), "U+{:04X}", c as u32);
            assert_eq!(Name::parse("name", &s).unwrap_err().to_string(), msg);
            assert!(Text::parse("displayName", Some(s.clone()), 200).is_err());
            assert!(Username::parse(&s).is_err());
            assert!(Email::parse(&format!("{s}@x.y")).is_err());
        }
        // Ordinary text, and a visible neighbour of the bidi ranges, stay allowed.
        for ok in ['\u{202f}', 'é', '東', ' ', '\u{301}'] {
            assert!(!is_forbidden_char(ok), "U+{:04X}", ok as u32);
        }
        // Joiners belong to how some text is written, but never make a name
        // on their own, and never a username.
        assert!(Name::parse("name", "\u{645}\u{200c}\u{634}").is_ok());
        assert!(Name::parse("name", "\u{200d}").is_err());
        assert!(Name::parse("name", " \u{200b} ").is_err());
        assert!(Username::parse("a\u{200d}b").is_err());
        // A letter may carry a few marks; dozens overflow any list of users.
        assert!(Username::parse(&format!("e{}", "\u{301}".repeat(8))).is_ok());
        assert!(Username::parse(&format!("e{}", "\u{301}".repeat(9))).is_err());
        assert!(Text::parse("description", Some("Café 東京 🙂 עברית".into()), 500).is_ok());
    }

    #[test]
    fn selections() {
        assert_eq!(
            ServerSelection::parse(&["*".into()]).unwrap(),
            ServerSelection::All
        );
        assert!(ServerSelection::parse(&[]).is_err());
        assert!(ServerSelection::parse(&["*".into(), "a".into()]).is_err());
        assert!(ServerSelection::parse(&["Bad".into()]).is_err());
        let s = ServerSelection::parse(&["b".into(), "a".into(), "b".into()]).unwrap();
        assert_eq!(s.to_ids(), vec!["a", "b"]);
    }

    #[test]
    fn subjects() {
        assert_eq!(Subjects::parse(&["*".into()]).unwrap(), Subjects::Everyone);
        assert_eq!(
            Subjects::parse(&["user:2".into(), "user:1".into()]).unwrap(),
            Subjects::Users(vec![1, 2])
        );
        for bad in ["user:", "user:0", "user:-1", "user:01", "group:x", "bob"] {
            assert!(Subjects::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn expiry() {
        let now = 1_700_000_000;
        assert!(parse_expiry("2100-01-01T00:00:00Z", now).is_ok());
        assert!(parse_expiry("2000-01-01T00:00:00Z", now).is_err());
        assert!(parse_expiry("tomorrow", now).is_err());
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
    }
}
