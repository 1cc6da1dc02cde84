-- Key rotation with overlap. Times are unix seconds.
-- `rotated_at`: the last time the key was given a new secret (same id,
-- owner, name, scope and expiry).
ALTER TABLE api_keys ADD COLUMN rotated_at INTEGER;
-- The secret the last rotation replaced (SHA-256, hex, like `secret_hash`)
-- and the instant it stops working. Set only by a rotation with overlap;
-- the edge gets both in the key's entry and refuses the old secret at that
-- instant by its own clock. A second rotation overwrites them, so at most
-- two secrets are ever valid.
ALTER TABLE api_keys ADD COLUMN previous_secret_hash TEXT;
ALTER TABLE api_keys ADD COLUMN previous_secret_expires_at INTEGER;
-- The latest use of that old secret the edge reported, so people can see
-- whether anything still uses it before it stops. Cleared by a rotation.
ALTER TABLE api_keys ADD COLUMN previous_secret_used_at INTEGER;
