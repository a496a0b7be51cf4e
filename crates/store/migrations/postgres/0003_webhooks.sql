-- Webhook endpoints. Secrets are derived from the master secret and the generation; the
-- previous generation keeps signing until previous_expires_at (rotation overlap).
CREATE TABLE webhooks (
    id                   TEXT PRIMARY KEY,
    account_id           TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    url                  TEXT NOT NULL,
    events               TEXT NOT NULL,
    inbox_ids            TEXT NOT NULL DEFAULT '',
    client_id            TEXT,
    status               TEXT NOT NULL DEFAULT 'active',
    secret_generation    BIGINT NOT NULL DEFAULT 0,
    previous_expires_at  BIGINT,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    UNIQUE (account_id, client_id)
);
CREATE INDEX webhooks_by_account ON webhooks (account_id, created_at);

-- One delivery per (webhook, event): its state and schedule. lease_until keeps two
-- workers (processes) from sending the same delivery at once.
CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,
    webhook_id       TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    account_id       TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending',
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    lease_until      BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, created_at);

-- Every attempt, for GET /v1/webhooks/{id}/deliveries.
CREATE TABLE webhook_attempts (
    id           TEXT PRIMARY KEY,
    delivery_id  TEXT NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    attempted_at BIGINT NOT NULL,
    status_code  BIGINT,
    latency_ms   BIGINT NOT NULL,
    error        TEXT
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, attempted_at);

-- How far the fan-out (events -> deliveries) has read the outbox.
CREATE TABLE outbox_cursors (
    name  TEXT PRIMARY KEY,
    seq   BIGINT NOT NULL
);
INSERT INTO outbox_cursors (name, seq) SELECT 'webhooks', COALESCE(MAX(seq), 0) FROM events;
