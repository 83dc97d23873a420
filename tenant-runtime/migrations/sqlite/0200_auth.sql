-- Accounts and access (issue 6), SQLite dialect (kept in step with ../postgres/0200_auth.sql).
-- Session ids and invite tokens are stored only as SHA-256 hashes: a copy of the database does
-- not let anyone log in or accept an invite.

CREATE TABLE sessions (
    id_hash      TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- Synchronizer token: every state-changing request of this session must echo it.
    csrf_token   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE INDEX sessions_expiry ON sessions(expires_at);

CREATE TABLE invites (
    id           TEXT PRIMARY KEY,
    token_hash   TEXT NOT NULL UNIQUE,
    email        TEXT NOT NULL,
    display_name TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('admin', 'agent', 'dpo')),
    created_by   TEXT REFERENCES users(id) ON DELETE SET NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    accepted_at  INTEGER
);
CREATE INDEX invites_email ON invites(email);

-- Agents switch automatic allocation on and off in the Workspace.
ALTER TABLE users ADD COLUMN auto_allocate INTEGER NOT NULL DEFAULT 1;
