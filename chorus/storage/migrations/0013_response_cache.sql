-- Chorus schema, version 13: the response cache (issue 17), optional per agent (its `cache:`
-- field; activities/response_cache.py). Identical requests within the agent's TTL reuse a
-- completion recorded here instead of calling the provider again.
--
-- key         SHA-256 of the canonical JSON of the request as sent: provider, the provider's
--             model id, the messages after PII redaction, temperature, max_tokens, output schema,
--             tools, tool choice and earlier tool turns. The prompt itself is not stored.
-- completion  what the provider returned, before PII placeholders are restored (so nothing the
--             agent's `pii` policy kept from the provider is stored): output, tool calls,
--             finish reason and the original call's usage and cost.
-- Expired rows are never read (expires_at > clock_timestamp() in every lookup) and are deleted
-- a few at a time by each store (chorus/storage/response_cache_rows.py).
CREATE TABLE llm_response_cache (
    key         bytea PRIMARY KEY,
    provider    text NOT NULL,
    model       text NOT NULL,
    completion  jsonb NOT NULL,
    hits        bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX llm_response_cache_expiry_idx ON llm_response_cache (expires_at);

-- A call answered from the cache is still recorded (message and ledger rows, cost 0); this
-- marks it in the message row and hence the run's transcript.
ALTER TABLE messages ADD COLUMN cached boolean NOT NULL DEFAULT false;
