-- What basic operation of a procedure offers, beside what it lacks (`missing_functions`), one per
-- line: the public sentence says what works first ("Sie können eine Geburt anmelden").
ALTER TABLE procedures ADD COLUMN offered_functions TEXT NOT NULL DEFAULT '';
