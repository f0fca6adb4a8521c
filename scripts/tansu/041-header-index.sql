-- Tally's addition to tansu 0.6.0's sqlite schema (scripts/tansu/README.md). tansu reads a record's headers with
-- header_fetch.sql, once per record it fetches, by (topition, offset_id); the header table has no index, so each
-- of those reads scanned every header of every topic. Run on every start; a no-op once the index exists.
create index if not exists header_topition_offset_id on header (topition, offset_id);
