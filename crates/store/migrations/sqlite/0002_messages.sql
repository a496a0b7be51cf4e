-- Message bodies, addressed by SHA-256 and stored once however many inboxes receive them.
CREATE TABLE blobs (
    hash        TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    data        BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);

-- IMAP-ready folders of an inbox. The id is "<inbox id>/<name>".
CREATE TABLE mailboxes (
    id             TEXT PRIMARY KEY,
    inbox_id       TEXT NOT NULL REFERENCES inboxes(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    special_use    TEXT,
    uidvalidity    INTEGER NOT NULL,
    uidnext        INTEGER NOT NULL DEFAULT 1,
    highestmodseq  INTEGER NOT NULL DEFAULT 1,
    subscribed     INTEGER NOT NULL DEFAULT 1,
    created_at     INTEGER NOT NULL,
    UNIQUE (inbox_id, name)
);

-- One row per message per inbox. seq orders messages across the whole store (newest
-- first, `after=` polling); uid is the IMAP uid within the mailbox.
CREATE TABLE messages (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL UNIQUE,
    account_id     TEXT NOT NULL,
    inbox_id       TEXT NOT NULL REFERENCES inboxes(id) ON DELETE CASCADE,
    mailbox_id     TEXT NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid            INTEGER NOT NULL,
    modseq         INTEGER NOT NULL,
    blob_hash      TEXT NOT NULL REFERENCES blobs(hash),
    size           INTEGER NOT NULL,
    internal_date  INTEGER NOT NULL,
    flags          TEXT NOT NULL DEFAULT '',
    labels         TEXT NOT NULL DEFAULT '',
    thread_id      TEXT NOT NULL,
    message_id     TEXT,
    subject        TEXT,
    from_addr      TEXT,
    envelope_from  TEXT,
    auth_results   TEXT,
    UNIQUE (mailbox_id, uid)
);
CREATE INDEX messages_by_inbox ON messages (inbox_id, seq);
CREATE INDEX messages_by_thread ON messages (thread_id, seq);
CREATE INDEX messages_by_message_id ON messages (inbox_id, message_id);

-- The six standard folders for inboxes that existed before this migration.
INSERT INTO mailboxes (id, inbox_id, name, special_use, uidvalidity, created_at)
SELECT i.id || '/' || m.name, i.id, m.name, m.special_use, i.created_at / 1000, i.created_at
FROM inboxes i CROSS JOIN (
    SELECT 'INBOX' AS name, NULL AS special_use
    UNION ALL SELECT 'Sent', '\Sent'
    UNION ALL SELECT 'Drafts', '\Drafts'
    UNION ALL SELECT 'Trash', '\Trash'
    UNION ALL SELECT 'Junk', '\Junk'
    UNION ALL SELECT 'Archive', '\Archive'
) m;
