-- 004_add_iris_integration.sql
-- IRIS CRM integration: each merchant user maps to a lead in IRIS, and
-- uploaded documents are pushed to that lead. Every API call is logged to
-- iris_sync_log so failed syncs can be retried and debugged.

ALTER TABLE users ADD COLUMN IF NOT EXISTS iris_lead_id varchar(50);

ALTER TABLE documents ADD COLUMN IF NOT EXISTS iris_document_id varchar(50);
ALTER TABLE documents ADD COLUMN IF NOT EXISTS iris_synced_at timestamp;

CREATE TABLE IF NOT EXISTS iris_sync_log (
    id               serial PRIMARY KEY,
    entity_type      varchar(30) NOT NULL,          -- 'user', 'document', ...
    entity_id        varchar NOT NULL,
    iris_lead_id     varchar(50),
    operation        varchar(30) NOT NULL,          -- 'create_lead', 'update_lead', 'upload_document'
    status           varchar(20) NOT NULL,          -- 'success' | 'failed'
    http_status      integer,
    request_payload  jsonb,
    response_payload jsonb,
    error_message    text,
    created_at       timestamp NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS idx_iris_sync_log_entity ON iris_sync_log (entity_type, entity_id);
CREATE INDEX IF NOT EXISTS idx_iris_sync_log_created_at ON iris_sync_log (created_at DESC);
