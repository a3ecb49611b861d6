-- Chorus schema, version 2: collaborative drafts and their revision history.

CREATE TABLE drafts (
    draft_id       text PRIMARY KEY,
    title          text NOT NULL,
    status         text NOT NULL
                   CHECK (status IN ('drafting', 'in_review', 'approved', 'published', 'archived')),
    version        integer NOT NULL,
    content        text NOT NULL,
    collaborators  jsonb NOT NULL,
    comments       jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- One row per accepted revision; version 1 is the initial text.
CREATE TABLE draft_revisions (
    draft_id       text NOT NULL REFERENCES drafts (draft_id),
    version        integer NOT NULL,
    author         text NOT NULL,
    author_kind    text NOT NULL CHECK (author_kind IN ('person', 'agent')),
    base_version   integer NOT NULL,
    edit           jsonb NOT NULL,
    summary        text NOT NULL DEFAULT '',
    diff           text NOT NULL,
    content_after  text NOT NULL,
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (draft_id, version)
);
