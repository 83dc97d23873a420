-- Personal data and its lifecycle (issue 7), SQLite dialect (kept in step with ../postgres/0100_privacy.sql).
-- Numbered 0100 so that it sorts after the core migrations other branches add (0002, 0003, …).

-- Contact details a DPO searches by and an import can set.
ALTER TABLE contacts ADD COLUMN email TEXT;
ALTER TABLE contacts ADD COLUMN phone TEXT;
-- Set once the contact's personal data has been replaced (by a DPO or the retention job).
ALTER TABLE contacts ADD COLUMN anonymized_at INTEGER;
ALTER TABLE conversations ADD COLUMN anonymized_at INTEGER;

-- Append-only audit log of changes to personal data, hash-chained.
-- `hash` = SHA-256 over the canonical content (which holds `value_hash`, not the value) and the
-- previous entry's hash. `value_hash` = SHA-256(salt || value): redacting an entry (anonymization)
-- clears `new_value` and `salt`, which unlinks the hash from the value without breaking the chain.
CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    entity      TEXT NOT NULL,
    entity_id   TEXT NOT NULL,
    subject_id  TEXT,
    attribute   TEXT NOT NULL,
    new_value   TEXT,
    salt        TEXT,
    value_hash  TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL,
    redacted_at INTEGER
);
CREATE INDEX audit_log_subject ON audit_log(subject_id);
CREATE INDEX audit_log_entity ON audit_log(entity, entity_id);
CREATE INDEX audit_log_at ON audit_log(at);

-- Where verification starts after old entries were purged: the last purged entry's seq and hash.
CREATE TABLE audit_anchor (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    seq       INTEGER NOT NULL,
    hash      TEXT NOT NULL,
    purged_at INTEGER NOT NULL
);

-- Progress of the retention jobs: a run resumes after `cursor_at`/`cursor_id`.
CREATE TABLE retention_checkpoints (
    job        TEXT PRIMARY KEY,
    cutoff     INTEGER NOT NULL,
    cursor_at  INTEGER NOT NULL,
    cursor_id  TEXT NOT NULL,
    processed  INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
