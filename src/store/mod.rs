//! The durable job store: every job (queued, running, finished), its prompt metadata, its
//! history entry and an index of the files it produced, in one SQLite database.
//!
//! Nothing about a job lives only in memory: the queue is the set of `pending` rows, ordered by
//! (priority, id) like ComfyUI's heap; history is the finished rows still marked `in_history`.
//! [`JobStore::open`] recovers from a crash: a job left `running` is recorded as failed with a
//! clear reason.
//!
//! The API is route-agnostic so every route family (ComfyUI's, the serverless ones) submits to
//! and reads from the same queue: see [`NewJob`] and [`JobRecord`].
//!
//! The interface is the [`Store`] trait ([`backend`]); this file holds the embedded SQLite
//! backend ([`SqliteStore`], the default) and [`postgres`] the shared one many processes use
//! (`comfyrs serve --store postgres://...`).

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::{json, Value as Json};
use std::path::Path;
use std::sync::{Arc, Mutex};

pub mod backend;
mod downloads;
pub mod postgres;
mod retention;
mod webhooks;
pub use backend::{
    DeploymentTable, DownloadQueue, Jobs, NodeInfo, Nodes, Reaped, Retention, Store, WebhookLog,
};
pub use downloads::{DownloadJob, StoredDownloadState};
pub use webhooks::{Delivery, DeliveryState};

/// ComfyUI keeps at most this many history entries.
pub const HISTORY_CAP: usize = 10_000;

/// The message a job gets when the process died while it ran.
pub const CRASH_REASON: &str =
    "the server stopped while this job was running (crash or kill); the job did not finish";

/// The message a job gets when a graceful shutdown interrupted it: the server, not a client,
/// stopped it, so it is `failed` (spec serverless-api.md §6), not cancelled.
pub const SHUTDOWN_REASON: &str =
    "the server shut down while this job was running; it was interrupted and did not finish (submit it again)";

/// The message a job gets when the node running it stopped renewing its lease (killed,
/// lost its network) and the job was not re-queued.
pub const LEASE_REASON: &str =
    "the worker running this job stopped responding (its lease expired: killed, crashed or cut off); the job did not finish";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("job store: bad JSON in column: {0}")]
    Json(#[from] serde_json::Error),
    #[error("job store (postgres): {0}")]
    Postgres(String),
    /// This node no longer holds the job's lease: another node failed or re-queued it.
    #[error(
        "job store: this node lost the lease of job {0} (it was ended or re-queued elsewhere)"
    )]
    LeaseLost(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Pending,
    Running,
    Success,
    /// Ended by an execution error (or by a crash of the process).
    Failed,
    /// Ended by an interrupt while running.
    Interrupted,
    /// Removed from the queue before it ran.
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Success => "success",
            JobStatus::Failed => "failed",
            JobStatus::Interrupted => "interrupted",
            JobStatus::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> JobStatus {
        match s {
            "pending" => JobStatus::Pending,
            "running" => JobStatus::Running,
            "success" => JobStatus::Success,
            "interrupted" => JobStatus::Interrupted,
            "cancelled" => JobStatus::Cancelled,
            _ => JobStatus::Failed,
        }
    }
    pub fn is_finished(self) -> bool {
        !matches!(self, JobStatus::Pending | JobStatus::Running)
    }
}

/// A job to enqueue. `number` is the priority (smaller runs first); `None` takes the next
/// value of the store's counter (negated when `front`).
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub number: Option<f64>,
    pub front: bool,
    /// The validated API-format prompt.
    pub prompt: Json,
    /// ComfyUI's `extra_data` (client_id, extra_pnginfo, ...), sensitive keys already removed.
    pub extra_data: Json,
    /// Output node ids to run.
    pub outputs_to_execute: Vec<String>,
    /// The submitting WebSocket client (ComfyUI's client_id), if any.
    pub client_id: Option<String>,
    /// Who owns the job (an API key's owner, a user); free-form.
    pub owner: Option<String>,
    /// Which route family submitted it ("comfyui", "deployments", ...).
    pub source: String,
    /// What a node needs to run it (matched by cluster stores; ignored by SQLite).
    pub needs: Needs,
}

/// What a node must have to run a job: the node classes it uses and the model files its
/// loaders read (`folder/name`, also the job's model-affinity key). A cluster node claims only
/// jobs whose needs it covers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Needs {
    pub node_classes: Vec<String>,
    pub models: Vec<String>,
}

/// One job as stored.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub id: String,
    /// The priority as the client sees it: an integer when the server assigned it.
    pub number: Json,
    pub status: JobStatus,
    pub prompt: Json,
    pub extra_data: Json,
    pub outputs_to_execute: Vec<String>,
    pub client_id: Option<String>,
    pub owner: Option<String>,
    pub source: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// History `outputs` ({node_id: ui}).
    pub outputs: Json,
    /// History `status` ({status_str, completed, messages}).
    pub exec_status: Json,
    /// A short error text for failed jobs.
    pub error: Option<String>,
    pub in_history: bool,
}

impl JobRecord {
    /// ComfyUI's queue tuple: `[number, prompt_id, prompt, extra_data, outputs_to_execute]`.
    pub fn queue_tuple(&self) -> Json {
        json!([
            self.number,
            self.id,
            self.prompt,
            self.extra_data,
            self.outputs_to_execute
        ])
    }

    /// ComfyUI's history entry.
    pub fn history_entry(&self) -> Json {
        let mut meta = serde_json::Map::new();
        if let Some(outs) = self.outputs.as_object() {
            for k in outs.keys() {
                meta.insert(
                    k.clone(),
                    json!({"node_id": k, "display_node": k, "parent_node": null, "real_node_id": k}),
                );
            }
        }
        json!({
            "prompt": self.queue_tuple(),
            "outputs": self.outputs,
            "status": self.exec_status,
            "meta": meta,
        })
    }
}

/// How a job ended, to record in history.
#[derive(Debug, Clone)]
pub struct Completion {
    pub status: JobStatus,
    pub outputs: Json,
    /// `[[event, data], ...]` for history's `status.messages`.
    pub messages: Vec<(String, Json)>,
    pub error: Option<String>,
}

/// A file a job produced (from its outputs' `images`-like lists).
#[derive(Debug, Clone, PartialEq)]
pub struct OutputFile {
    pub job_id: String,
    pub node_id: String,
    pub kind: String,
    pub filename: String,
    pub subfolder: String,
    pub folder_type: String,
}

/// The store every part of the program holds: a backend behind the [`Store`] interface.
pub type JobStore = dyn Store;

impl dyn Store {
    /// Opens (creating) the SQLite database at `path` (see [`SqliteStore::open`]).
    pub fn open(path: &Path) -> Result<SqliteStore> {
        SqliteStore::open(path)
    }

    /// A SQLite store in memory.
    pub fn in_memory() -> Result<SqliteStore> {
        SqliteStore::in_memory()
    }

    /// Opens the store a `--store` value names: a SQLite file path, or a `postgres://` URL.
    pub fn connect(spec: &str, options: postgres::PgOptions) -> Result<Arc<JobStore>> {
        if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
            Ok(Arc::new(postgres::PgStore::connect(spec, options)?))
        } else {
            Ok(Arc::new(SqliteStore::open(Path::new(spec))?))
        }
    }
}

/// The embedded backend: one SQLite database, one process.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS jobs (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    priority     REAL NOT NULL,
    number_json  TEXT NOT NULL,
    status       TEXT NOT NULL,
    prompt       TEXT NOT NULL,
    extra_data   TEXT NOT NULL,
    outputs_to_execute TEXT NOT NULL,
    client_id    TEXT,
    owner        TEXT,
    source       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER,
    outputs      TEXT NOT NULL DEFAULT '{}',
    exec_status  TEXT NOT NULL DEFAULT '{}',
    error        TEXT,
    in_history   INTEGER NOT NULL DEFAULT 0,
    history_seq  INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs(status, priority, id);
CREATE INDEX IF NOT EXISTS jobs_history ON jobs(in_history, history_seq);
CREATE TABLE IF NOT EXISTS outputs (
    job_id      TEXT NOT NULL,
    node_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    filename    TEXT NOT NULL,
    subfolder   TEXT NOT NULL,
    folder_type TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outputs_job ON outputs(job_id);
CREATE TABLE IF NOT EXISTS kv (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"#;

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl SqliteStore {
    /// Opens (creating) the database at `path` and recovers jobs a dead process left running.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Self::init(conn)
    }

    /// A store that lives in memory only (tests, `--data-dir` off).
    pub fn in_memory() -> Result<SqliteStore> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<SqliteStore> {
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(webhooks::SCHEMA)?;
        conn.execute_batch(downloads::SCHEMA)?;
        conn.execute_batch(retention::SCHEMA)?;
        let store = SqliteStore {
            conn: Mutex::new(conn),
        };
        store.recover()?;
        Ok(store)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks every `running` job as failed: the process that ran it is gone.
    fn recover(&self) -> Result<Vec<String>> {
        let ids: Vec<String> = {
            let c = self.conn();
            let mut st = c.prepare("SELECT id FROM jobs WHERE status = 'running'")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        for id in &ids {
            let ts = now_ms();
            let data = json!({
                "prompt_id": id,
                "node_id": null,
                "node_type": null,
                "executed": [],
                "exception_message": CRASH_REASON,
                "exception_type": "ServerRestart",
                "traceback": [],
                "current_inputs": {},
                "current_outputs": [],
                "timestamp": ts,
            });
            self.complete(
                id,
                &Completion {
                    status: JobStatus::Failed,
                    outputs: json!({}),
                    messages: vec![("execution_error".into(), data)],
                    error: Some(CRASH_REASON.into()),
                },
            )?;
            tracing::warn!(job = %id, "job was running when the server stopped: recorded as failed");
        }
        Ok(ids)
    }

    fn query(&self, sql: &str, p: impl rusqlite::Params) -> Result<Vec<JobRecord>> {
        let c = self.conn();
        let mut st = c.prepare(sql)?;
        let rows = st.query_map(p, row_to_job)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }
}

/// A single process keeps API-created deployments as files.
impl DeploymentTable for SqliteStore {}

impl Nodes for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }
    fn node_id(&self) -> &str {
        "local"
    }
}

impl Jobs for SqliteStore {
    fn enqueue(&self, job: &NewJob) -> Result<Json> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        let (priority, number_json) = match job.number {
            Some(n) => (n, json!(n)),
            None => {
                let counter: i64 = tx
                    .query_row("SELECT value FROM kv WHERE key = 'counter'", [], |r| {
                        r.get(0)
                    })
                    .optional()?
                    .unwrap_or(0);
                tx.execute(
                    "INSERT INTO kv(key, value) VALUES('counter', ?1)
                     ON CONFLICT(key) DO UPDATE SET value = ?1",
                    params![counter + 1],
                )?;
                let n = if job.front { -counter } else { counter };
                (n as f64, json!(n))
            }
        };
        tx.execute(
            "INSERT INTO jobs(id, priority, number_json, status, prompt, extra_data,
                 outputs_to_execute, client_id, owner, source, created_at)
             VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                job.id,
                priority,
                number_json.to_string(),
                job.prompt.to_string(),
                job.extra_data.to_string(),
                serde_json::to_string(&job.outputs_to_execute)?,
                job.client_id,
                job.owner,
                job.source,
                now_ms(),
            ],
        )?;
        tx.commit()?;
        Ok(number_json)
    }

    /// Whether a job with this id exists (any status).
    fn exists(&self, id: &str) -> Result<bool> {
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM jobs WHERE id = ?1", [id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Takes the next pending job (smallest priority, then id) and marks it running.
    fn claim_next(&self) -> Result<Option<JobRecord>> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        let id: Option<String> = tx
            .query_row(
                "SELECT id FROM jobs WHERE status = 'pending' ORDER BY priority, id LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let Some(id) = id else {
            return Ok(None);
        };
        tx.execute(
            "UPDATE jobs SET status = 'running', started_at = ?2 WHERE id = ?1",
            params![id, now_ms()],
        )?;
        let rec = tx.query_row(&format!("{SELECT} WHERE id = ?1"), [&id], row_to_job)?;
        tx.commit()?;
        Ok(Some(rec?))
    }

    /// Records how a job ended and puts it in history (capped at [`HISTORY_CAP`]).
    fn complete(&self, id: &str, done: &Completion) -> Result<()> {
        let (status_str, completed) = match done.status {
            JobStatus::Success => ("success", true),
            _ => ("error", false),
        };
        let messages: Vec<Json> = done.messages.iter().map(|(k, v)| json!([k, v])).collect();
        let exec_status =
            json!({"status_str": status_str, "completed": completed, "messages": messages});
        let files = output_files_in(id, &done.outputs);
        let mut c = self.conn();
        let tx = c.transaction()?;
        let hseq: i64 = tx.query_row(
            "SELECT COALESCE(MAX(history_seq), 0) + 1 FROM jobs",
            [],
            |r| r.get(0),
        )?;
        tx.execute(
            "UPDATE jobs SET status = ?2, finished_at = ?3, outputs = ?4, exec_status = ?5,
                 error = ?6, in_history = 1, history_seq = ?7 WHERE id = ?1",
            params![
                id,
                done.status.as_str(),
                now_ms(),
                done.outputs.to_string(),
                exec_status.to_string(),
                done.error,
                hseq
            ],
        )?;
        tx.execute("DELETE FROM outputs WHERE job_id = ?1", [id])?;
        for f in files {
            tx.execute(
                "INSERT INTO outputs(job_id, node_id, kind, filename, subfolder, folder_type)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    f.job_id,
                    f.node_id,
                    f.kind,
                    f.filename,
                    f.subfolder,
                    f.folder_type
                ],
            )?;
        }
        // Cap history: the oldest entries leave it (the job rows stay for the job APIs).
        tx.execute(
            "UPDATE jobs SET in_history = 0 WHERE in_history = 1 AND history_seq <= (
                 SELECT history_seq FROM jobs WHERE in_history = 1
                 ORDER BY history_seq DESC LIMIT 1 OFFSET ?1)",
            params![HISTORY_CAP as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// One job, any status.
    fn get(&self, id: &str) -> Result<Option<JobRecord>> {
        let c = self.conn();
        let r = c
            .query_row(&format!("{SELECT} WHERE id = ?1"), [id], row_to_job)
            .optional()?;
        r.transpose()
    }

    /// Jobs with a status in `statuses`, in queue order for pending ones.
    fn list(&self, statuses: &[JobStatus]) -> Result<Vec<JobRecord>> {
        let list = statuses
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(",");
        self.query(
            &format!("{SELECT} WHERE status IN ({list}) ORDER BY priority, id"),
            [],
        )
    }

    /// How many pending jobs run before `id` (0 = next); `None` when it is not pending.
    fn queue_position(&self, id: &str) -> Result<Option<usize>> {
        let n: Option<i64> = self
            .conn()
            .query_row(
                "SELECT (SELECT COUNT(*) FROM jobs o WHERE o.status = 'pending'
                     AND (o.priority < j.priority OR (o.priority = j.priority AND o.id < j.id)))
                 FROM jobs j WHERE j.id = ?1 AND j.status = 'pending'",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(n.map(|n| n as usize))
    }

    fn running_count(&self) -> Result<usize> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM jobs WHERE status = 'running'",
            [],
            |r| r.get(0),
        )?;
        Ok(n as usize)
    }

    fn pending_count(&self) -> Result<usize> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM jobs WHERE status = 'pending'",
            [],
            |r| r.get(0),
        )?;
        Ok(n as usize)
    }

    /// Removes a pending job from the queue (it is kept as `cancelled`, outside history).
    /// False when the job is not pending.
    fn cancel_pending(&self, id: &str) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE jobs SET status = 'cancelled', finished_at = ?2
             WHERE id = ?1 AND status = 'pending'",
            params![id, now_ms()],
        )?;
        Ok(n > 0)
    }

    /// Cancels every pending job; returns how many.
    fn clear_pending(&self) -> Result<usize> {
        Ok(self.conn().execute(
            "UPDATE jobs SET status = 'cancelled', finished_at = ?1 WHERE status = 'pending'",
            params![now_ms()],
        )?)
    }

    /// History, oldest first, with ComfyUI's max_items/offset rules.
    fn history(&self, max_items: Option<usize>, offset: Option<i64>) -> Result<Vec<JobRecord>> {
        let base = format!("{SELECT} WHERE in_history = 1");
        match (max_items, offset) {
            (_, Some(off)) if off >= 0 => {
                let limit = max_items.map(|m| m as i64).unwrap_or(-1);
                self.query(
                    &format!("{base} ORDER BY history_seq LIMIT ?1 OFFSET ?2"),
                    params![limit, off],
                )
            }
            (Some(m), _) => {
                let mut v = self.query(
                    &format!("{base} ORDER BY history_seq DESC LIMIT ?1"),
                    params![m as i64],
                )?;
                v.reverse();
                Ok(v)
            }
            _ => self.query(&format!("{base} ORDER BY history_seq"), []),
        }
    }

    /// Every job in history or in the queue (the jobs API's view).
    fn all_jobs(&self) -> Result<Vec<JobRecord>> {
        self.query(
            &format!(
                "{SELECT} WHERE in_history = 1 OR status IN ('pending','running') ORDER BY seq"
            ),
            [],
        )
    }

    /// Drops a job from history (the job row stays, for the job APIs).
    fn delete_history(&self, id: &str) -> Result<()> {
        self.conn()
            .execute("UPDATE jobs SET in_history = 0 WHERE id = ?1", [id])?;
        Ok(())
    }

    fn clear_history(&self) -> Result<()> {
        self.conn()
            .execute("UPDATE jobs SET in_history = 0 WHERE in_history = 1", [])?;
        Ok(())
    }

    /// The files a job produced.
    fn output_files(&self, id: &str) -> Result<Vec<OutputFile>> {
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT job_id, node_id, kind, filename, subfolder, folder_type FROM outputs
             WHERE job_id = ?1 ORDER BY rowid",
        )?;
        let rows = st.query_map([id], |r| {
            Ok(OutputFile {
                job_id: r.get(0)?,
                node_id: r.get(1)?,
                kind: r.get(2)?,
                filename: r.get(3)?,
                subfolder: r.get(4)?,
                folder_type: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

const SELECT: &str = "SELECT id, number_json, status, prompt, extra_data, outputs_to_execute,
    client_id, owner, source, created_at, started_at, finished_at, outputs, exec_status, error,
    in_history FROM jobs";

fn row_to_job(r: &Row<'_>) -> rusqlite::Result<Result<JobRecord>> {
    let parse = |s: String| serde_json::from_str::<Json>(&s);
    let number: String = r.get(1)?;
    let status: String = r.get(2)?;
    let prompt: String = r.get(3)?;
    let extra: String = r.get(4)?;
    let outs: String = r.get(5)?;
    let outputs: String = r.get(12)?;
    let exec_status: String = r.get(13)?;
    let build = || -> Result<JobRecord> {
        Ok(JobRecord {
            id: r.get(0)?,
            number: parse(number)?,
            status: JobStatus::parse(&status),
            prompt: parse(prompt)?,
            extra_data: parse(extra)?,
            outputs_to_execute: serde_json::from_str(&outs)?,
            client_id: r.get(6)?,
            owner: r.get(7)?,
            source: r.get(8)?,
            created_at: r.get(9)?,
            started_at: r.get(10)?,
            finished_at: r.get(11)?,
            outputs: parse(outputs)?,
            exec_status: parse(exec_status)?,
            error: r.get(14)?,
            in_history: r.get::<_, i64>(15)? != 0,
        })
    };
    Ok(build())
}

/// File entries (`{filename, subfolder, type}`) in a job's outputs.
pub(crate) fn output_files_in(job_id: &str, outputs: &Json) -> Vec<OutputFile> {
    let mut files = Vec::new();
    let Some(nodes) = outputs.as_object() else {
        return files;
    };
    for (node, ui) in nodes {
        let Some(ui) = ui.as_object() else { continue };
        for (kind, items) in ui {
            let Some(items) = items.as_array() else {
                continue;
            };
            for it in items {
                if let Some(name) = it.get("filename").and_then(|v| v.as_str()) {
                    files.push(OutputFile {
                        job_id: job_id.to_string(),
                        node_id: node.clone(),
                        kind: kind.clone(),
                        filename: name.to_string(),
                        subfolder: it["subfolder"].as_str().unwrap_or("").to_string(),
                        folder_type: it["type"].as_str().unwrap_or("output").to_string(),
                    });
                }
            }
        }
    }
    files
}

/// Test support: each store backend, fresh (PostgreSQL on the shared test server, a new
/// database per call).
#[cfg(test)]
pub(crate) fn test_backends() -> Vec<(&'static str, Arc<JobStore>)> {
    vec![
        ("sqlite", Arc::new(SqliteStore::in_memory().unwrap())),
        (
            "postgres",
            Arc::new(test_pg(postgres::PgOptions::default())),
        ),
    ]
}

#[cfg(test)]
pub(crate) fn test_pg(opts: postgres::PgOptions) -> postgres::PgStore {
    let server = postgres::testing::shared();
    let db = format!("t_{}", uuid::Uuid::new_v4().simple());
    postgres::PgStore::connect(&server.create_db(&db), opts).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, number: Option<f64>, front: bool) -> NewJob {
        NewJob {
            id: id.into(),
            number,
            front,
            prompt: json!({}),
            extra_data: json!({}),
            outputs_to_execute: vec!["1".into()],
            client_id: None,
            owner: None,
            source: "test".into(),
            needs: Needs::default(),
        }
    }

    #[test]
    fn queue_order_counter_and_front() {
        for (name, s) in test_backends() {
            eprintln!("backend {name}");
            queue_order_counter_and_front_on(&*s);
        }
    }

    fn queue_order_counter_and_front_on(s: &JobStore) {
        assert_eq!(s.enqueue(&job("a", None, false)).unwrap(), json!(0));
        assert_eq!(s.enqueue(&job("b", None, false)).unwrap(), json!(1));
        assert_eq!(s.enqueue(&job("c", None, true)).unwrap(), json!(-2));
        assert_eq!(s.enqueue(&job("d", Some(0.5), false)).unwrap(), json!(0.5));
        let order: Vec<_> = s.pending().unwrap().into_iter().map(|j| j.id).collect();
        assert_eq!(order, ["c", "a", "d", "b"]);
        assert_eq!(s.claim_next().unwrap().unwrap().id, "c");
        assert!(s.cancel_pending("d").unwrap());
        assert!(!s.cancel_pending("c").unwrap());
        assert_eq!(s.pending_count().unwrap(), 2);
    }

    #[test]
    fn history_and_outputs_index() {
        for (name, s) in test_backends() {
            eprintln!("backend {name}");
            history_and_outputs_index_on(&*s);
        }
    }

    fn history_and_outputs_index_on(s: &JobStore) {
        for id in ["a", "b", "c"] {
            s.enqueue(&job(id, None, false)).unwrap();
            let j = s.claim_next().unwrap().unwrap();
            s.complete(
                &j.id,
                &Completion {
                    status: JobStatus::Success,
                    outputs: json!({"9": {"images": [{"filename": format!("{id}.png"), "subfolder": "", "type": "output"}]}}),
                    messages: vec![],
                    error: None,
                },
            )
            .unwrap();
        }
        let ids = |v: Vec<JobRecord>| v.into_iter().map(|j| j.id).collect::<Vec<_>>();
        assert_eq!(ids(s.history(None, None).unwrap()), ["a", "b", "c"]);
        assert_eq!(ids(s.history(Some(2), None).unwrap()), ["b", "c"]);
        assert_eq!(ids(s.history(Some(1), Some(1)).unwrap()), ["b"]);
        s.delete_history("b").unwrap();
        assert_eq!(ids(s.history(None, None).unwrap()), ["a", "c"]);
        let f = s.output_files("c").unwrap();
        assert_eq!(f[0].filename, "c.png");
        let e = s.get("a").unwrap().unwrap().history_entry();
        assert_eq!(e["status"]["status_str"], "success");
        assert_eq!(e["meta"]["9"]["node_id"], "9");
    }

    #[test]
    fn running_job_is_failed_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let s = JobStore::open(&path).unwrap();
            s.enqueue(&job("a", None, false)).unwrap();
            s.enqueue(&job("b", None, false)).unwrap();
            s.claim_next().unwrap();
        }
        let s = JobStore::open(&path).unwrap();
        let a = s.get("a").unwrap().unwrap();
        assert_eq!(a.status, JobStatus::Failed);
        assert_eq!(a.error.as_deref(), Some(CRASH_REASON));
        assert_eq!(a.exec_status["status_str"], "error");
        assert_eq!(s.pending().unwrap()[0].id, "b");
    }
}
