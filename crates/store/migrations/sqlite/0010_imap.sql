-- IMAP: the last UIDVALIDITY given to a mailbox of each inbox. A mailbox deleted and made
-- again under the same name must get a new, larger UIDVALIDITY (RFC 9051 §2.3.1.1), also
-- within the same second, so the counter outlives the mailbox rows.
CREATE TABLE imap_uidvalidity (
    inbox_id  TEXT PRIMARY KEY REFERENCES inboxes(id) ON DELETE CASCADE,
    last      INTEGER NOT NULL
);

-- Messages of one mailbox by uid (FETCH, SEARCH and the change checks of IMAP sessions).
CREATE INDEX messages_by_mailbox_modseq ON messages (mailbox_id, modseq);
