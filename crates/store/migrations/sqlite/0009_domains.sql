-- Custom domains of accounts (seed 001/003). A domain is usable (inboxes, inbound mail,
-- SMTP credentials) once its DNS records were checked: verified_at is set.
CREATE TABLE domains (
    domain        TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL,
    verified_at   INTEGER,
    checked_at    INTEGER,
    -- JSON: the status of each record at the last check.
    last_check    TEXT
);
CREATE INDEX domains_by_account ON domains (account_id);

-- SMTP credentials of a domain (seed 001): username@domain logs in to submission and may
-- send as addresses of that domain. The password is random and stored as its SHA-256.
CREATE TABLE domain_credentials (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    guid           TEXT NOT NULL UNIQUE,
    account_id     TEXT NOT NULL,
    domain         TEXT NOT NULL REFERENCES domains(domain) ON DELETE CASCADE,
    username       TEXT NOT NULL,
    password_hash  TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    modified_at    INTEGER NOT NULL,
    UNIQUE (domain, username)
);
