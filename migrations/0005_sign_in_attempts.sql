-- A sign-in attempt claims its row in login_failures before the password is checked, so that
-- parallel attempts from one address cannot all pass the address limit at once; a successful
-- (or refused) attempt removes its claim again by this random id. Plain failures recorded
-- elsewhere (the second factor) keep the empty default.
ALTER TABLE login_failures ADD COLUMN attempt TEXT NOT NULL DEFAULT '';
