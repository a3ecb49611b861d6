-- Chorus schema, version 1: runs, messages, cost ledger, transcripts, blobs, agent configs.

CREATE TABLE runs (
    workflow_id        text PRIMARY KEY,
    run_id             text,
    parent_workflow_id text,
    root_workflow_id   text NOT NULL,
    pattern            text NOT NULL CHECK (pattern IN ('sequential', 'parallel')),
    task               text NOT NULL,
    agents             text[] NOT NULL,
    agent_versions     jsonb NOT NULL DEFAULT '{}'::jsonb,
    document_name      text,
    document_blob_id   uuid,
    document_bytes     bigint NOT NULL DEFAULT 0,
    status             text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    started_at         timestamptz NOT NULL,
    finished_at        timestamptz,
    llm_calls          integer NOT NULL DEFAULT 0,
    attempts           integer NOT NULL DEFAULT 0,
    input_tokens       bigint NOT NULL DEFAULT 0,
    output_tokens      bigint NOT NULL DEFAULT 0,
    cost_usd           numeric(18, 8) NOT NULL DEFAULT 0,
    wall_ms            double precision,
    output             text,
    error              text
);
CREATE INDEX runs_started_at_idx ON runs (started_at DESC);
CREATE INDEX runs_root_idx ON runs (root_workflow_id);
CREATE INDEX runs_status_idx ON runs (status) WHERE status = 'running';

-- One row per successful agent call (the request sent and the response received).
CREATE TABLE messages (
    id                 bigserial PRIMARY KEY,
    workflow_id        text NOT NULL,
    root_workflow_id   text NOT NULL,
    activity_id        text NOT NULL,
    agent              text NOT NULL,
    agent_version      integer,
    role               text NOT NULL DEFAULT 'assistant',
    provider           text NOT NULL,
    model              text NOT NULL,
    system_prompt      text NOT NULL,
    user_prompt        text NOT NULL,
    completion         text NOT NULL,
    input_tokens       integer NOT NULL,
    output_tokens      integer NOT NULL,
    cost_usd           numeric(18, 8) NOT NULL,
    latency_ms         double precision NOT NULL,
    attempt            integer NOT NULL,
    truncated_chars    integer NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workflow_id, activity_id)
);
CREATE INDEX messages_root_idx ON messages (root_workflow_id, id);

-- One row per paid or free call; the source of usage statistics.
CREATE TABLE cost_ledger (
    id                 bigserial PRIMARY KEY,
    workflow_id        text NOT NULL,
    root_workflow_id   text NOT NULL,
    activity_id        text NOT NULL,
    agent              text NOT NULL,
    provider           text NOT NULL,
    model              text NOT NULL,
    input_tokens       integer NOT NULL,
    output_tokens      integer NOT NULL,
    cost_usd           numeric(18, 8) NOT NULL,
    cost_known         boolean NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workflow_id, activity_id)
);
CREATE INDEX cost_ledger_created_idx ON cost_ledger (created_at);

-- The conversation archive: a finished run's transcript (its and its children's messages).
CREATE TABLE transcripts (
    workflow_id        text PRIMARY KEY,
    transcript         jsonb NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now()
);

-- Large text stored by reference (claim check); content-addressed.
CREATE TABLE blobs (
    id                 uuid PRIMARY KEY,
    sha256             text NOT NULL UNIQUE,
    size_bytes         bigint NOT NULL,
    content            text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now()
);

-- Versioned agent configuration: every change is a new row (audit trail).
CREATE TABLE agent_configs (
    name               text NOT NULL,
    version            integer NOT NULL,
    spec               jsonb NOT NULL,
    author             text NOT NULL,
    comment            text NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);
