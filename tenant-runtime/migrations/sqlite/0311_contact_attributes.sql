-- Contact attributes (issue 5), SQLite dialect (kept in step with ../postgres/0311_contact_attributes.sql).

-- Key/value pairs about a customer (`tier = gold`), edited by admins and by the agent serving the
-- customer, matched by category rules at arrival. Personal data: audited as entity
-- `contact_attribute`, exported with the contact and deleted when it is anonymized.
-- Keys and values are validated by domain::attributes (keys 1-40 of a-z 0-9 _ - ., values
-- 1-200 characters, 20 per contact).
CREATE TABLE contact_attributes (
    contact_id TEXT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (contact_id, key)
);
