-- Chorus schema, version 3: drafts longer than INLINE_CONTENT_CHARS are held by reference; their
-- revisions keep the edit and the diff but not the whole text after each one.
ALTER TABLE draft_revisions ALTER COLUMN content_after DROP NOT NULL;
