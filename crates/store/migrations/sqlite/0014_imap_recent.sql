-- Issue #13: \Recent (RFC 3501 §2.3.2). A message is recent in exactly one session, the
-- first to be told of it: the mailbox remembers the first uid no session has claimed yet,
-- and a session that selects the mailbox read-write (or is told of new mail in it) claims
-- everything below uidnext.
ALTER TABLE mailboxes ADD COLUMN first_recent_uid BIGINT NOT NULL DEFAULT 1;
