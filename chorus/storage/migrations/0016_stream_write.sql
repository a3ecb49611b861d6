-- Chorus schema, version 16: a stream append that keeps its caller's commit (issue 19).
--
-- chorus_stream_write is chorus_stream_append's body (0011/0014: the run's transaction advisory
-- lock, the rows in order, the NOTIFY on commit) without its transaction-local
-- synchronous_commit = off, so a statement that must stay durable can write stream events in
-- its own transaction. chorus.finish_run closes a top-level run's row and writes its
-- run_finished event in one statement this way (chorus.storage.db.record_run_finished): one
-- round trip per run less, and a reader that stops at run_finished finds the run closed,
-- since both commit together. That statement holds the run's stream lock through its WAL
-- flush (~1-2 ms); by then the run's steps have ended, so no writer waits for it.
--
-- chorus_stream_append (the live writers: each LLM call's events) keeps its asynchronous
-- commit and now calls chorus_stream_write, so the append logic is in one place.
CREATE FUNCTION chorus_stream_write(
    p_run_id text, p_workflow_id text, p_step text, p_agent text, p_activity_id text,
    p_attempt integer, p_kinds text[], p_texts text[]
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_last bigint;
BEGIN
    -- (7201338, hash of the run): one writer of a run at a time, until commit.
    PERFORM pg_advisory_xact_lock(7201338, hashtext(p_run_id));
    WITH written AS (
        INSERT INTO stream_events
            (run_id, workflow_id, step, agent, activity_id, attempt, kind, text)
        SELECT p_run_id, p_workflow_id, p_step, p_agent, p_activity_id, p_attempt, e.kind,
            e.text
        FROM unnest(p_kinds, p_texts) WITH ORDINALITY AS e(kind, text, n)
        ORDER BY e.n
        RETURNING id
    )
    SELECT max(id) INTO v_last FROM written;
    PERFORM pg_notify('chorus_stream', p_run_id);
    RETURN v_last;
END
$$;

CREATE OR REPLACE FUNCTION chorus_stream_append(
    p_run_id text, p_workflow_id text, p_step text, p_agent text, p_activity_id text,
    p_attempt integer, p_kinds text[], p_texts text[]
) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    -- Transaction-local: the caller's statement is its own transaction.
    PERFORM set_config('synchronous_commit', 'off', true);
    RETURN chorus_stream_write(
        p_run_id, p_workflow_id, p_step, p_agent, p_activity_id, p_attempt, p_kinds, p_texts);
END
$$;
