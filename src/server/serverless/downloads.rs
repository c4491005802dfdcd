//! Background downloads of catalog files: one at a time, in request order; resumable (an
//! existing `<file>.part` is continued with a `Range` request), checked against `sha256` when
//! the catalog gives one, renamed into place only when complete. Progress is visible in the
//! catalog listing.

use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A file to fetch.
#[derive(Debug, Clone)]
pub struct DownloadJob {
    pub file: String,
    pub url: String,
    pub dest: PathBuf,
    pub sha256: Option<String>,
}

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

#[derive(Default)]
struct Inner {
    queue: VecDeque<DownloadJob>,
    states: HashMap<String, DownloadState>,
}

/// The download queue and its worker.
pub struct Downloads {
    inner: Mutex<Inner>,
    wake: Notify,
    client: reqwest::Client,
}

impl Downloads {
    pub fn new() -> Arc<Downloads> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("comfyrs/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the download client builds");
        Arc::new(Downloads {
            inner: Mutex::new(Inner::default()),
            wake: Notify::new(),
            client,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state of `file`, if it was asked for (a finished download has none: the file is
    /// then on disk).
    pub fn state(&self, file: &str) -> Option<DownloadState> {
        self.lock().states.get(file).cloned()
    }

    /// Queues a download; false when the file is already queued or downloading.
    pub fn enqueue(&self, job: DownloadJob) -> bool {
        let mut i = self.lock();
        if matches!(
            i.states.get(&job.file),
            Some(DownloadState::Queued | DownloadState::Downloading { .. })
        ) {
            return false;
        }
        i.states.insert(job.file.clone(), DownloadState::Queued);
        i.queue.push_back(job);
        drop(i);
        self.wake.notify_one();
        true
    }

    /// Forgets a file's state (after it was deleted).
    pub fn forget(&self, file: &str) {
        let mut i = self.lock();
        i.queue.retain(|j| j.file != file);
        if !matches!(i.states.get(file), Some(DownloadState::Downloading { .. })) {
            i.states.remove(file);
        }
    }

    /// Runs downloads until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let next = self.lock().queue.pop_front();
            let Some(job) = next else {
                tokio::select! {
                    _ = self.wake.notified() => continue,
                    _ = stop.wait_for(|v| *v) => return,
                }
            };
            let file = job.file.clone();
            let res = tokio::select! {
                r = self.download(&job) => r,
                _ = stop.wait_for(|v| *v) => return,
            };
            let mut i = self.lock();
            match res {
                Ok(()) => {
                    i.states.remove(&file);
                }
                Err(e) => {
                    tracing::warn!(file = %file, "download failed: {e}");
                    i.states.insert(file, DownloadState::Failed(e));
                }
            }
        }
    }

    fn set(&self, file: &str, s: DownloadState) {
        self.lock().states.insert(file.to_string(), s);
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
        self.set(&job.file, DownloadState::Downloading { done, total, speed });
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
            self.set(&job.file, DownloadState::Downloading { done, total, speed });
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
