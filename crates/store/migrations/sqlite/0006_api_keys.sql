-- Named API keys with scopes (seed 002). Account and inbox keys leave these empty.
ALTER TABLE api_keys ADD COLUMN name TEXT;
ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
ALTER TABLE api_keys ADD COLUMN platform TEXT;
ALTER TABLE api_keys ADD COLUMN device_id TEXT;
