-- keygate schema (SQLite). Times are unix seconds; booleans are 0/1 integers so
-- the same query code runs on PostgreSQL. AUTOINCREMENT: ids are never reused,
-- so a deleted key's id can never come back with another secret.
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE,
    email TEXT,
    role TEXT NOT NULL,
    oidc_subject TEXT UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE mcp_servers (
    name TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE access_rules (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    all_servers INTEGER NOT NULL,
    all_subjects INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE access_rule_servers (
    rule_id INTEGER NOT NULL REFERENCES access_rules(id) ON DELETE CASCADE,
    server_name TEXT NOT NULL REFERENCES mcp_servers(name) ON DELETE CASCADE,
    PRIMARY KEY (rule_id, server_name)
);
CREATE INDEX access_rule_servers_by_server ON access_rule_servers(server_name);

CREATE TABLE access_rule_subjects (
    rule_id INTEGER NOT NULL REFERENCES access_rules(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (rule_id, user_id)
);
CREATE INDEX access_rule_subjects_by_user ON access_rule_subjects(user_id);

CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    all_servers INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    last_used_at INTEGER
);
CREATE INDEX api_keys_by_user ON api_keys(user_id);
CREATE INDEX api_keys_all_servers ON api_keys(id) WHERE all_servers = 1;

CREATE TABLE api_key_servers (
    key_id INTEGER NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    server_name TEXT NOT NULL REFERENCES mcp_servers(name) ON DELETE CASCADE,
    PRIMARY KEY (key_id, server_name)
);
CREATE INDEX api_key_servers_by_server ON api_key_servers(server_name);

-- One row: the key-table version and the oldest version the change log still
-- reaches. Every write that can change the edge's view bumps `version` in its
-- own transaction, which serializes those writers in commit order.
CREATE TABLE feed_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    log_floor INTEGER NOT NULL
);
INSERT INTO feed_state (id, version, log_floor) VALUES (1, 0, 0);

-- Which keys changed at which version; deltas read `version > since` by index.
CREATE TABLE key_changes (
    version INTEGER NOT NULL,
    key_id INTEGER NOT NULL
);
CREATE INDEX key_changes_by_version ON key_changes(version);
