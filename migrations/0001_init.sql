-- postdesk's PostgreSQL store (store.backend: postgres). docs/scaling.md
-- explains the layout; src/store/pg/ is the only code that reads it.
--
-- Records are the same JSON the sled backend keeps (serde of the types in
-- src/store/model.rs), in `json` columns: `json` keeps the text as written,
-- so a malformed mail's odd characters (even an escaped NUL, which `jsonb`
-- refuses) are stored as they came. The columns beside the JSON are the
-- ones queries select or order by. Times are milliseconds since the epoch.

-- Settings every node must agree on: the link-signing secret, flags.
CREATE TABLE meta (
    key   text PRIMARY KEY,
    value bytea NOT NULL
);

-- Ticket numbers come from here: nextval() never hands one number to two
-- nodes. A rolled-back delivery leaves a gap, as any sequence does.
CREATE SEQUENCE ticket_number_seq START 1;

CREATE TABLE tickets (
    number     bigint PRIMARY KEY,
    status     text   NOT NULL,
    -- trimmed and lower-cased, NULL when unassigned (agent load queries)
    assignee   text,
    contact    text   NOT NULL,
    customer   text,
    started_ms bigint NOT NULL,
    body       json   NOT NULL
);
CREATE INDEX tickets_status   ON tickets (status);
CREATE INDEX tickets_assignee ON tickets (assignee, status) WHERE assignee IS NOT NULL;
CREATE INDEX tickets_contact  ON tickets (contact, number);
CREATE INDEX tickets_customer ON tickets (customer, number) WHERE customer IS NOT NULL;

-- Raw messages as received, byte for byte, written in the delivery's own
-- transaction (the sled backend's spool). SpoolRef.offset is the id.
CREATE TABLE raw_messages (
    id   bigserial PRIMARY KEY,
    data bytea NOT NULL
);

CREATE TABLE messages (
    ticket     bigint  NOT NULL,
    seq        integer NOT NULL,
    message_id text    NOT NULL,
    body       json    NOT NULL,
    PRIMARY KEY (ticket, seq)
);

-- Auto-replies and bounces that matched no ticket.
CREATE TABLE apart (
    id   bigint PRIMARY KEY,
    body json   NOT NULL
);
CREATE SEQUENCE apart_id_seq START 1;

-- Every Message-ID a ticket holds or referenced, and the stored variants
-- of a delivered one (duplicate detection). The primary key is the unique
-- Message-ID: a redelivery to another node finds it.
CREATE TABLE thread_keys (
    message_id text PRIMARY KEY,
    ticket     bigint,
    stored_ids json
);
CREATE INDEX thread_keys_ticket ON thread_keys (ticket);

-- Outlook Thread-Index conversation keys.
CREATE TABLE conversations (
    key    text PRIMARY KEY,
    ticket bigint NOT NULL
);

CREATE TABLE acks (
    address text PRIMARY KEY,
    times   json NOT NULL
);

CREATE TABLE learned (
    address  text PRIMARY KEY,
    customer text NOT NULL
);

-- Mail to send. A node claims due rows (FOR UPDATE SKIP LOCKED) by writing
-- its id into lease_owner; a row whose owner has stopped beating in
-- `nodes` is claimed again by another node.
CREATE TABLE outbox (
    id          bigint PRIMARY KEY,
    state       text   NOT NULL,
    due_ms      bigint NOT NULL,
    ticket      bigint,
    lease_owner text,
    body        json   NOT NULL
);
CREATE SEQUENCE outbox_id_seq START 1;
CREATE INDEX outbox_queue  ON outbox (due_ms, id) WHERE state = 'pending';
CREATE INDEX outbox_state  ON outbox (state, id);
CREATE INDEX outbox_ticket ON outbox (ticket) WHERE ticket IS NOT NULL;

-- Reminders, SLA warnings, reports, auto-close: claimed like the outbox;
-- firing deletes the row in the same transaction as its effects.
CREATE TABLE jobs (
    id          bigint PRIMARY KEY,
    due_ms      bigint NOT NULL,
    lease_owner text,
    body        json   NOT NULL
);
CREATE SEQUENCE job_id_seq START 1;
CREATE INDEX jobs_due ON jobs (due_ms, id);

CREATE TABLE agent_away (
    agent text PRIMARY KEY,
    body  json NOT NULL
);

CREATE TABLE dist_state (
    category text PRIMARY KEY,
    body     json NOT NULL
);

-- One row per running node, beaten every few seconds; a lease whose owner
-- is not alive here is free.
CREATE TABLE nodes (
    id          text   PRIMARY KEY,
    host        text   NOT NULL,
    pid         integer NOT NULL,
    started_ms  bigint NOT NULL,
    alive_until_ms bigint NOT NULL
);
