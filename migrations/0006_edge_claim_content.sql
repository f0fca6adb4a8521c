-- Issue 12, item 8: a confirmed edge claim keeps what it produced — the fact's content digest
-- (tally_domain::ContentDigest) and the delivery that carried it — so that a re-delivery of the same fact key with
-- other content is recorded as a `content_conflict` in edge_exceptions (with both deliveries) instead of passing as
-- a duplicate. NULL on claims confirmed before this column existed. For content_conflict rows, edge_exceptions.item
-- is the fact's position among the delivery's facts (one row per conflicting fact), not the PSP's item index.
ALTER TABLE edge_claims ADD COLUMN content_digest uuid, ADD COLUMN delivery_id uuid;
