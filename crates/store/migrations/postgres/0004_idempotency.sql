-- Idempotency-Key (and client_id) for sends: the first request's answer, replayed to repeats.
-- response IS NULL while the first request is still running.
CREATE TABLE idempotency_keys (
    account_id    TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    status        BIGINT,
    response      TEXT,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (account_id, key)
);
