-- Sample domain for cdcrouter: cars, loans on cars, loan payments and service records, plus an
-- outbox table for events the application writes itself. Applied by
-- cdcrouter.capture.apply_domain() inside a schema of your choice (search_path is set first),
-- so every statement here is unqualified and idempotent.

CREATE TABLE IF NOT EXISTS car_entities (
    id          text PRIMARY KEY,
    vin         text NOT NULL,
    make        text NOT NULL,
    model       text NOT NULL,
    model_year  integer,
    price       numeric(12, 2),
    color       text,
    active      boolean NOT NULL DEFAULT true,
    notes       text,                      -- free text; long values are TOASTed
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS loan_entities (
    id             text PRIMARY KEY,
    car_id         text REFERENCES car_entities (id),
    customer_name  text NOT NULL,
    status         text NOT NULL DEFAULT 'PENDING',
    loan           jsonb NOT NULL DEFAULT '{}',   -- flattened to loan.loanAmount, loan.terms.months, ...
    interest_rate  numeric(6, 4),
    approved       boolean NOT NULL DEFAULT false,
    documents      text,                          -- large scanned-document text; TOASTed
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS loan_payments (
    id           text PRIMARY KEY,
    loan_id      text NOT NULL REFERENCES loan_entities (id),
    amount       numeric(12, 2) NOT NULL,
    currency     text NOT NULL DEFAULT 'USD',
    method       text,
    status       text NOT NULL DEFAULT 'SUBMITTED',
    paid_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS service_records (
    id            text PRIMARY KEY,
    car_id        text NOT NULL REFERENCES car_entities (id),
    service_type  text NOT NULL,
    cost          numeric(10, 2),
    mileage       integer,
    serviced_on   date,
    details       jsonb,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Outbox: the application inserts one row per business event it wants published as is.
-- entities is a JSON array of {"entityType", "entityId", "updatedAttributes": {...}}.
CREATE TABLE IF NOT EXISTS business_events (
    id          bigserial PRIMARY KEY,
    event_name  text NOT NULL,
    event_type  text,
    entities    jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
