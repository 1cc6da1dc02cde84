-- Audit log: an append-only record of every change (docs/security.md).
-- Each row is written in the transaction of the change it records, so a
-- change and its event commit or fail together. Times are unix seconds.
-- Nothing here is ever a key, a secret or a hash of one.
CREATE TABLE audit_events (
    -- AUTOINCREMENT: ids only grow, so the API's cursor (an id) is stable
    -- even after pruning.
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    -- `user` (with actor_user_id and actor_credential), `system` (policy),
    -- or `anonymous` (a refused admin-token sign-in).
    actor_kind TEXT NOT NULL,
    actor_user_id INTEGER,
    -- `session`, `oidc-bearer`, `admin-token` or `oidc-sign-in`.
    actor_credential TEXT,
    -- The client's address as the socket or the trusted proxies saw it.
    client_addr TEXT,
    action TEXT NOT NULL,
    -- `key`, `user`, `server`, `rule`, `session` or `settings`.
    target_type TEXT NOT NULL,
    -- Decimal ids, server names, or NULL (sessions).
    target_id TEXT,
    -- The key's owner, for key events: what owners are shown.
    target_owner_id INTEGER,
    -- A small JSON object (names, a reason): never a secret.
    details TEXT NOT NULL,
    -- How many times this happened: 1, except for refused admin-token
    -- sign-ins, counted per client address per minute in one row.
    repeat_count INTEGER NOT NULL DEFAULT 1,
    -- Refused sign-ins only: the minute (unix seconds / 60) and the address
    -- ('*' for the overflow row past the per-minute cap). NULL elsewhere;
    -- NULLs never collide, so the UNIQUE binds only those rows.
    bucket_minute INTEGER,
    bucket_addr TEXT,
    UNIQUE (bucket_minute, bucket_addr)
);
CREATE INDEX audit_events_by_time ON audit_events(at);
CREATE INDEX audit_events_by_owner ON audit_events(target_owner_id, id);
CREATE INDEX audit_events_by_target ON audit_events(target_type, target_id, id);
CREATE INDEX audit_events_by_actor ON audit_events(actor_user_id, id);
CREATE INDEX audit_events_by_action ON audit_events(action, id);
