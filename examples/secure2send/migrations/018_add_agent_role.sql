-- 018_add_agent_role.sql
-- New 'agent' role: sales agents who refer merchants and can view (but not
-- approve) their merchants' applications. Widen the role CHECK constraints on
-- users and invitation_codes so agents can be invited and created.

ALTER TABLE users DROP CONSTRAINT IF EXISTS users_role_check;
ALTER TABLE users ADD CONSTRAINT users_role_check CHECK (role IN ('client', 'admin', 'agent'));

ALTER TABLE invitation_codes DROP CONSTRAINT IF EXISTS invitation_codes_role_check;
ALTER TABLE invitation_codes ADD CONSTRAINT invitation_codes_role_check CHECK (role IN ('client', 'admin', 'agent'));

-- Agent-specific profile fields.
ALTER TABLE users ADD COLUMN IF NOT EXISTS agent_code varchar(20);
ALTER TABLE users ADD COLUMN IF NOT EXISTS commission_rate numeric(5, 2);

CREATE UNIQUE INDEX IF NOT EXISTS idx_users_agent_code ON users (agent_code) WHERE agent_code IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_users_role ON users (role);
