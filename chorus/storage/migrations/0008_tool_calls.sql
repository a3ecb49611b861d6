-- Chorus schema, version 8: tool use (issue 14).
-- messages.tool_calls: the tools a model turn asked for (JSON array of {id, name, arguments}),
-- so a retried LLM activity that reuses a recorded turn gets its calls back.
-- tool_calls: one row per tool call (chorus.call_tool), keyed like messages on the activity.

ALTER TABLE messages ADD COLUMN tool_calls jsonb;

CREATE TABLE tool_calls (
    id                 bigserial PRIMARY KEY,
    workflow_id        text NOT NULL,
    root_workflow_id   text NOT NULL,
    activity_id        text NOT NULL,
    agent              text NOT NULL,
    tool               text NOT NULL,
    call_id            text NOT NULL,
    arguments          jsonb NOT NULL,
    output             text NOT NULL,
    is_error           boolean NOT NULL,
    error_type         text,
    latency_ms         double precision NOT NULL,
    attempt            integer NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workflow_id, activity_id)
);
CREATE INDEX tool_calls_root_idx ON tool_calls (root_workflow_id, id);
CREATE INDEX tool_calls_tool_idx ON tool_calls (tool, created_at);
