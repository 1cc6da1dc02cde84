-- Key lifecycle. Times are unix seconds.
-- `disabled_at`: set while a key is turned off (it keeps its id, secret,
-- scope and expiry, and can be turned on again). The edge holds only keys
-- where it is NULL, so a disabled key is refused exactly like a deleted one.
ALTER TABLE api_keys ADD COLUMN disabled_at INTEGER;
-- `disabled_by`: the user who turned it off. A key an admin turned off
-- stays off for its owner: only an admin turns it on again (otherwise
-- disabling could not contain a key whose owner's login was taken over).
ALTER TABLE api_keys ADD COLUMN disabled_by INTEGER;

-- Revocation records. Revoking (deleting) a key removes its row from
-- `api_keys`, and so from every edge, exactly as before, and keeps what the
-- key was here: who owned it, its name and scope, and when, by whom and why
-- it was revoked. No foreign keys: a record outlives its user (deleting a
-- user revokes their keys) and its servers. `id` is the key's own id, never
-- reused, so a revoked key can never come back.
CREATE TABLE revoked_keys (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL,
    username TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    -- The scope as the API showed it: `*` or server names, one per line.
    server_ids TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    last_used_at INTEGER,
    revoked_at INTEGER NOT NULL,
    -- The user who revoked it.
    revoked_by INTEGER NOT NULL,
    reason TEXT
);
CREATE INDEX revoked_keys_by_user ON revoked_keys(user_id);

-- `suspended_at`: set while an admin has suspended the user. Every key of a
-- suspended user is left out of the edge's table (refused like a deleted
-- key), and every credential of theirs is refused at the control plane.
ALTER TABLE users ADD COLUMN suspended_at INTEGER;
