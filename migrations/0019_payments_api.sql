-- The api_payments API (issue 17, DESIGN §7): merchants and their keys, api_payments under a state machine the database
-- enforces, the PSP operations of each payment (at most one unresolved at a time), idempotency keys, and the
-- transactional outbox. Every rule a request could break is a constraint or a trigger here, not only code.

-- A merchant of the API and how its api_payments are routed. `psps` lists the PSPs it may be sent to, in order of
-- preference; with `failover`, a new payment goes to the next one while the first's circuit breaker is open.
-- The PSP-side names are what the PSPs' webhooks name the merchant by, so that the facts the API learns carry the
-- same merchant id as the webhooks' (Stripe: the connected account, NULL for the platform's own; Adyen: the merchant
-- account).
CREATE TABLE api_merchants (
    merchant_id            text PRIMARY KEY CHECK (merchant_id ~ '^[A-Za-z0-9_.:-]{1,64}$'),
    psps                   text[] NOT NULL
        CHECK (cardinality(psps) BETWEEN 1 AND 2 AND psps <@ ARRAY['stripe', 'adyen']),
    failover               boolean NOT NULL,
    stripe_account         text CHECK (stripe_account ~ '^acct_[A-Za-z0-9]{1,64}$'),
    adyen_merchant_account text CHECK (adyen_merchant_account ~ '^[A-Za-z0-9_.-]{1,80}$'),
    -- Requests per second the merchant may make (a token bucket of one second's burst).
    rate_per_second        integer NOT NULL CHECK (rate_per_second > 0),
    created_at             timestamptz NOT NULL DEFAULT now(),
    CHECK (NOT 'adyen' = ANY (psps) OR adyen_merchant_account IS NOT NULL)
);

-- API keys: `tally_sk_<key_id>_<secret>`. Only the SHA-256 of the whole key is kept (the secret is 32 random bytes,
-- so a fast hash is enough: nothing to brute-force); the key is shown once, when created.
CREATE TABLE api_keys (
    key_id        text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{16}$'),
    merchant_id   text NOT NULL REFERENCES api_merchants,
    key_sha256    bytea NOT NULL CHECK (length(key_sha256) = 32),
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);

CREATE TYPE api_payment_status AS ENUM (
    'created', 'pending', 'authorized', 'captured', 'refunded', 'failed', 'canceled', 'requires_review'
);

-- The legal transitions, as data. `created`: the authorization is being sent; `pending`: the PSP gave no answer
-- (a timeout, a network error, a 5xx): it may have charged, and only resolving the attempt tells (never `failed`).
-- A change of amounts within one status (a second partial capture, a second partial refund) is no transition.
-- `requires_review`: the PSP asked for what Tally cannot do, or an operation stayed unanswered past the resolver's
-- give-up age (the PSP's idempotency window): a person decides, through the transitions out of it.
CREATE TABLE api_payment_transitions (
    from_status api_payment_status NOT NULL,
    to_status   api_payment_status NOT NULL,
    PRIMARY KEY (from_status, to_status),
    CHECK (from_status <> to_status)
);
INSERT INTO api_payment_transitions (from_status, to_status) VALUES
    ('created', 'pending'), ('created', 'authorized'), ('created', 'captured'), ('created', 'failed'),
    ('created', 'requires_review'), ('created', 'canceled'),
    ('pending', 'authorized'), ('pending', 'captured'), ('pending', 'failed'), ('pending', 'canceled'),
    ('pending', 'requires_review'),
    ('authorized', 'captured'), ('authorized', 'canceled'), ('authorized', 'requires_review'),
    ('captured', 'refunded'), ('captured', 'requires_review'),
    ('refunded', 'requires_review'),
    ('requires_review', 'authorized'), ('requires_review', 'captured'), ('requires_review', 'refunded'),
    ('requires_review', 'failed'), ('requires_review', 'canceled');

CREATE TABLE api_payments (
    payment_id          uuid PRIMARY KEY,
    merchant_id         text NOT NULL REFERENCES api_merchants,
    merchant_reference  text NOT NULL CHECK (length(merchant_reference) BETWEEN 1 AND 255),
    amount              bigint NOT NULL CHECK (amount > 0),
    currency            text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    capture_method      text NOT NULL CHECK (capture_method IN ('automatic', 'manual')),
    psp                 text NOT NULL CHECK (psp IN ('stripe', 'adyen')),
    status              api_payment_status NOT NULL,
    version             integer NOT NULL CHECK (version >= 1),
    -- What the PSP authorized, captured and refunded so far: captured ≤ authorized ≤ amount, refunded ≤ captured.
    authorized_amount   bigint NOT NULL,
    captured_amount     bigint NOT NULL,
    refunded_amount     bigint NOT NULL,
    CONSTRAINT authorized_within_amount CHECK (authorized_amount BETWEEN 0 AND amount),
    CONSTRAINT captured_within_authorized CHECK (captured_amount BETWEEN 0 AND authorized_amount),
    CONSTRAINT refunded_within_captured CHECK (refunded_amount BETWEEN 0 AND captured_amount),
    -- The PSP's id of the payment (Stripe: the PaymentIntent; Adyen: the pspReference) and of the charge the
    -- ledger names it by (Stripe: the PaymentIntent's latest charge; Adyen: the pspReference again).
    psp_payment_id      text,
    psp_charge_id       text,
    -- What the API keeps about the customer — the payment-method token and the customer's token — sealed with
    -- AES-256-GCM (nonce ‖ ciphertext ‖ tag, the payment id as associated data), and the id of the key that sealed
    -- it (rotation: a new key seals new rows, every listed key still opens).
    secrets             bytea NOT NULL,
    secrets_key         text NOT NULL,
    failure_code        text,
    failure_message     text,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL
);
CREATE INDEX api_payments_by_merchant ON api_payments (merchant_id, created_at DESC, payment_id DESC);
CREATE INDEX api_payments_by_reference ON api_payments (merchant_id, merchant_reference);

-- The guard: a payment is born `created` at version 1; every change advances the version by exactly one (the
-- writer's `WHERE version = $v` makes that optimistic concurrency), follows a listed transition, never leaves a
-- final status, never shrinks an amount and never rewrites what the payment is. Payments are never deleted.
CREATE FUNCTION api_payments_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'payment %: api_payments are never deleted', OLD.payment_id USING ERRCODE = 'TL003';
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'created' OR NEW.version <> 1 THEN
            RAISE EXCEPTION 'payment %: a payment is created with status created at version 1, not % at %',
                NEW.payment_id, NEW.status, NEW.version USING ERRCODE = 'TL001';
        END IF;
        IF NEW.authorized_amount <> 0 OR NEW.captured_amount <> 0 OR NEW.refunded_amount <> 0 THEN
            RAISE EXCEPTION 'payment %: a new payment has nothing authorized, captured or refunded', NEW.payment_id
                USING ERRCODE = 'TL001';
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.version <> OLD.version + 1 THEN
        RAISE EXCEPTION 'payment %: the version must advance by one (% → %)', OLD.payment_id, OLD.version,
            NEW.version USING ERRCODE = 'TL003';
    END IF;
    IF OLD.status IN ('failed', 'canceled') THEN
        RAISE EXCEPTION 'payment %: status % is final', OLD.payment_id, OLD.status USING ERRCODE = 'TL002';
    END IF;
    IF NEW.status <> OLD.status AND NOT EXISTS (
        SELECT 1 FROM api_payment_transitions WHERE from_status = OLD.status AND to_status = NEW.status
    ) THEN
        RAISE EXCEPTION 'payment %: illegal transition % → %', OLD.payment_id, OLD.status, NEW.status
            USING ERRCODE = 'TL001';
    END IF;
    IF (NEW.payment_id, NEW.merchant_id, NEW.merchant_reference, NEW.amount, NEW.currency, NEW.capture_method,
        NEW.psp, NEW.secrets, NEW.secrets_key, NEW.created_at)
       IS DISTINCT FROM
       (OLD.payment_id, OLD.merchant_id, OLD.merchant_reference, OLD.amount, OLD.currency, OLD.capture_method,
        OLD.psp, OLD.secrets, OLD.secrets_key, OLD.created_at) THEN
        RAISE EXCEPTION 'payment %: what a payment is never changes', OLD.payment_id USING ERRCODE = 'TL003';
    END IF;
    IF NEW.authorized_amount < OLD.authorized_amount OR NEW.captured_amount < OLD.captured_amount
       OR NEW.refunded_amount < OLD.refunded_amount THEN
        RAISE EXCEPTION 'payment %: amounts never shrink', OLD.payment_id USING ERRCODE = 'TL003';
    END IF;
    IF OLD.psp_payment_id IS NOT NULL AND NEW.psp_payment_id IS DISTINCT FROM OLD.psp_payment_id
       OR OLD.psp_charge_id IS NOT NULL AND NEW.psp_charge_id IS DISTINCT FROM OLD.psp_charge_id THEN
        RAISE EXCEPTION 'payment %: the PSP''s ids of a payment never change once known', OLD.payment_id
            USING ERRCODE = 'TL003';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER api_payments_guard BEFORE INSERT OR UPDATE OR DELETE ON api_payments
    FOR EACH ROW EXECUTE FUNCTION api_payments_guard();

-- Each call Tally makes to a PSP for a payment. The PSP's Idempotency-Key is derived from `operation_id`, so every
-- retry of one operation is the same request to the PSP. An operation is `started` while its request is out,
-- `unresolved` when the PSP gave no answer; at most one operation per payment is either (the index below): no
-- second attempt, capture or failover can start while the first may have charged — the database refuses it.
-- `received`: the PSP accepted it for processing and confirms it by webhook (Adyen's modifications).
CREATE TYPE api_payment_operation_kind AS ENUM ('authorize', 'capture', 'refund', 'cancel');
CREATE TYPE api_payment_operation_state AS ENUM ('started', 'unresolved', 'received', 'succeeded', 'failed');
CREATE TABLE api_payment_operations (
    operation_id     uuid PRIMARY KEY,
    payment_id       uuid NOT NULL REFERENCES api_payments,
    kind             api_payment_operation_kind NOT NULL,
    psp              text NOT NULL CHECK (psp IN ('stripe', 'adyen')),
    amount           bigint NOT NULL CHECK (amount > 0),
    state            api_payment_operation_state NOT NULL,
    -- The PSP's id of what the operation made (a refund id, a modification's pspReference).
    psp_reference    text,
    failure_code     text,
    failure_message  text,
    -- Requests sent to the PSP for it (retries and resolutions included).
    tries            integer NOT NULL CHECK (tries >= 0),
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE UNIQUE INDEX api_payment_operations_one_open ON api_payment_operations (payment_id)
    WHERE state IN ('started', 'unresolved');
CREATE INDEX api_payment_operations_to_resolve ON api_payment_operations (updated_at)
    WHERE state IN ('started', 'unresolved');

-- An operation's state moves forward only: started → unresolved | received | succeeded | failed; unresolved →
-- received | succeeded | failed; received → succeeded | failed. What it is never changes.
CREATE FUNCTION api_payment_operations_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'operation %: operations are never deleted', OLD.operation_id USING ERRCODE = 'TL003';
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NEW.state <> 'started' THEN
            RAISE EXCEPTION 'operation %: an operation starts as started', NEW.operation_id USING ERRCODE = 'TL001';
        END IF;
        RETURN NEW;
    END IF;
    IF (NEW.operation_id, NEW.payment_id, NEW.kind, NEW.psp, NEW.amount, NEW.created_at)
       IS DISTINCT FROM (OLD.operation_id, OLD.payment_id, OLD.kind, OLD.psp, OLD.amount, OLD.created_at) THEN
        RAISE EXCEPTION 'operation %: what an operation is never changes', OLD.operation_id USING ERRCODE = 'TL003';
    END IF;
    IF NEW.state <> OLD.state AND NOT (
        OLD.state = 'started' AND NEW.state IN ('unresolved', 'received', 'succeeded', 'failed')
        OR OLD.state = 'unresolved' AND NEW.state IN ('received', 'succeeded', 'failed')
        OR OLD.state = 'received' AND NEW.state IN ('succeeded', 'failed')
    ) OR OLD.state IN ('succeeded', 'failed') AND NEW IS DISTINCT FROM OLD THEN
        RAISE EXCEPTION 'operation %: illegal state change % → %', OLD.operation_id, OLD.state, NEW.state
            USING ERRCODE = 'TL001';
    END IF;
    IF NEW.tries < OLD.tries THEN
        RAISE EXCEPTION 'operation %: tries never decrease', OLD.operation_id USING ERRCODE = 'TL003';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER api_payment_operations_guard BEFORE INSERT OR UPDATE OR DELETE ON api_payment_operations
    FOR EACH ROW EXECUTE FUNCTION api_payment_operations_guard();

-- Σ refunds ≤ captured, counted over every refund that is out or done (a refund being sent counts against what is
-- left to refund), checked when a refund operation is started: two refunds racing for the last euro cannot both
-- start. (The row lock on the payment serialises them; the checks on `api_payments` bound what is booked.)
CREATE FUNCTION api_payment_refunds_within_captured() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    captured bigint;
    refunding bigint;
BEGIN
    SELECT captured_amount INTO captured FROM api_payments WHERE payment_id = NEW.payment_id FOR UPDATE;
    SELECT coalesce(sum(amount), 0) INTO refunding FROM api_payment_operations
     WHERE payment_id = NEW.payment_id AND kind = 'refund' AND state <> 'failed';
    IF refunding > captured THEN
        RAISE EXCEPTION 'payment %: refunds of % would exceed the % captured', NEW.payment_id, refunding, captured
            USING ERRCODE = 'TL004';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER api_payment_refunds_within_captured AFTER INSERT ON api_payment_operations
    FOR EACH ROW WHEN (NEW.kind = 'refund') EXECUTE FUNCTION api_payment_refunds_within_captured();

-- Idempotency keys, scoped per merchant (Stripe's model, with PostgreSQL as the arbiter). A key is `locked_until`
-- while its first request runs; a request that finds it locked gets 409, one that finds the lock expired (the first
-- crashed) takes it over and resumes from what the key names (its payment and operation), never redoes blindly.
-- A finished key keeps the response, replayed byte for byte.
CREATE TABLE api_idempotency_keys (
    merchant_id      text NOT NULL REFERENCES api_merchants,
    idempotency_key  text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    request_method   text NOT NULL,
    request_path     text NOT NULL,
    request_sha256   bytea NOT NULL CHECK (length(request_sha256) = 32),
    payment_id       uuid,
    operation_id     uuid,
    locked_until     timestamptz,
    -- The request holding the lock: only it may record what it made, store its response or release the key.
    lock_token       uuid,
    response_status  smallint,
    response_body    bytea,
    created_at       timestamptz NOT NULL,
    finished_at      timestamptz,
    PRIMARY KEY (merchant_id, idempotency_key),
    CHECK ((locked_until IS NULL) = (response_status IS NOT NULL)),
    CHECK ((locked_until IS NULL) = (lock_token IS NULL)),
    CHECK ((response_status IS NULL) = (response_body IS NULL)),
    CHECK ((finished_at IS NULL) = (response_status IS NULL))
);
CREATE INDEX api_idempotency_keys_expiry ON api_idempotency_keys (created_at);

-- The transactional outbox: every change of a payment writes its rows here in the same transaction — the state
-- change (`payments.api.v1`) and the facts the PSP's answer stated (the lifecycle topics, the same encoding and
-- fact keys as ingest's). A constraint trigger checks at commit that each version of a payment has its state row.
CREATE TABLE api_payment_outbox (
    outbox_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id       uuid NOT NULL,
    payment_version  integer NOT NULL,
    topic            text NOT NULL,
    record_key       bytea NOT NULL,
    record_value     bytea NOT NULL,
    fact_key         uuid,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX api_payment_outbox_state_row ON api_payment_outbox (payment_id, payment_version) WHERE fact_key IS NULL;
CREATE UNIQUE INDEX api_payment_outbox_fact ON api_payment_outbox (fact_key) WHERE fact_key IS NOT NULL;

CREATE FUNCTION api_payment_outbox_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the payment outbox is append-only (rows the relay confirmed may be pruned, never changed)' USING ERRCODE = 'TL003';
END $$;
CREATE TRIGGER api_payment_outbox_append_only BEFORE UPDATE ON api_payment_outbox
    FOR EACH ROW EXECUTE FUNCTION api_payment_outbox_append_only();

CREATE FUNCTION api_payments_have_outbox_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM api_payment_outbox WHERE payment_id = NEW.payment_id AND payment_version = NEW.version
           AND fact_key IS NULL
    ) THEN
        RAISE EXCEPTION 'payment % version %: a change without its outbox row', NEW.payment_id, NEW.version
            USING ERRCODE = 'TL005';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER api_payments_have_outbox_rows AFTER INSERT OR UPDATE ON api_payments
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION api_payments_have_outbox_rows();
