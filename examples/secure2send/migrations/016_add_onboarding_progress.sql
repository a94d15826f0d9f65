-- 016_add_onboarding_progress.sql
-- Guided onboarding for new merchants: remember which onboarding step the
-- user reached so they can resume where they left off after logging out.

ALTER TABLE users ADD COLUMN IF NOT EXISTS onboarding_step varchar(30) NOT NULL DEFAULT 'welcome';
ALTER TABLE users ADD COLUMN IF NOT EXISTS onboarding_completed boolean NOT NULL DEFAULT false;
ALTER TABLE users ADD COLUMN IF NOT EXISTS onboarding_completed_at timestamp;

ALTER TABLE users DROP CONSTRAINT IF EXISTS users_onboarding_step_check;
ALTER TABLE users ADD CONSTRAINT users_onboarding_step_check
    CHECK (onboarding_step IN ('welcome', 'profile', 'mfa_setup', 'application', 'documents', 'complete'));

-- Existing admins and merchants who already submitted an application skip onboarding.
UPDATE users u
SET onboarding_step = 'complete',
    onboarding_completed = true,
    onboarding_completed_at = now()
WHERE u.onboarding_completed = false
  AND (u.role = 'admin'
       OR EXISTS (SELECT 1 FROM merchant_applications ma
                  WHERE ma.user_id = u.id AND ma.status <> 'draft'));
