-- Where each user's role comes from (decided after a security review):
--   oidc     the role follows the identity provider's claims on every sign-in;
--   api      an admin set it through the API, and it stays until changed again;
--   builtin  the one user the static admin token acts as (role admin, fixed).
ALTER TABLE users ADD COLUMN role_source TEXT NOT NULL DEFAULT 'api'
    CHECK (role_source IN ('oidc', 'api', 'builtin'));
-- The built-in admin never carries an OIDC subject, so no sign-in maps to it.
ALTER TABLE users ADD CONSTRAINT users_builtin_not_oidc
    CHECK (role_source <> 'builtin' OR oidc_subject IS NULL);

UPDATE users SET role_source = 'oidc' WHERE oidc_subject IS NOT NULL;

-- The built-in admin used to be found by the username `admin`. Only such a
-- user without an OIDC subject is it; an `admin` that came from an OIDC
-- sign-in took the name after the original was deleted, stays an ordinary
-- OIDC user, and the built-in admin is created again under another name.
UPDATE users SET role_source = 'builtin', role = 'admin'
    WHERE username = 'admin' AND oidc_subject IS NULL;

-- At most one built-in admin, found by this mark and never by name.
CREATE UNIQUE INDEX users_one_builtin ON users (role_source) WHERE role_source = 'builtin';
