-- Accounts, inboxes, keys, the event outbox. Times are integer milliseconds since the epoch.
CREATE TABLE accounts (
    id                        TEXT PRIMARY KEY,
    tier                      TEXT NOT NULL,
    smtp_password_generation  INTEGER NOT NULL DEFAULT 0,
    created_at                INTEGER NOT NULL,
    updated_at                INTEGER NOT NULL
);

CREATE TABLE inboxes (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    username    TEXT NOT NULL,
    domain      TEXT NOT NULL,
    email       TEXT NOT NULL UNIQUE,
    status      TEXT NOT NULL DEFAULT 'active',
    client_id   TEXT,
    created_at  INTEGER NOT NULL,
    UNIQUE (account_id, client_id)
);
CREATE INDEX inboxes_by_account ON inboxes (account_id, created_at, id);

-- Keys are stored as SHA-256 hashes only; display_prefix is what lists may show.
CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    inbox_id        TEXT REFERENCES inboxes(id) ON DELETE CASCADE,
    kind            TEXT NOT NULL,
    hash            TEXT NOT NULL UNIQUE,
    display_prefix  TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX api_keys_by_inbox ON api_keys (inbox_id);

-- The outbox: one row per event, written in the transaction of the change.
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    account_id  TEXT NOT NULL,
    inbox_id    TEXT,
    type        TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX events_by_account ON events (account_id, seq);

-- Sends counted per account and period ('d:2026-03-16', 'm:2026-03').
CREATE TABLE send_counts (
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    period      TEXT NOT NULL,
    count       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, period)
);

-- Upgrade links are signed and stateless; redeeming one records its nonce so it works once.
CREATE TABLE redeemed_upgrade_links (
    nonce        TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL,
    target_tier  TEXT NOT NULL,
    redeemed_at  INTEGER NOT NULL
);
