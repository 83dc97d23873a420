-- Workspace and Configurator (issue 6), SQLite dialect (kept in step with ../postgres/0201_workspace.sql).

-- Internal notes: visible to colleagues, never sent to the customer.
CREATE TABLE conversation_notes (
    id              TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    author_user_id  TEXT REFERENCES users(id) ON DELETE SET NULL,
    text            TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX conversation_notes_conversation ON conversation_notes(conversation_id, created_at);

-- Category routing attributes edited in the Configurator: higher priority is served first;
-- rules are JSON `[{"channels": [...], "channel_apps": [...], "keywords": [...]}]` (any rule matches).
ALTER TABLE categories ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE categories ADD COLUMN rules TEXT NOT NULL DEFAULT '[]';

-- Tenant-wide settings edited by admins (routing settings), one JSON value per key.
CREATE TABLE tenant_settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
