-- Each indexed document's distinct words (lower-case, ё as е): the business's
-- vocabulary, which a customer's misspelt, clipped or transliterated words are
-- read against. Documents indexed before this are filled when re-indexed (the
-- lexical search's upgrade re-indexes every document).
ALTER TABLE documents ADD COLUMN words text[] NOT NULL DEFAULT '{}';
