//! The PostgreSQL schema as versioned migrations, applied in order on start under an
//! advisory lock (so nodes starting together do not race), each in its own transaction and
//! recorded in `schema_migrations`. A new version is appended here; applied ones never change.

/// (version, SQL). Versions are consecutive from 1.
pub const MIGRATIONS: &[(i32, &str)] = &[(1, V1), (2, V2)];

/// The lock key of `pg_advisory_xact_lock` while migrating ("comfyrs" in ASCII).
pub const LOCK_KEY: i64 = 0x0063_6f6d_6679_7273;

const V1: &str = r#"
CREATE TABLE jobs (
    seq          BIGSERIAL PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    priority     DOUBLE PRECISION NOT NULL,
    number_json  TEXT NOT NULL,
    status       TEXT NOT NULL,
    prompt       TEXT NOT NULL,
    extra_data   TEXT NOT NULL,
    outputs_to_execute TEXT NOT NULL,
    client_id    TEXT,
    owner        TEXT,
    source       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    started_at   BIGINT,
    finished_at  BIGINT,
    outputs      TEXT NOT NULL DEFAULT '{}',
    exec_status  TEXT NOT NULL DEFAULT '{}',
    error        TEXT,
    in_history   BOOLEAN NOT NULL DEFAULT false,
    history_seq  BIGINT,
    -- What a node must have to run the job (claims match them against the node's row).
    needs_nodes  JSONB NOT NULL DEFAULT '[]',
    needs_models JSONB NOT NULL DEFAULT '[]',
    -- The node holding the job while it runs, and until when.
    node_id      TEXT,
    lease_until  BIGINT,
    attempts     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_queue ON jobs(status, priority, id);
CREATE INDEX jobs_history ON jobs(in_history, history_seq);
CREATE INDEX jobs_lease ON jobs(status, lease_until);
CREATE SEQUENCE job_counter MINVALUE 0 START 0;
CREATE SEQUENCE history_counter;
CREATE TABLE outputs (
    seq         BIGSERIAL PRIMARY KEY,
    job_id      TEXT NOT NULL,
    node_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    filename    TEXT NOT NULL,
    subfolder   TEXT NOT NULL,
    folder_type TEXT NOT NULL
);
CREATE INDEX outputs_job ON outputs(job_id);
CREATE TABLE webhook_deliveries (
    seq             BIGSERIAL,
    id              TEXT PRIMARY KEY,
    request_id      TEXT NOT NULL,
    url             TEXT NOT NULL,
    body            TEXT NOT NULL,
    final           BOOLEAN NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    delivered_at    BIGINT,
    last_error      TEXT
);
CREATE INDEX webhook_due ON webhook_deliveries(state, next_attempt_at);
CREATE INDEX webhook_request ON webhook_deliveries(request_id);
CREATE TABLE downloads (
    file       TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    dest       TEXT NOT NULL,
    sha256     TEXT,
    state      TEXT NOT NULL,
    error      TEXT,
    seq        BIGINT NOT NULL,
    node_id    TEXT,
    updated_at BIGINT NOT NULL
);
CREATE TABLE expired_jobs (
    id         TEXT PRIMARY KEY,
    expired_at BIGINT NOT NULL
);
CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    info         TEXT NOT NULL,
    node_classes JSONB NOT NULL DEFAULT '[]',
    models       JSONB NOT NULL DEFAULT '[]',
    warm         JSONB NOT NULL DEFAULT '[]',
    running      TEXT,
    heartbeat_at BIGINT NOT NULL
);
-- Cluster events too large for a NOTIFY payload; the notification carries the row id.
CREATE TABLE events (
    id         BIGSERIAL PRIMARY KEY,
    created_at BIGINT NOT NULL,
    payload    TEXT NOT NULL
);
"#;

/// Deployments created through the API, shared by every API node.
const V2: &str = r#"
CREATE TABLE deployments (
    seq        BIGSERIAL,
    id         TEXT PRIMARY KEY,
    body       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
"#;
