-- Transfer to a named agent who cannot take it now (issue 5), PostgreSQL dialect (kept in step with
-- ../sqlite/0312_transfer_pin.sql).

-- When the conversation was pinned to pinned_user_id: after routing.transfer_pin_fallback_secs
-- the allocator drops the pin and anyone eligible may take it.
ALTER TABLE conversations ADD COLUMN pinned_at BIGINT;
