//! The queue's side of object storage (`--outputs s3://...`): a job's output files go to the
//! bucket before the job is recorded as finished, and input files a job names are fetched
//! from it when this node lacks them.

use super::{error_data, JobQueue};
use crate::store::{Completion, JobRecord, JobStatus};
use std::sync::Arc;

impl JobQueue {
    /// Keeps output files in object storage (`--outputs s3://...`); set once, at start.
    pub fn set_objects(&self, objects: Arc<crate::objects::ObjectFiles>) {
        let _ = self.objects.set(objects);
    }

    /// The object storage, when configured.
    pub fn objects(&self) -> Option<&Arc<crate::objects::ObjectFiles>> {
        self.objects.get()
    }

    /// Uploads a successful job's output files to object storage (removing the local copies);
    /// the job fails, with the reason, when they cannot be stored.
    pub(super) async fn store_outputs(&self, id: &str, done: Completion) -> Completion {
        let Some(objects) = self.objects.get() else {
            return done;
        };
        if done.status != JobStatus::Success {
            return done;
        }
        for f in crate::store::output_files_in(id, &done.outputs) {
            let base = match f.folder_type.as_str() {
                "output" => &self.env.paths.output,
                "temp" => &self.env.paths.temp,
                _ => continue,
            };
            let Some(key) = objects.key(&f.folder_type, &f.subfolder, &f.filename) else {
                continue;
            };
            let local = base.join(&f.subfolder).join(&f.filename);
            let res = match tokio::fs::read(&local).await {
                Ok(bytes) => objects.put(&key, bytes).await,
                Err(e) => Err(format!("cannot read {}: {e}", local.display())),
            };
            if let Err(e) = res {
                let msg = format!("the job's outputs could not be stored: {e}");
                tracing::error!(job = %id, "{msg}");
                return Completion {
                    status: JobStatus::Failed,
                    outputs: done.outputs,
                    messages: vec![(
                        "execution_error".into(),
                        error_data(id, &msg, "OutputStorage"),
                    )],
                    error: Some(msg),
                };
            }
            let _ = tokio::fs::remove_file(&local).await;
        }
        done
    }

    /// Fetches the job's input files this node lacks from object storage (uploads that
    /// landed through another node): every string input naming an object under `input/`.
    pub(super) async fn fetch_inputs(&self, job: &JobRecord) {
        let Some(objects) = self.objects.get() else {
            return;
        };
        let Some(nodes) = job.prompt.as_object() else {
            return;
        };
        for node in nodes.values() {
            let Some(inputs) = node["inputs"].as_object() else {
                continue;
            };
            for v in inputs.values() {
                let Some(name) = v.as_str() else { continue };
                let name = name.strip_suffix(" [input]").unwrap_or(name).trim();
                if !name.contains('.') || !crate::env::is_safe_relative(name) {
                    continue;
                }
                let local = self.env.paths.input.join(name);
                if local.exists() {
                    continue;
                }
                let Some(key) = objects.key("input", "", name) else {
                    continue;
                };
                match objects.get(&key).await {
                    Ok(Some(bytes)) => {
                        if let Some(dir) = local.parent() {
                            let _ = tokio::fs::create_dir_all(dir).await;
                        }
                        if let Err(e) = tokio::fs::write(&local, bytes).await {
                            tracing::warn!(job = %job.id, "cannot write input {}: {e}", local.display());
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(job = %job.id, "{e}"),
                }
            }
        }
    }
}
