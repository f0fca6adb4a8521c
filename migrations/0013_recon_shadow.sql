-- Issue 15 §4: the continuous PSP reconciliation (`tally recon shadow`, ADR 0015 §6). Its own projection of the
-- lifecycle facts matching reads (captures, refunds, disputes), written with the shadow's offsets (sink_offsets,
-- its own group) in one transaction, so that its state is exactly once and never waits for the ledger. Each fact
-- once, at its first consumed delivery; the lineage is where it was read.
CREATE TABLE shadow_facts (
    fact_key        uuid        PRIMARY KEY,
    kind            text        NOT NULL,
    psp             text        NOT NULL,
    payment_id      text        NOT NULL,
    psp_reference   text        NOT NULL,
    merchant_id     text        NOT NULL,
    amount_minor    bigint      NOT NULL,
    currency        text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    consumed_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX shadow_facts_payment ON shadow_facts (payment_id);
CREATE INDEX shadow_facts_psp_kind ON shadow_facts (psp, kind);
