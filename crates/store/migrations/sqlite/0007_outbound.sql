-- The outbound queue. One row per sent message that has recipients on other servers (or
-- any recipients at all: hosted recipients are recorded as delivered at once, so that the
-- sent message shows a status for every recipient).
CREATE TABLE outbound (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL,
    inbox_id     TEXT NOT NULL,
    -- The sender's Sent copy (msg_…): where delivery status is shown.
    message_id   TEXT NOT NULL,
    -- The envelope sender; empty for a DSN (the null reverse-path).
    mail_from    TEXT NOT NULL,
    blob_hash    TEXT NOT NULL REFERENCES blobs(hash),
    size         INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    -- After this, a recipient still not delivered bounces.
    expires_at   INTEGER NOT NULL
);
CREATE INDEX outbound_by_message ON outbound (message_id);

-- One row per recipient. status: queued (never tried), deferred (a temporary failure;
-- retried at next_attempt_at), delivered, bounced (a permanent failure or expiry; a DSN
-- went to the sender), removed (by an operator).
CREATE TABLE outbound_recipients (
    outbound_id      TEXT NOT NULL REFERENCES outbound(id) ON DELETE CASCADE,
    recipient        TEXT NOT NULL,
    domain           TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    lease_until      INTEGER NOT NULL DEFAULT 0,
    last_response    TEXT,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (outbound_id, recipient)
);
CREATE INDEX outbound_due ON outbound_recipients (status, next_attempt_at);
