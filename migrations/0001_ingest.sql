-- Edge dedup fallback (DESIGN §6) and the PAN quarantine (I7).

-- Claims on fact keys at the webhook edge, used when Redis is unreachable. A claim is 'processing' for a short
-- lease while its record is produced, then 'done' for the PSP's retry window. An expired row is free to claim.
CREATE TABLE edge_claims (
    fact_key   uuid        PRIMARY KEY,
    state      text        NOT NULL CHECK (state IN ('processing', 'done')),
    token      uuid        NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX edge_claims_expires_at ON edge_claims (expires_at);

-- Deliveries refused because they carried a card number. The body is stored redacted (all digits of each match but
-- the last four masked); the number itself is never stored.
CREATE TABLE quarantine (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id   uuid        NOT NULL UNIQUE,
    psp           text        NOT NULL,
    received_at   timestamptz NOT NULL,
    reason        text        NOT NULL,
    detail        text        NOT NULL,
    headers       jsonb       NOT NULL,
    redacted_body bytea       NOT NULL,
    body_sha256   text        NOT NULL
);
