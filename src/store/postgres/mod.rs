//! The shared backend: every table of the store in one PostgreSQL database, so many comfyrs
//! processes (API nodes and workers) share one queue (`comfyrs serve --store postgres://...`).
//!
//! - Claims take the next runnable pending job with `FOR UPDATE SKIP LOCKED`: two workers
//!   never take the same job and never wait on each other. A worker claims only jobs whose
//!   [`Needs`] its advertised capabilities cover (node classes, model files), and a job whose
//!   models another idle worker holds in memory waits briefly for that worker (model affinity).
//! - A claim is a lease (`lease_until`) the worker renews while it runs the job. Any node
//!   reaps expired leases ([`Jobs::reap_expired`]): the job is failed with [`LEASE_REASON`], or
//!   re-queued once when its route family is configured to be ([`PgOptions::requeue_sources`]).
//!   Only the lease holder can complete a job, so a job ends exactly once.
//! - Migrations are versioned ([`schema`]) and applied on connect.
//!
//! The driver is tokio-postgres with a deadpool pool on the store's own small runtime; the
//! [`Store`](super::Store) interface stays synchronous (callers already run it off the async
//! workers), each call waiting on a channel for its query.

pub mod schema;
#[doc(hidden)]
pub mod testing;
pub mod tls;

use super::{
    now_ms, output_files_in, Completion, Delivery, DeliveryState, DeploymentTable, DownloadJob,
    DownloadQueue, JobRecord, JobStatus, Jobs, NewJob, NodeInfo, Nodes, OutputFile, Reaped, Result,
    Retention, StoreError, StoredDownloadState, WebhookLog, HISTORY_CAP, LEASE_REASON,
};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use serde_json::{json, Value as Json};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tokio_postgres::Row;

/// How the store runs a cluster's leases and claims.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// This process's node id (default: host name, pid and a random suffix).
    pub node_id: Option<String>,
    /// How long a claim holds without renewal.
    pub lease: Duration,
    /// Route families (`source`) whose jobs are re-queued once when their worker is lost,
    /// instead of failed.
    pub requeue_sources: Vec<String>,
    /// How long a job waits for an idle worker that holds its models before any capable
    /// worker may take it.
    pub affinity_wait: Duration,
    /// A node is live when its last heartbeat is this recent.
    pub node_ttl: Duration,
    /// Connections in the pool.
    pub pool_size: usize,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            node_id: None,
            lease: Duration::from_secs(30),
            requeue_sources: vec![],
            affinity_wait: Duration::from_millis(1500),
            node_ttl: Duration::from_secs(15),
            pool_size: 8,
        }
    }
}

/// What this node matches jobs against, set by [`Nodes::heartbeat`].
#[derive(Default)]
struct Caps {
    /// `None` until the first heartbeat: claims then take any job.
    classes: Option<Json>,
    models: Json,
    warm: Json,
}

pub struct PgStore {
    rt: Option<tokio::runtime::Runtime>,
    pool: Pool,
    node: String,
    opts: PgOptions,
    caps: Mutex<Caps>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Never blocks, so dropping the store inside an async task is fine.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A driver error with its causes (tokio-postgres says only "db error" at the top).
fn pg<E: std::error::Error>(e: E) -> StoreError {
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    StoreError::Postgres(text)
}

fn pgm(msg: impl Into<String>) -> StoreError {
    StoreError::Postgres(msg.into())
}

/// `host-pid-xxxx`: unique per process, readable in the cluster view.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "node".into());
    let rand = &uuid::Uuid::new_v4().simple().to_string()[..6];
    format!("{host}-{}-{rand}", std::process::id())
}

const JOB_COLS: &str = "id, number_json, status, prompt, extra_data, outputs_to_execute,
    client_id, owner, source, created_at, started_at, finished_at, outputs, exec_status, error,
    in_history";

fn row_to_job(r: &Row) -> Result<JobRecord> {
    let parse = |i: usize| -> Result<Json> { Ok(serde_json::from_str(r.get::<_, &str>(i))?) };
    Ok(JobRecord {
        id: r.get(0),
        number: parse(1)?,
        status: JobStatus::parse(r.get(2)),
        prompt: parse(3)?,
        extra_data: parse(4)?,
        outputs_to_execute: serde_json::from_str(r.get::<_, &str>(5))?,
        client_id: r.get(6),
        owner: r.get(7),
        source: r.get(8),
        created_at: r.get(9),
        started_at: r.get(10),
        finished_at: r.get(11),
        outputs: parse(12)?,
        exec_status: parse(13)?,
        error: r.get(14),
        in_history: r.get(15),
    })
}

fn jobs_of(rows: Vec<Row>) -> Result<Vec<JobRecord>> {
    rows.iter().map(row_to_job).collect()
}

const DELIVERY_COLS: &str = "id, request_id, url, body, final, state, attempts, created_at,
    next_attempt_at, delivered_at, last_error";

fn row_to_delivery(r: &Row) -> Delivery {
    Delivery {
        id: r.get(0),
        request_id: r.get(1),
        url: r.get(2),
        body: r.get(3),
        is_final: r.get(4),
        state: DeliveryState::parse(r.get(5)),
        attempts: r.get::<_, i32>(6) as u32,
        created_at: r.get(7),
        next_attempt_at: r.get(8),
        delivered_at: r.get(9),
        last_error: r.get(10),
    }
}

/// The history `status` object and error messages of a completion.
fn exec_status_of(done: &Completion) -> Json {
    let (status_str, completed) = match done.status {
        JobStatus::Success => ("success", true),
        _ => ("error", false),
    };
    let messages: Vec<Json> = done.messages.iter().map(|(k, v)| json!([k, v])).collect();
    json!({"status_str": status_str, "completed": completed, "messages": messages})
}

/// The completion of a job whose node was lost.
pub fn lost_completion(id: &str, node: &str) -> Completion {
    let data = json!({
        "prompt_id": id,
        "node_id": null,
        "node_type": null,
        "executed": [],
        "exception_message": format!("{LEASE_REASON} (worker {node})"),
        "exception_type": "WorkerLost",
        "traceback": [],
        "current_inputs": {},
        "current_outputs": [],
        "timestamp": now_ms(),
    });
    Completion {
        status: JobStatus::Failed,
        outputs: json!({}),
        messages: vec![("execution_error".into(), data)],
        error: Some(format!("{LEASE_REASON} (worker {node})")),
    }
}

/// Writes a job's end (history entry, output index, history cap) in `tx`.
async fn write_completion(
    tx: &tokio_postgres::Transaction<'_>,
    id: &str,
    done: &Completion,
) -> Result<()> {
    let exec_status = exec_status_of(done);
    tx.execute(
        "UPDATE jobs SET status = $2, finished_at = $3, outputs = $4, exec_status = $5,
             error = $6, in_history = true, history_seq = nextval('history_counter'),
             lease_until = NULL
         WHERE id = $1",
        &[
            &id,
            &done.status.as_str(),
            &now_ms(),
            &done.outputs.to_string(),
            &exec_status.to_string(),
            &done.error,
        ],
    )
    .await
    .map_err(pg)?;
    tx.execute("DELETE FROM outputs WHERE job_id = $1", &[&id])
        .await
        .map_err(pg)?;
    for f in output_files_in(id, &done.outputs) {
        tx.execute(
            "INSERT INTO outputs(job_id, node_id, kind, filename, subfolder, folder_type)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &f.job_id,
                &f.node_id,
                &f.kind,
                &f.filename,
                &f.subfolder,
                &f.folder_type,
            ],
        )
        .await
        .map_err(pg)?;
    }
    tx.execute(
        "UPDATE jobs SET in_history = false WHERE in_history AND history_seq <= (
             SELECT history_seq FROM jobs WHERE in_history
             ORDER BY history_seq DESC LIMIT 1 OFFSET $1)",
        &[&(HISTORY_CAP as i64)],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

impl PgStore {
    /// Connects, applies pending migrations and returns the store.
    pub fn connect(url: &str, opts: PgOptions) -> Result<PgStore> {
        // The URL is not repeated in errors: it may hold a password.
        let (config, tls) =
            tls::connect_params(url).map_err(|e| pgm(format!("bad --store URL: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("comfyrs-pg")
            .enable_all()
            .build()
            .map_err(pg)?;
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = {
            let _enter = rt.enter();
            Pool::builder(manager)
                .max_size(opts.pool_size.max(2))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(Duration::from_secs(30)))
                .create_timeout(Some(Duration::from_secs(10)))
                .build()
                .map_err(pg)?
        };
        let store = PgStore {
            rt: Some(rt),
            pool,
            node: opts.node_id.clone().unwrap_or_else(default_node_id),
            opts,
            caps: Mutex::new(Caps::default()),
        };
        store.migrate()?;
        Ok(store)
    }

    /// The options the store runs with.
    pub fn options(&self) -> &PgOptions {
        &self.opts
    }

    /// Runs `f` with a pooled connection on the store's runtime and waits for its result.
    /// Callable from any thread, inside an async task or not.
    fn with<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send,
    {
        let pool = self.pool.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let rt = self
            .rt
            .as_ref()
            .expect("runtime lives as long as the store");
        rt.spawn(async move {
            let r = match pool.get().await {
                Ok(c) => f(c).await,
                Err(e) => Err(match pg(e) {
                    StoreError::Postgres(t) => pgm(format!("no database connection: {t}")),
                    other => other,
                }),
            };
            let _ = tx.send(r);
        });
        rx.recv().map_err(|_| pgm("the store's runtime stopped"))?
    }

    /// Applies the migrations not yet recorded, in order.
    fn migrate(&self) -> Result<()> {
        self.with(|mut c| async move {
            let tx = c.transaction().await.map_err(pg)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&schema::LOCK_KEY])
                .await
                .map_err(pg)?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)",
            )
            .await
            .map_err(pg)?;
            let have: i32 = tx
                .query_one(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                    &[],
                )
                .await
                .map_err(pg)?
                .get(0);
            for (version, sql) in schema::MIGRATIONS {
                if *version <= have {
                    continue;
                }
                tx.batch_execute(sql)
                    .await
                    .map_err(|e| pgm(format!("migration {version}: {}", pg(e))))?;
                tx.execute(
                    "INSERT INTO schema_migrations(version, applied_at) VALUES ($1, $2)",
                    &[version, &now_ms()],
                )
                .await
                .map_err(pg)?;
                tracing::info!("job store: applied migration {version}");
            }
            tx.commit().await.map_err(pg)?;
            Ok(())
        })
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<i32> {
        self.with(|c| async move {
            Ok(
                c.query_one("SELECT MAX(version) FROM schema_migrations", &[])
                    .await
                    .map_err(pg)?
                    .get::<_, Option<i32>>(0)
                    .unwrap_or(0),
            )
        })
    }

    /// One attempt of [`Jobs::complete`]; `retry`: an earlier attempt may have committed
    /// before its answer was lost, so a job this node already ended counts as done.
    fn complete_once(&self, id: &str, done: &Completion, retry: bool) -> Result<()> {
        let (id, node, done) = (id.to_string(), self.node.clone(), done.clone());
        self.with(move |mut c| async move {
            let tx = c.transaction().await.map_err(pg)?;
            // Only the lease holder ends a running job; a pending job (never claimed) can be
            // ended by anyone.
            let held = tx
                .query_opt(
                    "SELECT 1 FROM jobs WHERE id = $1
                       AND ((status = 'running' AND node_id = $2) OR status = 'pending')
                     FOR UPDATE",
                    &[&id, &node],
                )
                .await
                .map_err(pg)?
                .is_some();
            if !held {
                let ended_here = retry
                    && tx
                        .query_opt(
                            "SELECT 1 FROM jobs WHERE id = $1 AND node_id = $2 AND in_history
                               AND status = $3",
                            &[&id, &node, &done.status.as_str()],
                        )
                        .await
                        .map_err(pg)?
                        .is_some();
                return if ended_here {
                    Ok(())
                } else {
                    Err(StoreError::LeaseLost(id))
                };
            }
            write_completion(&tx, &id, &done).await?;
            tx.execute(
                "UPDATE nodes SET running = NULL WHERE id = $1 AND running = $2",
                &[&node, &id],
            )
            .await
            .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            Ok(())
        })
    }

    fn query_jobs(&self, sql: String, args: Vec<Box<dyn ToSqlSend>>) -> Result<Vec<JobRecord>> {
        self.with(move |c| async move {
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                args.iter().map(|a| a.as_to_sql()).collect();
            jobs_of(c.query(&sql, &refs).await.map_err(pg)?)
        })
    }
}

/// A query argument that can move to the store's runtime.
trait ToSqlSend: Send + Sync {
    fn as_to_sql(&self) -> &(dyn tokio_postgres::types::ToSql + Sync);
}
impl<T: tokio_postgres::types::ToSql + Send + Sync> ToSqlSend for T {
    fn as_to_sql(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        self
    }
}

impl Jobs for PgStore {
    fn enqueue(&self, job: &NewJob) -> Result<Json> {
        let job = job.clone();
        self.with(move |mut c| async move {
            let tx = c.transaction().await.map_err(pg)?;
            let (priority, number_json) = match job.number {
                Some(n) => (n, json!(n)),
                None => {
                    let counter: i64 = tx
                        .query_one("SELECT nextval('job_counter')", &[])
                        .await
                        .map_err(pg)?
                        .get(0);
                    let n = if job.front { -counter } else { counter };
                    (n as f64, json!(n))
                }
            };
            tx.execute(
                "INSERT INTO jobs(id, priority, number_json, status, prompt, extra_data,
                     outputs_to_execute, client_id, owner, source, created_at, needs_nodes,
                     needs_models)
                 VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                &[
                    &job.id,
                    &priority,
                    &number_json.to_string(),
                    &job.prompt.to_string(),
                    &job.extra_data.to_string(),
                    &serde_json::to_string(&job.outputs_to_execute)?,
                    &job.client_id,
                    &job.owner,
                    &job.source,
                    &now_ms(),
                    &json!(job.needs.node_classes),
                    &json!(job.needs.models),
                ],
            )
            .await
            .map_err(pg)?;
            // Idle workers wake on it (delivered at commit).
            tx.execute("SELECT pg_notify('comfyrs_jobs', $1)", &[&job.id])
                .await
                .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            Ok(number_json)
        })
    }

    fn exists(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.with(move |c| async move {
            Ok(c.query_opt("SELECT 1 FROM jobs WHERE id = $1", &[&id])
                .await
                .map_err(pg)?
                .is_some())
        })
    }

    fn claim_next(&self) -> Result<Option<JobRecord>> {
        let (classes, models, warm) = {
            let caps = self.caps.lock().unwrap_or_else(|e| e.into_inner());
            (caps.classes.clone(), caps.models.clone(), caps.warm.clone())
        };
        let node = self.node.clone();
        let lease = self.opts.lease.as_millis() as i64;
        let wait = self.opts.affinity_wait.as_millis() as i64;
        let ttl = self.opts.node_ttl.as_millis() as i64;
        self.with(move |mut c| async move {
            let now = now_ms();
            let tx = c.transaction().await.map_err(pg)?;
            // Runnable here: needs covered by this node's capabilities (any job before the
            // first heartbeat). Affinity: a job whose models another idle live node holds
            // warm waits `wait` ms for it, unless this node holds them too.
            let row = tx
                .query_opt(
                    &format!(
                        "UPDATE jobs SET status = 'running', started_at = $1, node_id = $2,
                             lease_until = $1::bigint + $3::bigint, attempts = attempts + 1
                         WHERE seq = (
                             SELECT j.seq FROM jobs j
                             WHERE j.status = 'pending'
                               AND ($4::jsonb IS NULL OR (j.needs_nodes <@ $4::jsonb
                                    AND j.needs_models <@ $5::jsonb))
                               AND (j.needs_models = '[]'::jsonb
                                    OR j.needs_models <@ $6::jsonb
                                    OR j.created_at < $1::bigint - $7::bigint
                                    OR NOT EXISTS (
                                        SELECT 1 FROM nodes n
                                        WHERE n.id <> $2 AND n.running IS NULL
                                          AND n.heartbeat_at > $1::bigint - $8::bigint
                                          AND j.needs_models <@ n.warm))
                             ORDER BY j.priority, j.id
                             LIMIT 1
                             FOR UPDATE SKIP LOCKED)
                         RETURNING {JOB_COLS}"
                    ),
                    &[&now, &node, &lease, &classes, &models, &warm, &wait, &ttl],
                )
                .await
                .map_err(pg)?;
            let Some(row) = row else {
                tx.commit().await.map_err(pg)?;
                return Ok(None);
            };
            let job = row_to_job(&row)?;
            tx.execute(
                "UPDATE nodes SET running = $2 WHERE id = $1",
                &[&node, &job.id],
            )
            .await
            .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            Ok(Some(job))
        })
    }

    fn renew_lease(&self, id: &str) -> Result<bool> {
        let (id, node) = (id.to_string(), self.node.clone());
        let lease = self.opts.lease.as_millis() as i64;
        self.with(move |c| async move {
            let n = c
                .execute(
                    "UPDATE jobs SET lease_until = $3::bigint + $4::bigint
                     WHERE id = $1 AND status = 'running' AND node_id = $2",
                    &[&id, &node, &now_ms(), &lease],
                )
                .await
                .map_err(pg)?;
            c.execute(
                "UPDATE nodes SET heartbeat_at = $2 WHERE id = $1",
                &[&node, &now_ms()],
            )
            .await
            .map_err(pg)?;
            Ok(n == 1)
        })
    }

    fn reap_expired(&self) -> Result<Vec<Reaped>> {
        let requeue = self.opts.requeue_sources.clone();
        self.with(move |mut c| async move {
            let tx = c.transaction().await.map_err(pg)?;
            let rows = tx
                .query(
                    "SELECT id, COALESCE(node_id, ''), source, attempts FROM jobs
                     WHERE status = 'running' AND lease_until < $1
                     ORDER BY lease_until
                     FOR UPDATE SKIP LOCKED",
                    &[&now_ms()],
                )
                .await
                .map_err(pg)?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let (id, node, source, attempts): (String, String, String, i32) =
                    (r.get(0), r.get(1), r.get(2), r.get(3));
                let requeued = attempts < 2 && requeue.contains(&source);
                if requeued {
                    tx.execute(
                        "UPDATE jobs SET status = 'pending', started_at = NULL, node_id = NULL,
                             lease_until = NULL
                         WHERE id = $1",
                        &[&id],
                    )
                    .await
                    .map_err(pg)?;
                    tx.execute("SELECT pg_notify('comfyrs_jobs', $1)", &[&id])
                        .await
                        .map_err(pg)?;
                } else {
                    write_completion(&tx, &id, &lost_completion(&id, &node)).await?;
                }
                tx.execute(
                    "UPDATE nodes SET running = NULL WHERE id = $1 AND running = $2",
                    &[&node, &id],
                )
                .await
                .map_err(pg)?;
                out.push(Reaped { id, node, requeued });
            }
            tx.commit().await.map_err(pg)?;
            Ok(out)
        })
    }

    /// A job's end is retried while the database is unreachable (a restart, a failover), for
    /// up to twice the lease (at least a minute): the outcome of a job that ran through a
    /// short outage is recorded, not lost to the lease reaper.
    fn complete(&self, id: &str, done: &Completion) -> Result<()> {
        let limit = (self.opts.lease * 2).max(Duration::from_secs(60));
        let start = std::time::Instant::now();
        let mut backoff = Duration::from_millis(100);
        let mut retry = false;
        loop {
            match self.complete_once(id, done, retry) {
                Err(StoreError::Postgres(e)) if start.elapsed() < limit => {
                    if !retry {
                        tracing::warn!(job = %id, "cannot record the job's end yet ({e}): retrying");
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    retry = true;
                }
                other => return other,
            }
        }
    }
    fn get(&self, id: &str) -> Result<Option<JobRecord>> {
        let id = id.to_string();
        self.with(move |c| async move {
            c.query_opt(
                &format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(pg)?
            .map(|r| row_to_job(&r))
            .transpose()
        })
    }

    fn list(&self, statuses: &[JobStatus]) -> Result<Vec<JobRecord>> {
        let list: Vec<String> = statuses.iter().map(|s| s.as_str().to_string()).collect();
        self.query_jobs(
            format!("SELECT {JOB_COLS} FROM jobs WHERE status = ANY($1) ORDER BY priority, id"),
            vec![Box::new(list)],
        )
    }

    fn queue_position(&self, id: &str) -> Result<Option<usize>> {
        let id = id.to_string();
        self.with(move |c| async move {
            Ok(c.query_opt(
                "SELECT (SELECT COUNT(*) FROM jobs o WHERE o.status = 'pending'
                     AND (o.priority < j.priority OR (o.priority = j.priority AND o.id < j.id)))
                 FROM jobs j WHERE j.id = $1 AND j.status = 'pending'",
                &[&id],
            )
            .await
            .map_err(pg)?
            .map(|r| r.get::<_, i64>(0) as usize))
        })
    }

    fn pending_count(&self) -> Result<usize> {
        self.count("pending")
    }

    fn running_count(&self) -> Result<usize> {
        self.count("running")
    }

    fn cancel_pending(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.with(move |c| async move {
            Ok(c.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = $2
                 WHERE id = $1 AND status = 'pending'",
                &[&id, &now_ms()],
            )
            .await
            .map_err(pg)?
                > 0)
        })
    }

    fn clear_pending(&self) -> Result<usize> {
        self.with(move |c| async move {
            Ok(c.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = $1 WHERE status = 'pending'",
                &[&now_ms()],
            )
            .await
            .map_err(pg)? as usize)
        })
    }

    fn history(&self, max_items: Option<usize>, offset: Option<i64>) -> Result<Vec<JobRecord>> {
        let base = format!("SELECT {JOB_COLS} FROM jobs WHERE in_history");
        match (max_items, offset) {
            (_, Some(off)) if off >= 0 => self.query_jobs(
                format!("{base} ORDER BY history_seq LIMIT $1 OFFSET $2"),
                vec![Box::new(max_items.map(|m| m as i64)), Box::new(off)],
            ),
            (Some(m), _) => {
                let mut v = self.query_jobs(
                    format!("{base} ORDER BY history_seq DESC LIMIT $1"),
                    vec![Box::new(m as i64)],
                )?;
                v.reverse();
                Ok(v)
            }
            _ => self.query_jobs(format!("{base} ORDER BY history_seq"), vec![]),
        }
    }

    fn all_jobs(&self) -> Result<Vec<JobRecord>> {
        self.query_jobs(
            format!(
                "SELECT {JOB_COLS} FROM jobs
                 WHERE in_history OR status IN ('pending', 'running') ORDER BY seq"
            ),
            vec![],
        )
    }

    fn delete_history(&self, id: &str) -> Result<()> {
        let id = id.to_string();
        self.with(move |c| async move {
            c.execute("UPDATE jobs SET in_history = false WHERE id = $1", &[&id])
                .await
                .map_err(pg)?;
            Ok(())
        })
    }

    fn clear_history(&self) -> Result<()> {
        self.with(move |c| async move {
            c.execute("UPDATE jobs SET in_history = false WHERE in_history", &[])
                .await
                .map_err(pg)?;
            Ok(())
        })
    }

    fn output_files(&self, id: &str) -> Result<Vec<OutputFile>> {
        let id = id.to_string();
        self.with(move |c| async move {
            let rows = c
                .query(
                    "SELECT job_id, node_id, kind, filename, subfolder, folder_type FROM outputs
                     WHERE job_id = $1 ORDER BY seq",
                    &[&id],
                )
                .await
                .map_err(pg)?;
            Ok(rows
                .iter()
                .map(|r| OutputFile {
                    job_id: r.get(0),
                    node_id: r.get(1),
                    kind: r.get(2),
                    filename: r.get(3),
                    subfolder: r.get(4),
                    folder_type: r.get(5),
                })
                .collect())
        })
    }
}

impl PgStore {
    fn count(&self, status: &'static str) -> Result<usize> {
        self.with(move |c| async move {
            Ok(
                c.query_one("SELECT COUNT(*) FROM jobs WHERE status = $1", &[&status])
                    .await
                    .map_err(pg)?
                    .get::<_, i64>(0) as usize,
            )
        })
    }
}

impl WebhookLog for PgStore {
    fn add_delivery(
        &self,
        id: &str,
        request_id: &str,
        url: &str,
        body: &str,
        is_final: bool,
    ) -> Result<bool> {
        let (id, request_id, url, body) = (
            id.to_string(),
            request_id.to_string(),
            url.to_string(),
            body.to_string(),
        );
        self.with(move |c| async move {
            let now = now_ms();
            Ok(c.execute(
                "INSERT INTO webhook_deliveries(id, request_id, url, body, final, created_at,
                     next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $6)
                 ON CONFLICT (id) DO NOTHING",
                &[&id, &request_id, &url, &body, &is_final, &now],
            )
            .await
            .map_err(pg)?
                > 0)
        })
    }

    fn due_deliveries(&self, now: i64, limit: usize) -> Result<Vec<Delivery>> {
        self.with(move |c| async move {
            let rows = c
                .query(
                    &format!(
                        "SELECT {DELIVERY_COLS} FROM webhook_deliveries
                         WHERE state = 'pending' AND next_attempt_at <= $1
                         ORDER BY next_attempt_at, created_at LIMIT $2"
                    ),
                    &[&now, &(limit as i64)],
                )
                .await
                .map_err(pg)?;
            Ok(rows.iter().map(row_to_delivery).collect())
        })
    }

    fn claim_due_deliveries(
        &self,
        now: i64,
        limit: usize,
        lease_until: i64,
    ) -> Result<Vec<Delivery>> {
        self.with(move |c| async move {
            let rows = c
                .query(
                    &format!(
                        "UPDATE webhook_deliveries SET next_attempt_at = $3
                         WHERE id IN (
                             SELECT id FROM webhook_deliveries
                             WHERE state = 'pending' AND next_attempt_at <= $1
                             ORDER BY next_attempt_at, created_at LIMIT $2
                             FOR UPDATE SKIP LOCKED)
                         RETURNING {DELIVERY_COLS}"
                    ),
                    &[&now, &(limit as i64), &lease_until],
                )
                .await
                .map_err(pg)?;
            let mut v: Vec<Delivery> = rows.iter().map(row_to_delivery).collect();
            v.sort_by_key(|d| d.created_at);
            Ok(v)
        })
    }

    fn next_delivery_at(&self) -> Result<Option<i64>> {
        self.with(move |c| async move {
            Ok(c.query_one(
                "SELECT MIN(next_attempt_at) FROM webhook_deliveries WHERE state = 'pending'",
                &[],
            )
            .await
            .map_err(pg)?
            .get(0))
        })
    }

    fn lease_delivery(&self, id: &str, until_ms: i64) -> Result<()> {
        let id = id.to_string();
        self.with(move |c| async move {
            c.execute(
                "UPDATE webhook_deliveries SET next_attempt_at = $2 WHERE id = $1",
                &[&id, &until_ms],
            )
            .await
            .map_err(pg)?;
            Ok(())
        })
    }

    fn deliveries_of(&self, request_id: &str) -> Result<Vec<Delivery>> {
        let id = request_id.to_string();
        self.with(move |c| async move {
            let rows = c
                .query(
                    &format!(
                        "SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE request_id = $1
                         ORDER BY created_at, seq"
                    ),
                    &[&id],
                )
                .await
                .map_err(pg)?;
            Ok(rows.iter().map(row_to_delivery).collect())
        })
    }

    fn delivery_attempted(
        &self,
        id: &str,
        state: DeliveryState,
        next_at: i64,
        error: Option<&str>,
    ) -> Result<()> {
        let (id, error) = (id.to_string(), error.map(str::to_string));
        self.with(move |c| async move {
            c.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, state = $2,
                     next_attempt_at = $3, last_error = $4,
                     delivered_at = CASE WHEN $2 = 'delivered' THEN $5 ELSE delivered_at END
                 WHERE id = $1",
                &[&id, &state.as_str(), &next_at, &error, &now_ms()],
            )
            .await
            .map_err(pg)?;
            Ok(())
        })
    }

    fn finished_without_final_webhook(&self, since_ms: i64) -> Result<Vec<String>> {
        self.with(move |c| async move {
            let rows = c
                .query(
                    "SELECT id FROM jobs
                     WHERE status IN ('success', 'failed', 'interrupted', 'cancelled')
                       AND finished_at >= $1
                       AND (extra_data::jsonb -> 'serverless' -> 'webhook') IS NOT NULL
                       AND (extra_data::jsonb -> 'serverless' -> 'webhook') <> 'null'::jsonb
                       AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                                       WHERE d.request_id = jobs.id AND d.final)
                     ORDER BY finished_at",
                    &[&since_ms],
                )
                .await
                .map_err(pg)?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }
}

impl DownloadQueue for PgStore {
    fn enqueue_download(&self, job: &DownloadJob) -> Result<bool> {
        let job = job.clone();
        self.with(move |mut c| async move {
            let tx = c.transaction().await.map_err(pg)?;
            tx.execute("LOCK TABLE downloads IN SHARE ROW EXCLUSIVE MODE", &[])
                .await
                .map_err(pg)?;
            let busy = tx
                .query_opt(
                    "SELECT 1 FROM downloads WHERE file = $1
                       AND state IN ('queued', 'downloading')",
                    &[&job.file],
                )
                .await
                .map_err(pg)?
                .is_some();
            if busy {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO downloads(file, url, dest, sha256, state, error, seq, updated_at)
                 VALUES ($1, $2, $3, $4, 'queued', NULL,
                         (SELECT COALESCE(MAX(seq), 0) + 1 FROM downloads), $5)
                 ON CONFLICT (file) DO UPDATE SET url = $2, dest = $3, sha256 = $4,
                     state = 'queued', error = NULL, node_id = NULL,
                     seq = (SELECT COALESCE(MAX(seq), 0) + 1 FROM downloads), updated_at = $5",
                &[
                    &job.file,
                    &job.url,
                    &job.dest.to_string_lossy().to_string(),
                    &job.sha256,
                    &now_ms(),
                ],
            )
            .await
            .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            Ok(true)
        })
    }

    fn claim_download(&self) -> Result<Option<DownloadJob>> {
        let node = self.node.clone();
        let ttl = self.opts.node_ttl.as_millis() as i64;
        self.with(move |c| async move {
            // This node's interrupted download first (resumed from its .part file), then one
            // a dead node left, then the queue in request order.
            let row = c
                .query_opt(
                    "UPDATE downloads SET state = 'downloading', node_id = $1, updated_at = $2
                     WHERE file = (
                         SELECT d.file FROM downloads d
                         WHERE d.state = 'queued'
                            OR (d.state = 'downloading' AND (d.node_id = $1 OR d.node_id IS NULL
                                OR NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = d.node_id
                                               AND n.heartbeat_at > $2::bigint - $3::bigint)))
                         ORDER BY d.state = 'downloading' DESC, d.seq
                         LIMIT 1
                         FOR UPDATE SKIP LOCKED)
                     RETURNING file, url, dest, sha256",
                    &[&node, &now_ms(), &ttl],
                )
                .await
                .map_err(pg)?;
            Ok(row.map(|r| DownloadJob {
                file: r.get(0),
                url: r.get(1),
                dest: PathBuf::from(r.get::<_, String>(2)),
                sha256: r.get(3),
            }))
        })
    }

    fn download_finished(&self, file: &str, outcome: std::result::Result<(), &str>) -> Result<()> {
        let (file, err) = (file.to_string(), outcome.err().map(str::to_string));
        self.with(move |c| async move {
            match err {
                None => {
                    c.execute("DELETE FROM downloads WHERE file = $1", &[&file])
                        .await
                }
                Some(e) => {
                    c.execute(
                        "UPDATE downloads SET state = 'failed', error = $2, updated_at = $3
                         WHERE file = $1",
                        &[&file, &e, &now_ms()],
                    )
                    .await
                }
            }
            .map_err(pg)?;
            Ok(())
        })
    }

    fn download_state(&self, file: &str) -> Result<Option<StoredDownloadState>> {
        let file = file.to_string();
        self.with(move |c| async move {
            Ok(c.query_opt(
                "SELECT state, error FROM downloads WHERE file = $1",
                &[&file],
            )
            .await
            .map_err(pg)?
            .map(|r| match r.get::<_, &str>(0) {
                "queued" => StoredDownloadState::Queued,
                "downloading" => StoredDownloadState::Downloading,
                _ => StoredDownloadState::Failed(r.get::<_, Option<String>>(1).unwrap_or_default()),
            }))
        })
    }

    fn forget_download(&self, file: &str) -> Result<()> {
        let file = file.to_string();
        self.with(move |c| async move {
            c.execute(
                "DELETE FROM downloads WHERE file = $1 AND state <> 'downloading'",
                &[&file],
            )
            .await
            .map_err(pg)?;
            Ok(())
        })
    }
}

impl Retention for PgStore {
    fn expire_finished(
        &self,
        sources: &[&str],
        finished_before_ms: i64,
    ) -> Result<Vec<(String, Vec<OutputFile>)>> {
        let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
        let ids: Vec<String> = self.with(move |c| async move {
            let rows = c
                .query(
                    "SELECT id FROM jobs
                     WHERE status IN ('success', 'failed', 'interrupted', 'cancelled')
                       AND finished_at < $1 AND source = ANY($2)
                       AND id NOT IN (SELECT id FROM expired_jobs)",
                    &[&finished_before_ms, &sources],
                )
                .await
                .map_err(pg)?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let files = self.output_files(&id)?;
            let idc = id.clone();
            // Two nodes expiring at once: the tombstone insert decides who deletes the files.
            let mine = self.with(move |mut c| async move {
                let tx = c.transaction().await.map_err(pg)?;
                let n = tx
                    .execute(
                        "INSERT INTO expired_jobs(id, expired_at) VALUES ($1, $2)
                         ON CONFLICT (id) DO NOTHING",
                        &[&idc, &now_ms()],
                    )
                    .await
                    .map_err(pg)?;
                if n == 0 {
                    return Ok(false);
                }
                tx.execute(
                    "UPDATE jobs SET outputs = '{}', in_history = false WHERE id = $1",
                    &[&idc],
                )
                .await
                .map_err(pg)?;
                tx.execute("DELETE FROM outputs WHERE job_id = $1", &[&idc])
                    .await
                    .map_err(pg)?;
                tx.execute(
                    "DELETE FROM webhook_deliveries WHERE request_id = $1",
                    &[&idc],
                )
                .await
                .map_err(pg)?;
                tx.commit().await.map_err(pg)?;
                Ok(true)
            })?;
            if mine {
                out.push((id, files));
            }
        }
        Ok(out)
    }

    fn expired_at(&self, id: &str) -> Result<Option<i64>> {
        let id = id.to_string();
        self.with(move |c| async move {
            Ok(
                c.query_opt("SELECT expired_at FROM expired_jobs WHERE id = $1", &[&id])
                    .await
                    .map_err(pg)?
                    .map(|r| r.get(0)),
            )
        })
    }
}

impl DeploymentTable for PgStore {
    fn save_deployment(&self, id: &str, json: &str) -> Result<bool> {
        let (id, json) = (id.to_string(), json.to_string());
        self.with(move |c| async move {
            Ok(c.execute(
                "INSERT INTO deployments(id, body, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO NOTHING",
                &[&id, &json, &now_ms()],
            )
            .await
            .map_err(pg)?
                == 1)
        })
    }

    fn deployment(&self, id: &str) -> Result<Option<String>> {
        let id = id.to_string();
        self.with(move |c| async move {
            Ok(
                c.query_opt("SELECT body FROM deployments WHERE id = $1", &[&id])
                    .await
                    .map_err(pg)?
                    .map(|r| r.get(0)),
            )
        })
    }

    fn deployments(&self) -> Result<Vec<String>> {
        self.with(move |c| async move {
            Ok(c.query("SELECT body FROM deployments ORDER BY seq", &[])
                .await
                .map_err(pg)?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
    }

    fn delete_deployment(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.with(move |c| async move {
            Ok(c.execute("DELETE FROM deployments WHERE id = $1", &[&id])
                .await
                .map_err(pg)?
                == 1)
        })
    }
}

impl Nodes for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn node_id(&self) -> &str {
        &self.node
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.opts.lease)
    }

    fn heartbeat(&self, info: &NodeInfo) -> Result<()> {
        let can_run = info.role != "api";
        {
            let mut caps = self.caps.lock().unwrap_or_else(|e| e.into_inner());
            caps.classes = Some(json!(info.node_classes));
            caps.models = json!(info.models);
            caps.warm = json!(info.warm);
        }
        let mut info = info.clone();
        info.id = self.node.clone();
        info.heartbeat_at = now_ms();
        self.with(move |c| async move {
            // API-only nodes advertise nothing runnable.
            let (classes, models) = if can_run {
                (json!(info.node_classes), json!(info.models))
            } else {
                (json!([]), json!([]))
            };
            c.execute(
                "INSERT INTO nodes(id, info, node_classes, models, warm, running, heartbeat_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (id) DO UPDATE SET info = $2, node_classes = $3, models = $4,
                     warm = $5, heartbeat_at = $7",
                &[
                    &info.id,
                    &serde_json::to_string(&info)?,
                    &classes,
                    &models,
                    &json!(info.warm),
                    &info.running,
                    &info.heartbeat_at,
                ],
            )
            .await
            .map_err(pg)?;
            Ok(())
        })
    }

    fn live_nodes(&self) -> Result<Vec<NodeInfo>> {
        let ttl = self.opts.node_ttl.as_millis() as i64;
        self.with(move |c| async move {
            let rows = c
                .query(
                    "SELECT info, running, heartbeat_at FROM nodes WHERE heartbeat_at > $1
                     ORDER BY id",
                    &[&(now_ms() - ttl)],
                )
                .await
                .map_err(pg)?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let mut info: NodeInfo = serde_json::from_str(r.get::<_, &str>(0))?;
                info.running = r.get(1);
                info.heartbeat_at = r.get(2);
                out.push(info);
            }
            Ok(out)
        })
    }

    fn leave(&self) -> Result<()> {
        let node = self.node.clone();
        self.with(move |c| async move {
            c.execute("DELETE FROM nodes WHERE id = $1", &[&node])
                .await
                .map_err(pg)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{test_pg, Needs};
    use std::sync::Arc;

    fn job(id: &str, source: &str, needs: Needs) -> NewJob {
        NewJob {
            id: id.into(),
            number: None,
            front: false,
            prompt: json!({"1": {"class_type": "X", "inputs": {}}}),
            extra_data: json!({}),
            outputs_to_execute: vec!["1".into()],
            client_id: None,
            owner: None,
            source: source.into(),
            needs,
        }
    }

    fn node(url: &str, id: &str, opts: &PgOptions) -> PgStore {
        PgStore::connect(
            url,
            PgOptions {
                node_id: Some(id.into()),
                ..opts.clone()
            },
        )
        .unwrap()
    }

    fn done() -> Completion {
        Completion {
            status: JobStatus::Success,
            outputs: json!({}),
            messages: vec![],
            error: None,
        }
    }

    /// A second store on the same database, as another process would open it.
    fn peer(s: &PgStore, id: &str) -> PgStore {
        let url = s.with(|c| async move {
            Ok(c.query_one("SELECT current_database()", &[])
                .await
                .map_err(pg)?
                .get::<_, String>(0))
        });
        let server = testing::shared();
        node(&server.url(&url.unwrap()), id, s.options())
    }

    #[test]
    fn migrations_are_versioned_and_run_once() {
        let a = test_pg(PgOptions::default());
        let b = peer(&a, "b");
        let last = schema::MIGRATIONS.last().unwrap().0;
        assert_eq!(a.schema_version().unwrap(), last);
        assert_eq!(b.schema_version().unwrap(), last);
        let n: i64 = a
            .with(|c| async move {
                Ok(c.query_one("SELECT COUNT(*) FROM schema_migrations", &[])
                    .await
                    .map_err(pg)?
                    .get(0))
            })
            .unwrap();
        assert_eq!(n as usize, schema::MIGRATIONS.len());
    }

    #[test]
    fn concurrent_claims_take_each_job_once() {
        let a = Arc::new(test_pg(PgOptions::default()));
        for i in 0..120 {
            a.enqueue(&job(&format!("j{i:03}"), "comfyui", Needs::default()))
                .unwrap();
        }
        let stores: Vec<Arc<PgStore>> = (0..4)
            .map(|i| Arc::new(peer(&a, &format!("w{i}"))))
            .collect();
        let handles: Vec<_> = stores
            .iter()
            .cloned()
            .map(|s| {
                std::thread::spawn(move || {
                    let mut got = vec![];
                    while let Some(j) = s.claim_next().unwrap() {
                        s.complete(&j.id, &done()).unwrap();
                        got.push(j.id);
                    }
                    got
                })
            })
            .collect();
        let mut all: Vec<String> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort();
        let want: Vec<String> = (0..120).map(|i| format!("j{i:03}")).collect();
        assert_eq!(all, want, "every job claimed exactly once");
        assert_eq!(a.history(None, None).unwrap().len(), 120);
    }

    #[test]
    fn expired_lease_fails_or_requeues_once_and_the_old_holder_cannot_complete() {
        let opts = PgOptions {
            lease: Duration::ZERO,
            requeue_sources: vec!["deployments".into()],
            ..Default::default()
        };
        let w = test_pg(PgOptions {
            node_id: Some("w".into()),
            ..opts.clone()
        });
        let reaper = peer(&w, "r");
        w.enqueue(&job("c", "comfyui", Needs::default())).unwrap();
        w.enqueue(&job("d", "deployments", Needs::default()))
            .unwrap();
        let reap_all = |n: usize| {
            // Leases of zero length expire on the next millisecond tick.
            let mut got = vec![];
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while got.len() < n && std::time::Instant::now() < deadline {
                got.extend(reaper.reap_expired().unwrap());
            }
            got
        };
        assert_eq!(w.claim_next().unwrap().unwrap().id, "c");
        assert_eq!(w.claim_next().unwrap().unwrap().id, "d");
        let mut r = reap_all(2);
        r.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(
            r,
            vec![
                Reaped {
                    id: "c".into(),
                    node: "w".into(),
                    requeued: false
                },
                Reaped {
                    id: "d".into(),
                    node: "w".into(),
                    requeued: true
                },
            ]
        );
        let c = w.get("c").unwrap().unwrap();
        assert_eq!(c.status, JobStatus::Failed);
        assert!(
            c.error.as_deref().unwrap().starts_with(LEASE_REASON),
            "{:?}",
            c.error
        );
        assert_eq!(c.exec_status["status_str"], "error");
        assert_eq!(
            c.exec_status["messages"][0][1]["exception_type"],
            "WorkerLost"
        );
        assert!(matches!(
            w.complete("c", &done()),
            Err(StoreError::LeaseLost(_))
        ));
        assert!(!w.renew_lease("c").unwrap());
        assert_eq!(w.get("c").unwrap().unwrap().status, JobStatus::Failed);
        // The serverless job is pending again; lost a second time, it fails.
        assert_eq!(w.get("d").unwrap().unwrap().status, JobStatus::Pending);
        assert_eq!(w.claim_next().unwrap().unwrap().id, "d");
        assert_eq!(
            reap_all(1),
            vec![Reaped {
                id: "d".into(),
                node: "w".into(),
                requeued: false
            }]
        );
        assert_eq!(w.get("d").unwrap().unwrap().status, JobStatus::Failed);
        assert_eq!(w.running_count().unwrap(), 0);
        assert_eq!(w.history(None, None).unwrap().len(), 2);
    }

    #[test]
    fn deployments_are_shared() {
        let a = test_pg(PgOptions::default());
        let b = peer(&a, "b");
        assert!(a.save_deployment("d1", r#"{"id":"d1"}"#).unwrap());
        assert!(!b.save_deployment("d1", "{}").unwrap(), "ids are unique");
        assert_eq!(
            b.deployment("d1").unwrap().as_deref(),
            Some(r#"{"id":"d1"}"#)
        );
        assert_eq!(b.deployments().unwrap().len(), 1);
        assert!(b.delete_deployment("d1").unwrap());
        assert!(!a.delete_deployment("d1").unwrap());
        assert_eq!(a.deployment("d1").unwrap(), None);
    }

    #[test]
    fn renewed_lease_holds() {
        let w = test_pg(PgOptions {
            lease: Duration::from_secs(60),
            ..Default::default()
        });
        w.enqueue(&job("a", "comfyui", Needs::default())).unwrap();
        w.claim_next().unwrap().unwrap();
        assert!(w.renew_lease("a").unwrap());
        assert!(w.reap_expired().unwrap().is_empty());
        w.complete("a", &done()).unwrap();
        assert!(!w.renew_lease("a").unwrap(), "a finished job has no lease");
    }

    fn info(role: &str, classes: &[&str], models: &[&str], warm: &[&str]) -> NodeInfo {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        NodeInfo {
            role: role.into(),
            node_classes: v(classes),
            models: v(models),
            warm: v(warm),
            ..Default::default()
        }
    }

    #[test]
    fn workers_claim_only_what_they_can_run() {
        let a = test_pg(PgOptions {
            node_id: Some("a".into()),
            ..Default::default()
        });
        let b = peer(&a, "b");
        a.heartbeat(&info("worker", &["X"], &["checkpoints/m1"], &[]))
            .unwrap();
        b.heartbeat(&info("worker", &["X", "Y"], &[], &[])).unwrap();
        let needs = |c: &[&str], m: &[&str]| Needs {
            node_classes: c.iter().map(|s| s.to_string()).collect(),
            models: m.iter().map(|s| s.to_string()).collect(),
        };
        a.enqueue(&job("needs_y", "comfyui", needs(&["Y"], &[])))
            .unwrap();
        a.enqueue(&job(
            "needs_m1",
            "comfyui",
            needs(&["X"], &["checkpoints/m1"]),
        ))
        .unwrap();
        // b lacks m1; a lacks Y.
        assert_eq!(b.claim_next().unwrap().unwrap().id, "needs_y");
        assert!(b.claim_next().unwrap().is_none());
        assert_eq!(a.claim_next().unwrap().unwrap().id, "needs_m1");
        let nodes = a.live_nodes().unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].id, "a");
        assert_eq!(nodes[0].running.as_deref(), Some("needs_m1"));
        assert_eq!(nodes[1].running.as_deref(), Some("needs_y"));
    }

    #[test]
    fn a_job_waits_briefly_for_the_idle_worker_holding_its_models() {
        let warm = test_pg(PgOptions {
            node_id: Some("warm".into()),
            affinity_wait: Duration::from_secs(3600),
            ..Default::default()
        });
        let cold = peer(&warm, "cold");
        let m = &["checkpoints/m1"];
        warm.heartbeat(&info("worker", &["X"], m, m)).unwrap();
        cold.heartbeat(&info("worker", &["X"], m, &[])).unwrap();
        let needs = Needs {
            node_classes: vec!["X".into()],
            models: vec!["checkpoints/m1".into()],
        };
        cold.enqueue(&job("a", "comfyui", needs.clone())).unwrap();
        cold.enqueue(&job("free", "comfyui", Needs::default()))
            .unwrap();
        // The cold worker skips the job the warm one should take and runs the next one.
        assert_eq!(cold.claim_next().unwrap().unwrap().id, "free");
        assert_eq!(warm.claim_next().unwrap().unwrap().id, "a");
        // With the warm worker busy, the cold one takes such a job at once.
        cold.enqueue(&job("b", "comfyui", needs.clone())).unwrap();
        assert_eq!(cold.claim_next().unwrap().unwrap().id, "b");
    }
}
