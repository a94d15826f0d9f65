-- 005_add_iris_fields.sql
-- Track per-record IRIS sync state so the admin dashboard can show which
-- users/documents are out of date, and look users up by their IRIS lead id
-- when IRIS webhooks arrive.

ALTER TABLE users ADD COLUMN IF NOT EXISTS iris_sync_status varchar(20) NOT NULL DEFAULT 'pending';
ALTER TABLE users ADD COLUMN IF NOT EXISTS iris_last_sync_at timestamp;
ALTER TABLE users ADD COLUMN IF NOT EXISTS iris_sync_error text;

ALTER TABLE documents ADD COLUMN IF NOT EXISTS iris_sync_status varchar(20) NOT NULL DEFAULT 'pending';
ALTER TABLE documents ADD COLUMN IF NOT EXISTS iris_sync_error text;

-- Users already linked to a lead by 004 are considered synced.
UPDATE users SET iris_sync_status = 'synced' WHERE iris_lead_id IS NOT NULL AND iris_sync_status = 'pending';
UPDATE documents SET iris_sync_status = 'synced' WHERE iris_document_id IS NOT NULL AND iris_sync_status = 'pending';

CREATE UNIQUE INDEX IF NOT EXISTS idx_users_iris_lead_id ON users (iris_lead_id) WHERE iris_lead_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_documents_iris_sync_status ON documents (iris_sync_status);
