-- Routing service (issue 5), SQLite dialect (kept in step with ../postgres/0300_routing.sql).

-- Queue position: the original enqueue time, kept when a conversation returns to the queue
-- (NULL: created_at). A transfer to an agent pins the conversation to them; an agent who put it
-- back is avoided by automatic allocation.
ALTER TABLE conversations ADD COLUMN enqueued_at INTEGER;
ALTER TABLE conversations ADD COLUMN pinned_user_id TEXT REFERENCES users(id) ON DELETE SET NULL;
ALTER TABLE conversations ADD COLUMN avoid_user_id TEXT REFERENCES users(id) ON DELETE SET NULL;
CREATE INDEX conversations_assignee ON conversations(assigned_user_id, status);
CREATE INDEX conversations_contact ON conversations(contact_id, closed_at);

-- Every routing decision with its explanation (JSON), automatic or manual.
CREATE TABLE routing_decisions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    user_id         TEXT REFERENCES users(id) ON DELETE SET NULL,
    kind            TEXT NOT NULL,
    reason          TEXT NOT NULL,
    explanation     TEXT NOT NULL,
    epoch           INTEGER,
    created_at      INTEGER NOT NULL
);
CREATE INDEX routing_decisions_conversation ON routing_decisions(conversation_id, id);

-- An agent's declared availability (no row: available).
CREATE TABLE routing_agents (
    user_id    TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    status     TEXT NOT NULL CHECK (status IN ('available', 'away', 'offline')),
    updated_at INTEGER NOT NULL
);

-- Live Workspace sessions per replica and user; a replica's rows count only while its heartbeat
-- in routing_replicas is fresh (a crashed replica's sessions end when its heartbeat goes stale).
CREATE TABLE routing_replicas (
    replica TEXT PRIMARY KEY,
    seen_at INTEGER NOT NULL
);
CREATE TABLE routing_presence (
    replica    TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    sessions   INTEGER NOT NULL,
    changed_at INTEGER NOT NULL,
    PRIMARY KEY (replica, user_id)
);

-- The allocator lease: one holder per tenant database; the epoch fences a deposed holder's claims.
CREATE TABLE routing_leader (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

-- Agent-level changes (presence, status, skills, auto-allocate, settings) the allocator must see,
-- from any replica, in order.
CREATE TABLE routing_signals (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    TEXT,
    kind       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
