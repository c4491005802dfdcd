//! Media inputs (spec §1, §6): a value given as an `https://` URL, a `data:...;base64,` URI or
//! raw base64 becomes a file in the input folder named by its content hash, and the input
//! gets that file name.
//!
//! URL fetching is guarded against SSRF ([`super::ssrf`]): only https (http when allowed),
//! every host resolved and refused if any address is loopback, private, link-local,
//! cloud-metadata or otherwise not public (unless in the explicit allow-list), each redirect
//! re-checked, at most `max_redirects`, and the body capped in size and time.

use super::errors::{code, ServerlessError};
use super::ssrf::{guard_error_in, GuardError, UrlGuard};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What URL fetching may do.
#[derive(Debug, Clone)]
pub struct MediaPolicy {
    /// Accept `http://` URLs too (default: https only).
    pub allow_http: bool,
    /// Networks exempt from the address check (`"127.0.0.1/32"`, `"10.0.0.0/8"`): for tests
    /// and private deployments. Empty by default.
    pub allow_networks: Vec<String>,
    pub max_bytes: usize,
    pub timeout: Duration,
    pub max_redirects: usize,
}

impl Default for MediaPolicy {
    fn default() -> Self {
        MediaPolicy {
            allow_http: false,
            allow_networks: Vec::new(),
            max_bytes: 50 * 1024 * 1024,
            timeout: Duration::from_secs(30),
            max_redirects: 5,
        }
    }
}

impl From<GuardError> for MediaError {
    fn from(e: GuardError) -> Self {
        match e {
            GuardError::Refused(m) => MediaError::Refused(m),
            GuardError::Unresolvable(m) => MediaError::Fetch(m),
        }
    }
}

/// Why a media value could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MediaError {
    /// The guard refused the URL (scheme, address, redirects).
    #[error("{0}")]
    Refused(String),
    /// Network trouble, an error status, a size or time cap.
    #[error("{0}")]
    Fetch(String),
    /// Not decodable, or not an image.
    #[error("{0}")]
    Invalid(String),
}

/// Fetches and decodes media values and stores them in the input folder.
pub struct MediaFetcher {
    policy: MediaPolicy,
    guard: Arc<UrlGuard>,
    client: reqwest::Client,
}

impl MediaFetcher {
    pub fn new(policy: MediaPolicy) -> MediaFetcher {
        let guard = Arc::new(UrlGuard::new(&policy.allow_networks, "fetching from it"));
        let redirect_guard = guard.clone();
        let (max_redirects, allow_http) = (policy.max_redirects, policy.allow_http);
        let client = reqwest::Client::builder()
            .dns_resolver(guard.resolver())
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > max_redirects {
                    return attempt.error(MediaError::Refused(format!(
                        "more than {max_redirects} redirects"
                    )));
                }
                match redirect_guard.check_url(attempt.url(), allow_http) {
                    Ok(()) => attempt.follow(),
                    Err(e) => {
                        let e = MediaError::Refused(format!(
                            "redirect to {} refused: {e}",
                            attempt.url()
                        ));
                        attempt.error(e)
                    }
                }
            }))
            .timeout(policy.timeout)
            .no_proxy()
            .user_agent(concat!("comfyrs/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the media HTTP client builds");
        MediaFetcher {
            policy,
            guard,
            client,
        }
    }

    /// Whether a string value is media to fetch or decode (rather than a file name).
    pub fn is_media_value(s: &str) -> bool {
        let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
        lower.starts_with("https://")
            || lower.starts_with("http://")
            || lower.starts_with("data:")
            || looks_like_base64(s)
    }

    /// Fetches a URL under the guard and caps.
    pub async fn fetch(&self, url: &str) -> Result<Vec<u8>, MediaError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| MediaError::Invalid(format!("not a URL ({e}): {url:?}")))?;
        self.guard
            .check_url(&parsed, self.policy.allow_http)
            .map_err(MediaError::from)?;
        let mut resp = self
            .client
            .get(parsed)
            .send()
            .await
            .map_err(|e| explain(url, &e, self.policy.timeout))?;
        if !resp.status().is_success() {
            return Err(MediaError::Fetch(format!(
                "{url} answered {}",
                resp.status()
            )));
        }
        let cap = self.policy.max_bytes;
        let too_big =
            || MediaError::Fetch(format!("{url} is larger than the limit of {cap} bytes"));
        if resp.content_length().is_some_and(|n| n > cap as u64) {
            return Err(too_big());
        }
        let mut out = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| explain(url, &e, self.policy.timeout))?
        {
            if out.len() + chunk.len() > cap {
                return Err(too_big());
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// The bytes of a media value: fetched (URL) or decoded (data URI, raw base64).
    pub async fn bytes_of(&self, value: &str) -> Result<Vec<u8>, MediaError> {
        let lower = value.get(..8).unwrap_or(value).to_ascii_lowercase();
        if lower.starts_with("https://") || lower.starts_with("http://") {
            return self.fetch(value).await;
        }
        let b64 = if lower.starts_with("data:") {
            let (head, data) = value.split_once(',').ok_or_else(|| {
                MediaError::Invalid("data URI without a ',' before the data".into())
            })?;
            if !head.to_ascii_lowercase().ends_with(";base64") {
                return Err(MediaError::Invalid(
                    "only base64 data URIs are accepted (data:image/png;base64,...)".into(),
                ));
            }
            data
        } else {
            value
        };
        let bytes = decode_base64(b64)?;
        if bytes.len() > self.policy.max_bytes {
            return Err(MediaError::Invalid(format!(
                "decoded media is larger than the limit of {} bytes",
                self.policy.max_bytes
            )));
        }
        Ok(bytes)
    }

    /// Fetches/decodes an image value and stores it in `input_dir` as `<sha256>.<ext>`;
    /// returns the file name.
    pub async fn store_image(&self, value: &str, input_dir: &Path) -> Result<String, MediaError> {
        let bytes = self.bytes_of(value).await?;
        let ext =
            match image::guess_format(&bytes) {
                Ok(image::ImageFormat::Png) => "png",
                Ok(image::ImageFormat::Jpeg) => "jpg",
                Ok(image::ImageFormat::WebP) => "webp",
                Ok(image::ImageFormat::Gif) => "gif",
                Ok(image::ImageFormat::Bmp) => "bmp",
                Ok(image::ImageFormat::Tiff) => "tiff",
                _ => return Err(MediaError::Invalid(
                    "the media is not an image this server reads (PNG, JPEG, WebP, GIF, BMP, TIFF)"
                        .into(),
                )),
            };
        let hash = hex(&Sha256::digest(&bytes));
        let name = format!("{}.{ext}", &hash[..32]);
        let path: PathBuf = input_dir.join(&name);
        if !path.exists() {
            let write = || -> std::io::Result<()> {
                std::fs::create_dir_all(input_dir)?;
                let tmp = input_dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4()));
                std::fs::write(&tmp, &bytes)?;
                std::fs::rename(&tmp, &path)
            };
            write().map_err(|e| MediaError::Fetch(format!("cannot store the media: {e}")))?;
        }
        Ok(name)
    }
}

/// Replaces every media value of an upload input (`image_upload` in its declaration, as
/// LoadImage's `image`) by the name of the stored file. An error names the node and input.
pub async fn resolve_media_inputs(
    fetcher: &MediaFetcher,
    registry: &crate::node::Registry,
    input_dir: &Path,
    workflow: &mut crate::workflow::Workflow,
) -> Result<(), ServerlessError> {
    for (node_id, node) in workflow.nodes.iter_mut() {
        let Some(schema) = registry.schema(&node.class_type) else {
            continue;
        };
        for (name, value) in node.inputs.iter_mut() {
            let is_upload = schema
                .input_spec(name)
                .is_some_and(|s| s.options.get("image_upload") == Some(&serde_json::json!(true)));
            let Some(text) = value.as_str().filter(|_| is_upload) else {
                continue;
            };
            if !MediaFetcher::is_media_value(text) {
                continue;
            }
            match fetcher.store_image(text, input_dir).await {
                Ok(file) => *value = serde_json::Value::String(file),
                Err(e) => return Err(media_error(node_id, &node.class_type, name, &e)),
            }
        }
    }
    Ok(())
}

/// A 400 naming the node and input: `MEDIA_REFUSED` (the SSRF guard), `MEDIA_FETCH_FAILED`,
/// `INVALID_MEDIA`.
pub fn media_error(
    node_id: &str,
    class_type: &str,
    input: &str,
    e: &MediaError,
) -> ServerlessError {
    let code = match e {
        MediaError::Refused(_) => code::MEDIA_REFUSED,
        MediaError::Fetch(_) => code::MEDIA_FETCH_FAILED,
        MediaError::Invalid(_) => code::INVALID_MEDIA,
    };
    ServerlessError::bad_request(
        code,
        format!("node {node_id} ({class_type}) input {input}: {e}"),
    )
    .with_details(serde_json::json!({"errors": [{
        "node_id": node_id, "class_type": class_type, "input": input, "reason": e.to_string()
    }]}))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn looks_like_base64(s: &str) -> bool {
    s.len() >= 64
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_' | b'\n' | b'\r')
        })
}

fn decode_base64(s: &str) -> Result<Vec<u8>, MediaError> {
    let clean: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    engines
        .iter()
        .find_map(|e| e.decode(&clean).ok())
        .ok_or_else(|| MediaError::Invalid("the value is not valid base64".into()))
}

/// The clearest message for a reqwest error: our guard's refusal when it is one.
fn explain(url: &str, e: &reqwest::Error, timeout: Duration) -> MediaError {
    if let Some(g) = guard_error_in(e) {
        return g.into();
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(m) = s.downcast_ref::<MediaError>() {
            return m.clone();
        }
        src = s.source();
    }
    if e.is_timeout() {
        return MediaError::Fetch(format!(
            "{url} did not answer within {} s",
            timeout.as_secs_f64()
        ));
    }
    MediaError::Fetch(format!("cannot fetch {url}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_values() {
        assert!(MediaFetcher::is_media_value("https://example.com/a.png"));
        assert!(MediaFetcher::is_media_value("data:image/png;base64,AAAA"));
        assert!(!MediaFetcher::is_media_value("example.png"));
        assert!(!MediaFetcher::is_media_value("short"));
        assert!(MediaFetcher::is_media_value(&"QUJD".repeat(20)));
    }
}
