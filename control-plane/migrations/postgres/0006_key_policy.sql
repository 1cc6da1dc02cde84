-- The key lifetime policy, set by admins (GET/PUT /api/settings/key-policy).
-- One row (id = 1), read from the database on every key create, expiry edit
-- and sweep, so every replica sharing the database applies the same policy
-- at once. NULL in a limit means no limit. Times are unix seconds.
CREATE TABLE key_policy (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    -- A key may live at most this many days from its creation.
    max_lifetime_days BIGINT CHECK (max_lifetime_days BETWEEN 1 AND 3650),
    -- A key created without an expiry expires this many days after creation.
    default_lifetime_days BIGINT CHECK (default_lifetime_days BETWEEN 1 AND 3650),
    -- A key unused this many days is turned off by the sweep.
    max_unused_days BIGINT CHECK (max_unused_days BETWEEN 1 AND 3650),
    updated_at BIGINT,
    -- The user who last set it.
    updated_by BIGINT,
    CHECK (default_lifetime_days IS NULL OR max_lifetime_days IS NULL
           OR default_lifetime_days <= max_lifetime_days)
);
INSERT INTO key_policy (id) VALUES (1);

-- Why a key is off, when the control plane itself turned it off (the
-- unused-key sweep: "unused for 30 days (key policy)"); NULL when a person
-- did (`disabled_by` says who). Cleared when the key is turned on again.
ALTER TABLE api_keys ADD COLUMN disabled_reason TEXT;
-- When the key was last turned on again: the unused-key clock restarts
-- there, so a key turned on is not swept again before it could be used.
ALTER TABLE api_keys ADD COLUMN enabled_at BIGINT;
-- The sweep's candidates: keys whose last use (or creation, when never
-- used) is older than the cutoff, found by range rather than by a scan.
CREATE INDEX api_keys_last_activity ON api_keys ((COALESCE(last_used_at, created_at)));
