//! Retention of finished requests: their outputs leave the store (and the caller deletes the
//! files), a tombstone remains so lookups can say the results expired.

use super::{now_ms, Jobs, OutputFile, Result, Retention, SqliteStore};
use rusqlite::{params, OptionalExtension};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS expired_jobs (
    id         TEXT PRIMARY KEY,
    expired_at INTEGER NOT NULL
);
"#;

impl Retention for SqliteStore {
    /// Expires finished jobs of `sources` that finished before `finished_before_ms`: their
    /// outputs, output-file index, history entry and webhook rows are dropped and a tombstone
    /// is kept. Returns each expired job with the files it had (to delete).
    fn expire_finished(
        &self,
        sources: &[&str],
        finished_before_ms: i64,
    ) -> Result<Vec<(String, Vec<OutputFile>)>> {
        let ids: Vec<String> = {
            let c = self.conn();
            let marks = vec!["?"; sources.len()].join(",");
            let mut st = c.prepare(&format!(
                "SELECT id FROM jobs
                 WHERE status IN ('success', 'failed', 'interrupted', 'cancelled')
                   AND finished_at < ?1 AND source IN ({marks})
                   AND id NOT IN (SELECT id FROM expired_jobs)"
            ))?;
            let mut args: Vec<rusqlite::types::Value> = vec![finished_before_ms.into()];
            args.extend(
                sources
                    .iter()
                    .map(|s| rusqlite::types::Value::from(s.to_string())),
            );
            let rows = st.query_map(rusqlite::params_from_iter(args), |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let files = self.output_files(&id)?;
            let mut c = self.conn();
            let tx = c.transaction()?;
            tx.execute(
                "INSERT OR IGNORE INTO expired_jobs(id, expired_at) VALUES (?1, ?2)",
                params![id, now_ms()],
            )?;
            tx.execute(
                "UPDATE jobs SET outputs = '{}', in_history = 0 WHERE id = ?1",
                [&id],
            )?;
            tx.execute("DELETE FROM outputs WHERE job_id = ?1", [&id])?;
            tx.execute(
                "DELETE FROM webhook_deliveries WHERE request_id = ?1",
                [&id],
            )?;
            tx.commit()?;
            out.push((id, files));
        }
        Ok(out)
    }

    /// When a job's results were expired, if they were.
    fn expired_at(&self, id: &str) -> Result<Option<i64>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT expired_at FROM expired_jobs WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?)
    }
}
