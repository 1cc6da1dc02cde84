-- Browser sign-in: sessions, pending OIDC logins, and the issuer of each OIDC
-- identity.
--
-- A person is found by issuer and subject. Rows from before this migration
-- carry a subject only; the control plane stamps them with the configured
-- issuer when it starts with OIDC configured (`users::stamp_oidc_issuer`).
-- (SQLite cannot drop the column's UNIQUE on `oidc_subject`, so a subject
-- stays unique across issuers: one issuer is configured at a time.)
ALTER TABLE users ADD COLUMN oidc_issuer TEXT;

-- One row per signed-in browser. `id` is the hex SHA-256 of the cookie value;
-- the value itself is never stored. `credential` is how the session was
-- opened: `oidc` (the provider's sign-in) or `admin-token` (the static admin
-- token pasted on the sign-in page), whose sessions carry a fingerprint of
-- that token so a changed token ends them. Deleting the user ends its
-- sessions (ON DELETE CASCADE; `users::delete` also deletes them explicitly).
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    credential TEXT NOT NULL CHECK (credential IN ('oidc', 'admin-token')),
    admin_token_fingerprint TEXT,
    created_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    CHECK ((credential = 'admin-token') = (admin_token_fingerprint IS NOT NULL))
);
CREATE INDEX sessions_by_user ON sessions(user_id);

-- An OIDC sign-in between the redirect to the provider and the callback:
-- `id` is the hex SHA-256 of the `state` parameter. Taken exactly once (the
-- callback deletes the row it reads), so any replica can finish a login and
-- a replayed callback finds nothing. Rows older than a few minutes are
-- refused and pruned.
CREATE TABLE pending_logins (
    id TEXT PRIMARY KEY,
    nonce TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    next_path TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX pending_logins_by_age ON pending_logins(created_at);

-- The admin list of keys is paged newest first, for everyone or one user:
-- these let a page read only its rows instead of sorting every key.
CREATE INDEX api_keys_by_age ON api_keys(created_at, id);
CREATE INDEX api_keys_by_user_age ON api_keys(user_id, created_at, id);
