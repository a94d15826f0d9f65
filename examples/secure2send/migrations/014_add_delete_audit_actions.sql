-- 014_add_delete_audit_actions.sql
-- Admins can now delete documents, users and merchant applications; those
-- actions must be audit logged, so extend the audit_action enum.
-- ALTER TYPE ... ADD VALUE is allowed inside a transaction on PostgreSQL 12+
-- as long as the new values are not used in the same transaction, which this
-- file does not do.

ALTER TYPE audit_action ADD VALUE IF NOT EXISTS 'document_delete';
ALTER TYPE audit_action ADD VALUE IF NOT EXISTS 'user_delete';
ALTER TYPE audit_action ADD VALUE IF NOT EXISTS 'application_delete';
