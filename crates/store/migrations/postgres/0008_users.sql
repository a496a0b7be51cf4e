-- Operator users of an account (seed 004): they log in with email and password and get
-- JWT access tokens and refresh tokens.
CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    -- Lower case; unique across the server, since a login names no account.
    email          TEXT NOT NULL UNIQUE,
    -- Argon2id in PHC string form.
    password_hash  TEXT NOT NULL,
    first_name     TEXT NOT NULL DEFAULT '',
    surname        TEXT NOT NULL DEFAULT '',
    is_owner       BIGINT NOT NULL DEFAULT 0,
    is_verified    BIGINT NOT NULL DEFAULT 0,
    disabled       BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    modified_at    BIGINT NOT NULL
);
CREATE INDEX users_by_account ON users (account_id);

-- Refresh tokens, by SHA-256 of the token. A grant starts a family; each refresh replaces
-- the token with a new one of the same family (same absolute expiry). Presenting a token
-- that was already replaced revokes the whole family.
CREATE TABLE refresh_tokens (
    token_hash   TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    family_id    TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    -- Set when this token was exchanged for the next one.
    replaced_at  BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX refresh_tokens_by_user ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);
