-- 0002 wrote "\n" inside standard SQL strings, which PostgreSQL keeps as a
-- backslash and an "n"; the prompts meant line breaks.
UPDATE platform.prompts SET text = replace(text, '\n', E'\n') WHERE position('\n' in text) > 0;
