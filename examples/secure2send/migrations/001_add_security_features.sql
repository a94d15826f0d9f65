-- 001_add_security_features.sql
-- Security hardening for the initial schema:
--   * account lockout / password hygiene columns on users
--   * a CHECK constraint pinning the allowed user roles
--   * at-rest encryption metadata and an integrity checksum on documents
--   * a shared updated_at trigger so application code can't forget to bump it
--   * indexes supporting the audit log views in the admin dashboard

-- Account lockout and password hygiene.
ALTER TABLE users ADD COLUMN IF NOT EXISTS failed_login_count integer NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN IF NOT EXISTS locked_until timestamp;
ALTER TABLE users ADD COLUMN IF NOT EXISTS last_login_at timestamp;
ALTER TABLE users ADD COLUMN IF NOT EXISTS last_login_ip varchar(45);
ALTER TABLE users ADD COLUMN IF NOT EXISTS password_changed_at timestamp DEFAULT now();

-- Only these roles are understood by the authorization middleware.
ALTER TABLE users DROP CONSTRAINT IF EXISTS users_role_check;
ALTER TABLE users ADD CONSTRAINT users_role_check CHECK (role IN ('client', 'admin'));

-- Documents are encrypted client-side (FIELD_ENCRYPTION_KEY) before being
-- written to R2; keep the IV and a checksum of the plaintext for verification.
ALTER TABLE documents ADD COLUMN IF NOT EXISTS is_encrypted boolean NOT NULL DEFAULT false;
ALTER TABLE documents ADD COLUMN IF NOT EXISTS encryption_iv varchar(64);
ALTER TABLE documents ADD COLUMN IF NOT EXISTS checksum_sha256 char(64);

-- Generic trigger function: stamp updated_at on every UPDATE.
CREATE OR REPLACE FUNCTION set_updated_at()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS users_set_updated_at ON users;
CREATE TRIGGER users_set_updated_at
    BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

DROP TRIGGER IF EXISTS documents_set_updated_at ON documents;
CREATE TRIGGER documents_set_updated_at
    BEFORE UPDATE ON documents
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Audit log lookups: "everything user X did" and "latest events first".
CREATE INDEX IF NOT EXISTS idx_audit_logs_user_id_created_at ON audit_logs (user_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_audit_logs_created_at ON audit_logs (created_at DESC);
CREATE INDEX IF NOT EXISTS idx_documents_user_id ON documents (user_id);
CREATE INDEX IF NOT EXISTS idx_documents_status ON documents (status);
