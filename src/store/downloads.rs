//! The catalog download queue (spec §4), in the job store so a restart resumes it: queued
//! downloads stay queued, the one that was running is continued from its `.part` file, and
//! failures keep their reason.
//!
//! One row per file name (the catalog's `file`); a finished download's row is deleted (the file
//! on disk is then the record).

use super::{now_ms, DownloadQueue, Result, SqliteStore};
use rusqlite::{params, OptionalExtension};
use std::path::PathBuf;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS downloads (
    file       TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    dest       TEXT NOT NULL,
    sha256     TEXT,
    state      TEXT NOT NULL,
    error      TEXT,
    seq        INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
"#;

/// A file to fetch.
#[derive(Debug, Clone, PartialEq)]
pub struct DownloadJob {
    /// The catalog's file name (the key).
    pub file: String,
    pub url: String,
    /// Where the finished file goes (`<dest>.part` while downloading).
    pub dest: PathBuf,
    pub sha256: Option<String>,
}

/// Where a stored download stands.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredDownloadState {
    Queued,
    /// Started; after a restart, to be resumed.
    Downloading,
    Failed(String),
}

impl DownloadQueue for SqliteStore {
    /// Queues a download behind the others. False (and nothing changes) when the file is
    /// already queued or downloading; a failed one is queued again.
    fn enqueue_download(&self, job: &DownloadJob) -> Result<bool> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        let busy: Option<String> = tx
            .query_row(
                "SELECT state FROM downloads WHERE file = ?1 AND state IN ('queued', 'downloading')",
                [&job.file],
                |r| r.get(0),
            )
            .optional()?;
        if busy.is_some() {
            return Ok(false);
        }
        let seq: i64 =
            tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM downloads", [], |r| {
                r.get(0)
            })?;
        tx.execute(
            "INSERT OR REPLACE INTO downloads(file, url, dest, sha256, state, error, seq, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'queued', NULL, ?5, ?6)",
            params![
                job.file,
                job.url,
                job.dest.to_string_lossy(),
                job.sha256,
                seq,
                now_ms()
            ],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// The next download to run, marked `downloading`: one a restart interrupted first, then
    /// the queue in request order.
    fn claim_download(&self) -> Result<Option<DownloadJob>> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        let job = tx
            .query_row(
                "SELECT file, url, dest, sha256 FROM downloads
                 WHERE state IN ('queued', 'downloading')
                 ORDER BY state = 'downloading' DESC, seq LIMIT 1",
                [],
                |r| {
                    Ok(DownloadJob {
                        file: r.get(0)?,
                        url: r.get(1)?,
                        dest: PathBuf::from(r.get::<_, String>(2)?),
                        sha256: r.get(3)?,
                    })
                },
            )
            .optional()?;
        if let Some(j) = &job {
            tx.execute(
                "UPDATE downloads SET state = 'downloading', updated_at = ?2 WHERE file = ?1",
                params![j.file, now_ms()],
            )?;
        }
        tx.commit()?;
        Ok(job)
    }

    /// A download ended: its row goes (`Ok`), or records the reason (`Err`).
    fn download_finished(&self, file: &str, outcome: std::result::Result<(), &str>) -> Result<()> {
        let c = self.conn();
        match outcome {
            Ok(()) => c.execute("DELETE FROM downloads WHERE file = ?1", [file])?,
            Err(e) => c.execute(
                "UPDATE downloads SET state = 'failed', error = ?2, updated_at = ?3 WHERE file = ?1",
                params![file, e, now_ms()],
            )?,
        };
        Ok(())
    }

    /// The stored state of `file`'s download, if any.
    fn download_state(&self, file: &str) -> Result<Option<StoredDownloadState>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT state, error FROM downloads WHERE file = ?1",
                [file],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)),
            )
            .optional()?
            .map(|(state, error)| match state.as_str() {
                "queued" => StoredDownloadState::Queued,
                "downloading" => StoredDownloadState::Downloading,
                _ => StoredDownloadState::Failed(error.unwrap_or_default()),
            }))
    }

    /// Drops `file`'s row unless it is `downloading` (a running download ends on its own).
    fn forget_download(&self, file: &str) -> Result<()> {
        self.conn().execute(
            "DELETE FROM downloads WHERE file = ?1 AND state != 'downloading'",
            [file],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(file: &str) -> DownloadJob {
        DownloadJob {
            file: file.into(),
            url: format!("http://x/{file}"),
            dest: PathBuf::from(format!("/m/loras/{file}")),
            sha256: None,
        }
    }

    #[test]
    fn queue_order_resume_first_and_outcomes() {
        for (name, s) in crate::store::test_backends() {
            eprintln!("backend {name}");
            queue_order_resume_first_and_outcomes_on(&*s);
        }
    }

    fn queue_order_resume_first_and_outcomes_on(s: &crate::store::JobStore) {
        assert!(s.enqueue_download(&job("a")).unwrap());
        assert!(s.enqueue_download(&job("b")).unwrap());
        assert!(!s.enqueue_download(&job("a")).unwrap());
        assert_eq!(s.claim_download().unwrap(), Some(job("a")));
        assert_eq!(
            s.download_state("a").unwrap(),
            Some(StoredDownloadState::Downloading)
        );
        // Still "downloading" (as after a restart): claimed again before the queue.
        assert_eq!(s.claim_download().unwrap(), Some(job("a")));
        s.download_finished("a", Ok(())).unwrap();
        assert_eq!(s.download_state("a").unwrap(), None);
        assert_eq!(s.claim_download().unwrap(), Some(job("b")));
        s.download_finished("b", Err("boom")).unwrap();
        assert_eq!(
            s.download_state("b").unwrap(),
            Some(StoredDownloadState::Failed("boom".into()))
        );
        assert_eq!(s.claim_download().unwrap(), None);
        // A failed one can be queued again, and forgotten while queued.
        assert!(s.enqueue_download(&job("b")).unwrap());
        s.forget_download("b").unwrap();
        assert_eq!(s.download_state("b").unwrap(), None);
    }
}
