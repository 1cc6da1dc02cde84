//! Reading the audit log (newest first, filtered, a page at a time), and
//! counting refused admin-token sign-ins without letting them grow the log.

use super::{Action, Actor, ClientAddr, Target};
use crate::db::{Conn, Db};
use crate::domain::format_time;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// Refused admin-token sign-ins take at most this many rows per minute:
/// one per client address, and past this, one shared row (`clientAddress`
/// null) that counts the rest. Unauthenticated requests can therefore add
/// at most this many rows a minute, however many addresses they come from.
pub const REFUSED_SIGN_IN_ROWS_PER_MINUTE: i64 = 100;

/// The `bucket_addr` of the shared row past the per-minute cap.
const OVERFLOW: &str = "*";
/// The `bucket_addr` of refusals whose address is unknown.
const UNKNOWN: &str = "?";

/// One event, as `GET /api/audit-events` shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub id: i64,
    /// RFC 3339, seconds (for a counted event: its first occurrence).
    pub time: String,
    /// `{"userId": N, "credential": "session" | "oidc-bearer" |
    /// "admin-token" | "oidc-sign-in"}`, `"system"`, or `null` (nobody
    /// authenticated).
    #[schema(value_type = Object)]
    pub actor: Value,
    /// The client's address (`--trusted-proxy-hops`), or null if unknown.
    pub client_address: Option<String>,
    pub action: String,
    /// `{"type": "key" | "user" | "server" | "rule" | "session" |
    /// "settings", "id": …}`; key targets also carry `ownerId`.
    #[schema(value_type = Object)]
    pub target: Value,
    /// Names and reasons; never a key or a secret.
    #[schema(value_type = Object)]
    pub details: Value,
    /// 1, except for `session.admin_token_refused`: how many in that minute.
    pub count: i64,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    at: i64,
    actor_kind: String,
    actor_user_id: Option<i64>,
    actor_credential: Option<String>,
    client_addr: Option<String>,
    action: String,
    target_type: String,
    target_id: Option<String>,
    target_owner_id: Option<i64>,
    details: String,
    repeat_count: i64,
}

impl Row {
    fn into_event(self) -> AuditEvent {
        let actor = Actor::from_columns(
            &self.actor_kind,
            self.actor_user_id,
            self.actor_credential.as_deref(),
        )
        .map(|who| Actor { who, client: None }.to_json())
        .unwrap_or(Value::Null);
        // Numeric ids read back as numbers, names as strings.
        let id = match (self.target_type.as_str(), self.target_id) {
            ("key" | "user" | "rule", Some(id)) => id
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or(Value::String(id)),
            (_, Some(id)) => Value::String(id),
            (_, None) => Value::Null,
        };
        let mut target = Map::new();
        target.insert("type".into(), Value::String(self.target_type.clone()));
        target.insert("id".into(), id);
        if self.target_type == "key" {
            target.insert(
                "ownerId".into(),
                self.target_owner_id.map(Value::from).unwrap_or(Value::Null),
            );
        }
        AuditEvent {
            id: self.id,
            time: format_time(self.at),
            actor,
            client_address: self.client_addr,
            action: self.action,
            target: Value::Object(target),
            details: serde_json::from_str(&self.details).unwrap_or(Value::Object(Map::new())),
            count: self.repeat_count,
        }
    }
}

/// Which events to read.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// Only events about keys this user owns (anyone but an admin).
    pub key_owner: Option<i64>,
    /// Events this user made, or about them, or about their keys.
    pub user_id: Option<i64>,
    pub key_id: Option<i64>,
    pub action: Option<Action>,
    /// Unix seconds, inclusive.
    pub from: Option<i64>,
    /// Unix seconds, exclusive.
    pub to: Option<i64>,
    /// Events older than this id (the cursor of the previous page).
    pub before: Option<i64>,
}

enum Bind {
    Int(i64),
    Text(String),
}

/// Up to `limit` events matching `f`, newest first, and whether more follow.
pub async fn list(
    conn: &mut Conn,
    f: &Filter,
    limit: i64,
) -> Result<(Vec<AuditEvent>, bool), sqlx::Error> {
    let mut conds: Vec<String> = Vec::new();
    let mut binds: Vec<Bind> = Vec::new();
    let next = |b: Bind, binds: &mut Vec<Bind>| {
        binds.push(b);
        format!("${}", binds.len())
    };
    if let Some(owner) = f.key_owner {
        let p = next(Bind::Int(owner), &mut binds);
        conds.push(format!("target_type = 'key' AND target_owner_id = {p}"));
    }
    if let Some(user) = f.user_id {
        let p = next(Bind::Int(user), &mut binds);
        let s = next(Bind::Text(user.to_string()), &mut binds);
        conds.push(format!(
            "(actor_user_id = {p} OR target_owner_id = {p} \
             OR (target_type = 'user' AND target_id = {s}))"
        ));
    }
    if let Some(key) = f.key_id {
        let p = next(Bind::Text(key.to_string()), &mut binds);
        conds.push(format!("target_type = 'key' AND target_id = {p}"));
    }
    if let Some(action) = f.action {
        let p = next(Bind::Text(action.as_str().to_owned()), &mut binds);
        conds.push(format!("action = {p}"));
    }
    if let Some(from) = f.from {
        let p = next(Bind::Int(from), &mut binds);
        conds.push(format!("at >= {p}"));
    }
    if let Some(to) = f.to {
        let p = next(Bind::Int(to), &mut binds);
        conds.push(format!("at < {p}"));
    }
    if let Some(before) = f.before {
        let p = next(Bind::Int(before), &mut binds);
        conds.push(format!("id < {p}"));
    }
    let limit_param = next(Bind::Int(limit.saturating_add(1)), &mut binds);
    let mut sql = String::from(
        "SELECT id, at, actor_kind, actor_user_id, actor_credential, client_addr, action, \
         target_type, target_id, target_owner_id, details, repeat_count FROM audit_events",
    );
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT {limit_param}"));
    // Audited: the text is fixed fragments and `$N` placeholders only;
    // every value the request gave is bound.
    let mut q = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql));
    for b in binds {
        q = match b {
            Bind::Int(v) => q.bind(v),
            Bind::Text(v) => q.bind(v),
        };
    }
    let mut rows = q.fetch_all(conn).await?;
    let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    Ok((rows.into_iter().map(Row::into_event).collect(), more))
}

/// Counts one refused admin-token sign-in from `client` at `now`: the
/// minute's row for that address gains one, or is created; past
/// [`REFUSED_SIGN_IN_ROWS_PER_MINUTE`] rows in the minute, the shared row
/// counts it instead. Several replicas may race past the cap by at most
/// one row each.
pub async fn count_refused_sign_in(
    db: &Db,
    client: ClientAddr,
    now: i64,
) -> Result<(), sqlx::Error> {
    let minute = now.div_euclid(60);
    let addr = client.0.map(|a| a.to_string());
    let mut tx = db.begin_plain_write().await?;
    let bucket = addr.clone().unwrap_or_else(|| UNKNOWN.to_owned());
    let bumped = sqlx::query(
        "UPDATE audit_events SET repeat_count = repeat_count + 1 \
         WHERE bucket_minute = $1 AND bucket_addr = $2",
    )
    .bind(minute)
    .bind(bucket.as_str())
    .execute(&mut *tx)
    .await?;
    if bumped.rows_affected() == 0 {
        let rows: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE bucket_minute = $1")
                .bind(minute)
                .fetch_one(&mut *tx)
                .await?;
        let (bucket, addr) = if rows >= REFUSED_SIGN_IN_ROWS_PER_MINUTE - 1 {
            (OVERFLOW.to_owned(), None)
        } else {
            (bucket, addr)
        };
        sqlx::query(
            "INSERT INTO audit_events (at, actor_kind, client_addr, action, target_type, \
             details, repeat_count, bucket_minute, bucket_addr) \
             VALUES ($1, 'anonymous', $2, $3, $4, '{}', 1, $5, $6) \
             ON CONFLICT (bucket_minute, bucket_addr) \
             DO UPDATE SET repeat_count = audit_events.repeat_count + 1",
        )
        .bind(now)
        .bind(addr)
        .bind(Action::SignInRefused.as_str())
        .bind(Target::Session.type_name())
        .bind(minute)
        .bind(bucket)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}
