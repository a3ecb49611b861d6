-- Chorus schema, version 9: approval gates (issue 15).
-- gates: one row per opening of a gate (a gate inside a loop opens once per iteration), written
-- by chorus.open_gate when the gate starts waiting and completed by chorus.close_gate when it is
-- decided or times out. The workflow holds the gate too (query `gates`); this row keeps the
-- whole text under review (the workflow keeps a preview) and outlives the history.
-- Keyed on GateRecord.key (`<temporal run id>:<n>`), so a retried or re-run local activity
-- writes the same row again instead of adding one.

CREATE TABLE gates (
    key               text PRIMARY KEY,
    gate              text NOT NULL,
    workflow_id       text NOT NULL,
    root_workflow_id  text NOT NULL,
    question          text NOT NULL,
    subject_name      text,
    subject           text NOT NULL,
    approvers         text[] NOT NULL,
    allowed_users     text[] NOT NULL,
    opened_at         timestamptz NOT NULL,
    deadline          timestamptz,
    on_timeout        text NOT NULL,
    -- NULL while pending.
    outcome           text CHECK (outcome IN ('approved', 'rejected', 'edited', 'timed_out')),
    -- NULL for a time-out.
    decided_by        text,
    comment           text NOT NULL DEFAULT '',
    -- The replacement text of an `edit` decision.
    edited_content    text,
    decided_at        timestamptz
);
CREATE INDEX gates_root_idx ON gates (root_workflow_id, opened_at);
CREATE INDEX gates_pending_idx ON gates (opened_at) WHERE outcome IS NULL;
