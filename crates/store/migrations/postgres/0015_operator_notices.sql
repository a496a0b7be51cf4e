-- Issue #14, "Telling the operator": notices an agent leaves for its operator
-- (POST /v1/notify-operator). inbox_id names the inbox whose key wrote it (NULL for an
-- account key, a scoped key or a user); context is a JSON object as text. A notice is
-- open until resolved_at is set; an account has a bounded number of open notices.
CREATE TABLE operator_notices (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    inbox_id     TEXT,
    issue        TEXT NOT NULL,
    context      TEXT,
    action_label TEXT,
    created_at   BIGINT NOT NULL,
    resolved_at  BIGINT
);
CREATE INDEX operator_notices_by_account ON operator_notices (account_id, created_at);
