-- 010_add_merchant_app_iris_and_doc_linking.sql
-- 1. Merchant applications are now synced to IRIS CRM as well (previously only
--    users and documents were).
-- 2. Documents can be attached to a specific merchant application instead of
--    only to the uploading user, so the review screen shows the right files.

ALTER TABLE merchant_applications ADD COLUMN IF NOT EXISTS iris_lead_id varchar(50);
ALTER TABLE merchant_applications ADD COLUMN IF NOT EXISTS iris_sync_status varchar(20) NOT NULL DEFAULT 'pending';
ALTER TABLE merchant_applications ADD COLUMN IF NOT EXISTS iris_synced_at timestamp;
ALTER TABLE merchant_applications ADD COLUMN IF NOT EXISTS iris_sync_error text;

-- Backfill the lead id from the owning user where one exists.
UPDATE merchant_applications ma
SET iris_lead_id = u.iris_lead_id
FROM users u
WHERE ma.user_id = u.id
  AND ma.iris_lead_id IS NULL
  AND u.iris_lead_id IS NOT NULL;

ALTER TABLE documents ADD COLUMN IF NOT EXISTS merchant_application_id varchar
    REFERENCES merchant_applications (id) ON DELETE SET NULL;

-- Link existing documents to the uploader's application when it is unambiguous
-- (the user has exactly one application).
UPDATE documents d
SET merchant_application_id = ma.id
FROM merchant_applications ma
WHERE d.user_id = ma.user_id
  AND d.merchant_application_id IS NULL
  AND (SELECT count(*) FROM merchant_applications x WHERE x.user_id = d.user_id) = 1;

CREATE INDEX IF NOT EXISTS idx_documents_merchant_application_id ON documents (merchant_application_id);
CREATE INDEX IF NOT EXISTS idx_merchant_applications_iris_lead_id ON merchant_applications (iris_lead_id);
