-- Contact tenant runtime schema, SQLite dialect (kept in step with ../postgres/0001_init.sql).
-- Timestamps are unix epoch milliseconds (INTEGER) so that comparisons and ordering behave the same
-- on both databases; the API renders them as RFC 3339. Content and payloads are JSON text.

CREATE TABLE categories (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL
);

CREATE TABLE skills (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE category_skills (
    category_id TEXT NOT NULL REFERENCES categories(id) ON DELETE CASCADE,
    skill_id    TEXT NOT NULL REFERENCES skills(id) ON DELETE CASCADE,
    PRIMARY KEY (category_id, skill_id)
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'agent', 'dpo')),
    -- argon2 PHC string, set by the (later) invite/login flow; NULL means "cannot log in yet".
    password_hash TEXT,
    created_at    INTEGER NOT NULL
);

CREATE TABLE user_skills (
    user_id  TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    skill_id TEXT NOT NULL REFERENCES skills(id) ON DELETE CASCADE,
    active   INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (user_id, skill_id)
);

CREATE TABLE contacts (
    id           TEXT PRIMARY KEY,
    display_name TEXT,
    created_at   INTEGER NOT NULL
);

CREATE TABLE contact_identities (
    channel    TEXT NOT NULL,
    identity   TEXT NOT NULL,
    contact_id TEXT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (channel, identity)
);
CREATE INDEX contact_identities_contact ON contact_identities(contact_id);

CREATE TABLE conversations (
    id               TEXT PRIMARY KEY,
    contact_id       TEXT NOT NULL REFERENCES contacts(id),
    channel          TEXT NOT NULL,
    channel_app      TEXT NOT NULL,
    identity         TEXT NOT NULL,
    category_id      TEXT REFERENCES categories(id),
    status           TEXT NOT NULL CHECK (status IN ('queued', 'assigned', 'closed')),
    assigned_user_id TEXT REFERENCES users(id),
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    assigned_at      INTEGER,
    closed_at        INTEGER,
    last_inbound_at  INTEGER
);
-- At most one open conversation per contact and channel app: inbound messages join it.
CREATE UNIQUE INDEX conversations_one_open ON conversations(contact_id, channel_app) WHERE status <> 'closed';
CREATE INDEX conversations_status ON conversations(status, created_at);

CREATE TABLE conversation_skills (
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    skill_id        TEXT NOT NULL REFERENCES skills(id) ON DELETE CASCADE,
    PRIMARY KEY (conversation_id, skill_id)
);

CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    channel_app     TEXT NOT NULL,
    direction       TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    -- The Conversation API message id: set on arrival (inbound) or after messages:send (outbound).
    external_id     TEXT,
    kind            TEXT NOT NULL,
    content         TEXT NOT NULL,
    status          TEXT NOT NULL,
    status_rank     INTEGER NOT NULL,
    status_reason   TEXT,
    author_user_id  TEXT REFERENCES users(id),
    idempotency_key TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
-- Idempotency of inbound webhooks: one row per Conversation API message id and channel app.
CREATE UNIQUE INDEX messages_external ON messages(channel_app, external_id);
CREATE UNIQUE INDEX messages_idempotency ON messages(conversation_id, idempotency_key);
CREATE INDEX messages_conversation ON messages(conversation_id, created_at);

CREATE TABLE outbox (
    -- Equal to the message id; sent as correlation_id so the far side can dedupe retries.
    id           TEXT PRIMARY KEY REFERENCES messages(id),
    channel_app  TEXT NOT NULL,
    payload      TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    available_at INTEGER NOT NULL,
    lease_until  INTEGER,
    last_error   TEXT,
    created_at   INTEGER NOT NULL,
    sent_at      INTEGER
);
CREATE INDEX outbox_due ON outbox(state, available_at);

CREATE TABLE webhook_nonces (
    channel_app TEXT NOT NULL,
    nonce       TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (channel_app, nonce)
);
CREATE INDEX webhook_nonces_expiry ON webhook_nonces(expires_at);

-- Append-only log of what happened to a conversation: the seam for routing and live events.
CREATE TABLE conversation_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    kind            TEXT NOT NULL,
    data            TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX conversation_events_conversation ON conversation_events(conversation_id, id);

INSERT INTO categories (id, name, description, created_at)
VALUES ('00000000-0000-0000-0000-000000000001', 'General', 'Catches every conversation that no other category takes.', 0);
