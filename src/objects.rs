//! Outputs and inputs on S3-compatible object storage (`comfyrs serve --outputs
//! s3://bucket/prefix`), so every node of a cluster serves every file without a shared disk.
//!
//! Credentials, region and endpoint come from the standard AWS environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL` for MinIO,
//! R2 or any S3-compatible server; `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint), read by
//! the Arrow project's `object_store` crate. Objects are named
//! `<prefix>/<type>/<subfolder>/<filename>` (`type` = output, temp or input), the same
//! triple `/view` takes.
//!
//! A worker uploads a job's output files before it records the job as finished (so a client
//! that sees it finished can read them) and deletes its local copies; `/view` and the hosted
//! file URLs read them back (or redirect to a presigned URL), retention deletes them; uploads
//! are stored there too, and a worker fetches a job's input files it lacks before running it.

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjPath;
use object_store::signer::Signer;
use object_store::{ObjectStore, PutPayload};
use std::sync::Arc;
use std::time::Duration;

/// Where a server keeps its files.
pub struct ObjectFiles {
    s3: Arc<AmazonS3>,
    bucket: String,
    prefix: String,
    /// `/view` answers with a redirect to a URL signed for this long, instead of the bytes.
    presign: Option<Duration>,
}

impl std::fmt::Debug for ObjectFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.describe())
    }
}

impl ObjectFiles {
    /// Parses `s3://bucket[/prefix]` and reads the AWS environment.
    pub fn from_url(url: &str, presign: Option<Duration>) -> Result<ObjectFiles, String> {
        Self::build(url, None, presign)
    }

    /// [`ObjectFiles::from_url`] with the endpoint given (instead of `AWS_ENDPOINT_URL`).
    pub fn from_url_at(
        url: &str,
        endpoint: &str,
        presign: Option<Duration>,
    ) -> Result<ObjectFiles, String> {
        Self::build(url, Some(endpoint), presign)
    }

    fn build(
        url: &str,
        endpoint: Option<&str>,
        presign: Option<Duration>,
    ) -> Result<ObjectFiles, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("--outputs {url:?}: expected s3://bucket/prefix"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("--outputs {url:?}: no bucket name"));
        }
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        // AWS_ENDPOINT_URL is the AWS SDKs' name; object_store reads AWS_ENDPOINT.
        let from_env = std::env::var("AWS_ENDPOINT_URL")
            .ok()
            .filter(|e| !e.is_empty());
        if let Some(e) = endpoint.map(str::to_string).or(from_env) {
            b = b.with_endpoint(e);
        }
        if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
            b = b.with_region("us-east-1");
        }
        let s3 = b.build().map_err(|e| format!("--outputs {url:?}: {e}"))?;
        Ok(ObjectFiles {
            s3: Arc::new(s3),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            presign,
        })
    }

    pub fn describe(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    /// Whether `/view` redirects to presigned URLs.
    pub fn presigns(&self) -> bool {
        self.presign.is_some()
    }

    /// The object of a file; `None` for a name that would leave its folder.
    pub fn key(&self, folder_type: &str, subfolder: &str, filename: &str) -> Option<ObjPath> {
        let sub = subfolder.trim_matches('/');
        let rel = if sub.is_empty() {
            filename.to_string()
        } else {
            format!("{sub}/{filename}")
        };
        if !crate::env::is_safe_relative(&rel) || filename.is_empty() {
            return None;
        }
        let full = if self.prefix.is_empty() {
            format!("{folder_type}/{rel}")
        } else {
            format!("{}/{folder_type}/{rel}", self.prefix)
        };
        ObjPath::parse(full).ok()
    }

    pub async fn put(&self, key: &ObjPath, bytes: Vec<u8>) -> Result<(), String> {
        self.s3
            .put(key, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| format!("cannot store {key} in {}: {e}", self.describe()))
    }

    /// The object's bytes; `Ok(None)` when there is no such object.
    pub async fn get(&self, key: &ObjPath) -> Result<Option<Vec<u8>>, String> {
        match self.s3.get(key).await {
            Ok(r) => r
                .bytes()
                .await
                .map(|b| Some(b.to_vec()))
                .map_err(|e| format!("cannot read {key} from {}: {e}", self.describe())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(format!("cannot read {key} from {}: {e}", self.describe())),
        }
    }

    pub async fn exists(&self, key: &ObjPath) -> Result<bool, String> {
        match self.s3.head(key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(format!("cannot look up {key} in {}: {e}", self.describe())),
        }
    }

    pub async fn delete(&self, key: &ObjPath) -> Result<(), String> {
        match self.s3.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(format!("cannot delete {key} from {}: {e}", self.describe())),
        }
    }

    /// A presigned GET URL for the object, when presigning is configured.
    pub async fn presigned(&self, key: &ObjPath) -> Option<Result<String, String>> {
        let ttl = self.presign?;
        Some(
            self.s3
                .signed_url(reqwest::Method::GET, key, ttl)
                .await
                .map(|u| u.to_string())
                .map_err(|e| format!("cannot sign a URL for {key}: {e}")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_type_subfolder_name_and_refuse_escapes() {
        let o = ObjectFiles::from_url("s3://bucket/some/prefix/", None).unwrap();
        assert_eq!(o.describe(), "s3://bucket/some/prefix");
        assert_eq!(
            o.key("output", "", "a.png").unwrap().as_ref(),
            "some/prefix/output/a.png"
        );
        assert_eq!(
            o.key("input", "sub/dir", "b.png").unwrap().as_ref(),
            "some/prefix/input/sub/dir/b.png"
        );
        assert!(o.key("output", "..", "a.png").is_none());
        assert!(o.key("output", "", "../a.png").is_none());
        assert!(ObjectFiles::from_url("http://x", None).is_err());
        assert!(ObjectFiles::from_url("s3://", None).is_err());
    }
}
