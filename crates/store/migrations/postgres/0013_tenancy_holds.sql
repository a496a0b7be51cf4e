-- Issue #12, "Revocation and roles".
--
-- A deleted inbox's address is held for the account that had it until held_until, so
-- that nobody else can register it and receive its correspondents' mail.
CREATE TABLE address_holds (
    email        TEXT PRIMARY KEY,
    domain       TEXT NOT NULL,
    account_id   TEXT NOT NULL,
    held_until   BIGINT NOT NULL
);
CREATE INDEX address_holds_by_domain ON address_holds (domain);

-- A domain may be claimed by several accounts while none has verified it; the TXT proof
-- decides who gets it, and only one claim may be verified.
ALTER TABLE domain_credentials DROP CONSTRAINT domain_credentials_domain_fkey;
ALTER TABLE domains DROP CONSTRAINT domains_pkey;
ALTER TABLE domains ADD PRIMARY KEY (domain, account_id);
CREATE UNIQUE INDEX domains_verified_once ON domains (domain) WHERE verified_at IS NOT NULL;
ALTER TABLE domain_credentials ADD FOREIGN KEY (domain, account_id)
    REFERENCES domains (domain, account_id) ON DELETE CASCADE;
