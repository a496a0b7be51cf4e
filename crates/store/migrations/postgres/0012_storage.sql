-- Storage counted per inbox and per account: the bytes of every message row (each copy
-- counts, as IMAP QUOTA's STORAGE does), kept current in the transaction that adds or
-- removes a row (docs/decisions.md: storage quota).
ALTER TABLE inboxes ADD COLUMN storage_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN storage_bytes BIGINT NOT NULL DEFAULT 0;

UPDATE inboxes SET storage_bytes =
    (SELECT COALESCE(SUM(m.size), 0) FROM messages m WHERE m.inbox_id = inboxes.id);
UPDATE accounts SET storage_bytes =
    (SELECT COALESCE(SUM(i.storage_bytes), 0) FROM inboxes i WHERE i.account_id = accounts.id);

-- The blob collector asks "does anything still use this blob?".
CREATE INDEX messages_by_blob ON messages (blob_hash);
CREATE INDEX outbound_by_blob ON outbound (blob_hash);
CREATE INDEX blobs_by_age ON blobs (created_at);
