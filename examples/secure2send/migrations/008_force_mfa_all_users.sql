-- 008_force_mfa_all_users.sql
-- Policy change: MFA is now mandatory for every account, not just admins.
-- Flag all existing users and make it the default for new ones. Users who
-- have not enrolled yet get a 14-day grace period.

UPDATE users
SET mfa_required = true,
    mfa_setup_deadline = COALESCE(mfa_setup_deadline, now() + interval '14 days')
WHERE mfa_required = false
  AND mfa_enabled = false;

UPDATE users SET mfa_required = true WHERE mfa_required = false;

ALTER TABLE users ALTER COLUMN mfa_required SET DEFAULT true;
