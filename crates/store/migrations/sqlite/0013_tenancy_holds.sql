-- Issue #12, "Revocation and roles".
--
-- A deleted inbox's address is held for the account that had it until held_until, so
-- that nobody else can register it and receive its correspondents' mail.
CREATE TABLE address_holds (
    email        TEXT PRIMARY KEY,
    domain       TEXT NOT NULL,
    account_id   TEXT NOT NULL,
    held_until   INTEGER NOT NULL
);
CREATE INDEX address_holds_by_domain ON address_holds (domain);

-- A domain may be claimed by several accounts while none has verified it; the TXT proof
-- decides who gets it, and only one claim may be verified. The table is rebuilt for its
-- new key, and domain_credentials with it (its foreign key named the old key). The new
-- tables are filled before the old ones go, so the cascade of the old key deletes
-- nothing that is kept.
CREATE TABLE domains_new (
    domain        TEXT NOT NULL,
    account_id    TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL,
    verified_at   INTEGER,
    checked_at    INTEGER,
    last_check    TEXT,
    PRIMARY KEY (domain, account_id)
);
INSERT INTO domains_new (domain, account_id, created_at, verified_at, checked_at, last_check)
    SELECT domain, account_id, created_at, verified_at, checked_at, last_check FROM domains;

CREATE TABLE domain_credentials_new (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    guid           TEXT NOT NULL UNIQUE,
    account_id     TEXT NOT NULL,
    domain         TEXT NOT NULL,
    username       TEXT NOT NULL,
    password_hash  TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    modified_at    INTEGER NOT NULL,
    UNIQUE (domain, username),
    FOREIGN KEY (domain, account_id) REFERENCES domains_new (domain, account_id) ON DELETE CASCADE
);
INSERT INTO domain_credentials_new (id, guid, account_id, domain, username, password_hash,
        created_at, modified_at)
    SELECT id, guid, account_id, domain, username, password_hash, created_at, modified_at
    FROM domain_credentials;

DROP TABLE domain_credentials;
DROP TABLE domains;
ALTER TABLE domains_new RENAME TO domains;
ALTER TABLE domain_credentials_new RENAME TO domain_credentials;
CREATE INDEX domains_by_account ON domains (account_id);
CREATE UNIQUE INDEX domains_verified_once ON domains (domain) WHERE verified_at IS NOT NULL;

-- Changes that other processes' caches must hear of (an operator's `mailroom admin`
-- command beside a running server). PostgreSQL uses NOTIFY; SQLite has no such thing, so
-- the server polls this table.
CREATE TABLE stale_notes (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    what         TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
