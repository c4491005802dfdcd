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

#[cfg(test)]
mod tests {
    use crate::store::{test_backends, Completion, JobStatus, JobStore, Needs, NewJob};
    use serde_json::json;

    fn expire_on(s: &JobStore) {
        for (id, source) in [("old", "deployments"), ("comfy", "comfyui")] {
            s.enqueue(&NewJob {
                id: id.into(),
                number: None,
                front: false,
                prompt: json!({}),
                extra_data: json!({}),
                outputs_to_execute: vec!["9".into()],
                client_id: None,
                owner: None,
                source: source.into(),
                needs: Needs::default(),
            })
            .unwrap();
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
        let later = crate::store::now_ms() + 1000;
        let expired = s.expire_finished(&["deployments"], later).unwrap();
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].0, "old");
        assert_eq!(expired[0].1[0].filename, "old.png");
        assert!(s.expired_at("old").unwrap().is_some());
        assert!(s.expired_at("comfy").unwrap().is_none());
        assert!(s.output_files("old").unwrap().is_empty());
        assert_eq!(s.get("old").unwrap().unwrap().outputs, json!({}));
        let history: Vec<String> = s
            .history(None, None)
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(history, ["comfy"]);
        assert!(s
            .expire_finished(&["deployments"], later)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn expiry_drops_outputs_and_keeps_a_tombstone() {
        for (name, s) in test_backends() {
            eprintln!("backend {name}");
            expire_on(&*s);
        }
    }
}
