-- The webhook worker leases due deliveries one account at a time, round-robin over the
-- accounts that have any (issue #11), so that one account's backlog cannot fill every
-- delivery slot. This index finds "the next account after X with a due delivery" and
-- "the oldest due deliveries of account X" without scanning other accounts' backlogs.
CREATE INDEX webhook_deliveries_due_by_account
    ON webhook_deliveries (status, account_id, next_attempt_at);
-- It replaces the index by (status, next_attempt_at), which nothing reads any more.
DROP INDEX webhook_deliveries_due;
