-- The day a statement is to be looked at again (YYYY-MM-DD); empty: 14 days after it was stated.
ALTER TABLE statements ADD COLUMN review_on TEXT NOT NULL DEFAULT '';
