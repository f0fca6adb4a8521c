-- Issue 13, item 1: each archive file also carries the money sum of the facts it holds (amount, fee and currency of
-- each, tally_archive::checksum::money_value), so that recon ties the archived money to what the ledger booked per
-- range, not only the fact keys. NULL for files written before this column existed: recon compares their keys only.
-- The files gain a trailing `fee_minor` column at the same time (files without it read their fees as absent).
ALTER TABLE archive_files ADD COLUMN money_sum numeric;
