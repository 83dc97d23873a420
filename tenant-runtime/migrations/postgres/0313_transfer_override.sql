-- A transfer forced to an agent who lacks the conversation's required skills, PostgreSQL
-- dialect (kept in step with ../sqlite/0313_transfer_override.sql).

-- Set with pinned_user_id when the transferring agent overrode the skill requirement: while the
-- pin holds, routing gives the conversation to that agent without the category's skills. Only
-- read together with pinned_user_id (a pin that is dropped makes it meaningless).
ALTER TABLE conversations ADD COLUMN pin_overrides_skills BOOLEAN NOT NULL DEFAULT FALSE;
