-- Chorus schema, version 7: the cost ledger records cached input tokens and cache writes
-- (priced at the provider's discounted rates by genai-prices) and which price data priced the
-- row (chorus/pricing.py: PRICE_DATA_VERSION).

ALTER TABLE cost_ledger
    ADD COLUMN cached_input_tokens integer NOT NULL DEFAULT 0,
    ADD COLUMN cache_write_tokens  integer NOT NULL DEFAULT 0,
    ADD COLUMN price_data          text;
