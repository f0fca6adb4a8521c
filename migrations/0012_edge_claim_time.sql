-- A confirmed edge claim also keeps the fact's occurred_at as produced (µs since the Unix epoch; NULL on claims
-- confirmed before this column existed). A later delivery of the same content with an earlier occurred_at is then
-- produced as well, and the claim moves to it: the sinks date a fact by its earliest statement (I4), so the edge must
-- not drop the earliest as a duplicate of a restatement that happened to arrive first (docs/reliability.md).
ALTER TABLE edge_claims ADD COLUMN occurred_at_micros bigint;
