-- Data-quality exceptions found at the webhook edge (issue 12): a notification Tally acknowledged but could not map
-- without a person (a CANCEL_OR_REFUND without modification.action, a refund object of an ambiguous API version, a
-- dispute whose money cannot be read), and a re-delivery of a booked fact with different content. The bytes are in
-- webhooks.raw.v1 under the same delivery id; this table is the work list.
CREATE TABLE edge_exceptions (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          text        NOT NULL CHECK (kind IN ('unmapped', 'content_conflict')),
    delivery_id   uuid        NOT NULL,
    psp           text        NOT NULL,
    item          int         NOT NULL,
    event_type    text        NOT NULL,
    fact_key      uuid,
    detail        jsonb       NOT NULL,
    opened_at     timestamptz NOT NULL DEFAULT now(),
    resolved_at   timestamptz,
    UNIQUE (delivery_id, item, kind)
);
CREATE INDEX edge_exceptions_open ON edge_exceptions (opened_at) WHERE resolved_at IS NULL;
