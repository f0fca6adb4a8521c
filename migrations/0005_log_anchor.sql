-- Issue 12, item 7: each sink stores a digest of the last record it committed per partition. After a claim it reads
-- that record again and compares: a recreated topic (or restored broker storage) whose log has already grown past
-- the stored position is caught there, where no watermark shows it. NULL: nothing committed yet, or committed
-- before this column existed (then only the watermark checks apply).
ALTER TABLE sink_offsets ADD COLUMN last_record_sha256 bytea;
