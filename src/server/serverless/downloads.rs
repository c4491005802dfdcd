//! Background downloads of catalog files: one at a time, in request order; resumable (an
//! existing `<file>.part` is continued with a `Range` request), checked against `sha256` when
//! the catalog gives one, renamed into place only when complete. Progress is visible in the
//! catalog listing.
//!
//! The queue lives in the job store ([`JobStore::enqueue_download`]), so a restart loses no
//! download: queued ones stay queued, the one that was running resumes from its `.part` file
//! first, and failures keep their reason. Only the live progress of the running download is
//! in memory.

pub use crate::store::DownloadJob;
use crate::store::{JobStore, StoredDownloadState};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Where a file's download stands.
#[derive(Debug, Clone, PartialEq)]
pub enum DownloadState {
    Queued,
    Downloading {
        done: u64,
        total: Option<u64>,
        /// Bytes per second over the last second or so.
        speed: f64,
    },
    Failed(String),
}

/// The running download's progress.
struct Live {
    file: String,
    done: u64,
    total: Option<u64>,
    speed: f64,
}

/// The download queue (in the store) and its worker.
pub struct Downloads {
    store: Arc<JobStore>,
    live: Mutex<Option<Live>>,
    wake: Notify,
    client: reqwest::Client,
}

impl Downloads {
    pub fn new(store: Arc<JobStore>) -> Arc<Downloads> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("comfyrs/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the download client builds");
        Arc::new(Downloads {
            store,
            live: Mutex::new(None),
            wake: Notify::new(),
            client,
        })
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, Option<Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state of `file`, if it was asked for (a finished download has none: the file is
    /// then on disk). A download a restart interrupted reads `Queued` until it resumes.
    pub fn state(&self, file: &str) -> Option<DownloadState> {
        if let Some(l) = self.lock_live().as_ref().filter(|l| l.file == file) {
            return Some(DownloadState::Downloading {
                done: l.done,
                total: l.total,
                speed: l.speed,
            });
        }
        match self.store.download_state(file) {
            Ok(s) => s.map(|s| match s {
                StoredDownloadState::Queued | StoredDownloadState::Downloading => {
                    DownloadState::Queued
                }
                StoredDownloadState::Failed(e) => DownloadState::Failed(e),
            }),
            Err(e) => Some(DownloadState::Failed(format!(
                "cannot read the download queue: {e}"
            ))),
        }
    }

    /// Queues a download; `Ok(false)` when the file is already queued or downloading.
    pub fn enqueue(&self, job: DownloadJob) -> Result<bool, crate::store::StoreError> {
        let queued = self.store.enqueue_download(&job)?;
        if queued {
            self.wake.notify_one();
        }
        Ok(queued)
    }

    /// Forgets a file's queued or failed download (after it was deleted); a running one
    /// finishes.
    pub fn forget(&self, file: &str) {
        if let Err(e) = self.store.forget_download(file) {
            tracing::error!(file = %file, "cannot update the download queue: {e}");
        }
    }

    /// Runs downloads until `stop` turns true. A download cut off by the stop stays
    /// `downloading` in the store and resumes at the next start.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let next = match self.store.claim_download() {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!("cannot read the download queue: {e}");
                    None
                }
            };
            let Some(job) = next else {
                tokio::select! {
                    _ = self.wake.notified() => continue,
                    // A store error above is retried now and then.
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    _ = stop.wait_for(|v| *v) => return,
                }
            };
            let file = job.file.clone();
            let res = tokio::select! {
                r = self.download(&job) => r,
                _ = stop.wait_for(|v| *v) => {
                    *self.lock_live() = None;
                    return;
                }
            };
            *self.lock_live() = None;
            if let Err(e) = &res {
                tracing::warn!(file = %file, "download failed: {e}");
            }
            if let Err(e) = self
                .store
                .download_finished(&file, res.as_ref().map(|_| ()).map_err(String::as_str))
            {
                tracing::error!(file = %file, "cannot record the download's outcome: {e}");
            }
        }
    }

    fn set(&self, file: &str, done: u64, total: Option<u64>, speed: f64) {
        *self.lock_live() = Some(Live {
            file: file.to_string(),
            done,
            total,
            speed,
        });
    }

    async fn download(&self, job: &DownloadJob) -> Result<(), String> {
        let part = job.dest.with_file_name(format!("{}.part", job.file));
        if let Some(dir) = job.dest.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let mut req = self.client.get(&job.url);
        if have > 0 {
            req = req.header("range", format!("bytes={have}-"));
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| format!("cannot fetch {}: {e}", job.url))?;
        let status = resp.status();
        let resumed = status == reqwest::StatusCode::PARTIAL_CONTENT && have > 0;
        if !status.is_success() {
            return Err(format!("{} answered {status}", job.url));
        }
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(resumed)
            .write(true)
            .truncate(!resumed)
            .open(&part)
            .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
        let mut done = if resumed { have } else { 0 };
        let total = resp.content_length().map(|n| n + done);
        let (mut window_start, mut window_bytes, mut speed) = (Instant::now(), 0u64, 0.0);
        self.set(&job.file, done, total, speed);
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("download of {} broke off: {e}", job.url))?
        {
            out.write_all(&chunk)
                .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
            done += chunk.len() as u64;
            window_bytes += chunk.len() as u64;
            let dt = window_start.elapsed().as_secs_f64();
            if dt >= 1.0 {
                speed = window_bytes as f64 / dt;
                (window_start, window_bytes) = (Instant::now(), 0);
            }
            self.set(&job.file, done, total, speed);
        }
        out.flush().map_err(|e| e.to_string())?;
        drop(out);
        if let Some(want) = &job.sha256 {
            let part2 = part.clone();
            let got = tokio::task::spawn_blocking(move || sha256_file(&part2))
                .await
                .map_err(|e| e.to_string())??;
            if !got.eq_ignore_ascii_case(want) {
                let _ = std::fs::remove_file(&part);
                return Err(format!(
                    "checksum mismatch for {}: sha256 {got}, catalog says {want}; the download was discarded",
                    job.file
                ));
            }
        }
        std::fs::rename(&part, &job.dest)
            .map_err(|e| format!("cannot move {} into place: {e}", part.display()))?;
        Ok(())
    }
}

fn sha256_file(path: &std::path::Path) -> Result<String, String> {
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| e.to_string())?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
