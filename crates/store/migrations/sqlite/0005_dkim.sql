-- DKIM signing keys per domain. The private key is sealed with a key derived from the
-- master secret (ChaCha20-Poly1305); the public key is what DNS publishes.
CREATE TABLE dkim_keys (
    domain       TEXT NOT NULL,
    selector     TEXT NOT NULL,
    algorithm    TEXT NOT NULL,
    sealed_key   BLOB NOT NULL,
    public_key   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (domain, selector)
);
