-- Issue 15 §4: which run first recorded a break ('tally recon psp', 'tally recon shadow'; NULL before this column).
-- The shadow resolves as `auto` only breaks it recorded itself: a break the nightly run found stays open until a
-- nightly run no longer finds it (or an operator resolves it), whatever the shadow's own view of the payment.
ALTER TABLE recon_breaks ADD COLUMN found_by text;
