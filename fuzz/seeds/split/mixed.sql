CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;
-- c
/* nested /* */ */ SELECT E'\'';
--> statement-breakpoint
SELECT "a;b";
