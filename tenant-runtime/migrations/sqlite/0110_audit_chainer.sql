-- Audit entries are written unchained in the transaction of the change they describe and get
-- their place in the hash chain (seq, prev_hash, hash) shortly after commit, from one chainer per
-- tenant (storage/audit.rs). `id` orders the unchained tail; `seq` stays the chain position, NULL
-- until chained. SQLite cannot change a primary key in place, so the table is rebuilt.
-- Kept in step with ../postgres/0110_audit_chainer.sql.
CREATE TABLE audit_log_0110 (
    id          INTEGER PRIMARY KEY,
    seq         INTEGER,
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
    prev_hash   TEXT,
    hash        TEXT,
    redacted_at INTEGER,
    -- An entry is either chained (all three set) or not yet (none set).
    CONSTRAINT audit_log_chained
        CHECK ((seq IS NULL) = (prev_hash IS NULL) AND (seq IS NULL) = (hash IS NULL))
);
INSERT INTO audit_log_0110 (id, seq, at, actor, action, entity, entity_id, subject_id, attribute, new_value, salt, value_hash, prev_hash, hash, redacted_at)
    SELECT seq, seq, at, actor, action, entity, entity_id, subject_id, attribute, new_value, salt, value_hash, prev_hash, hash, redacted_at FROM audit_log;
DROP TABLE audit_log;
ALTER TABLE audit_log_0110 RENAME TO audit_log;
CREATE UNIQUE INDEX audit_log_seq ON audit_log(seq);
CREATE INDEX audit_log_subject ON audit_log(subject_id);
CREATE INDEX audit_log_entity ON audit_log(entity, entity_id);
CREATE INDEX audit_log_at ON audit_log(at);
-- The chainer's work queue: small, because entries leave it within moments.
CREATE INDEX audit_log_unchained ON audit_log(id) WHERE seq IS NULL;
