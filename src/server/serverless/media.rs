//! Media inputs (spec §1, §6): a value given as an `https://` URL, a `data:...;base64,` URI or
//! raw base64 becomes a file in the input folder named by its content hash, and the input
//! gets that file name.
//!
//! URL fetching is guarded against SSRF: only https (http when allowed), every host resolved
//! and refused if any address is loopback, private, link-local, cloud-metadata or otherwise
//! not public (unless in the explicit allow-list), each redirect re-checked, at most
//! `max_redirects`, and the body capped in size and time. The check runs inside the HTTP
//! client's resolver, so the address checked is the address connected to.

use super::errors::{code, ServerlessError};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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

/// A network in the allow-list.
#[derive(Debug, Clone, Copy)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    fn parse(s: &str) -> Option<Net> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            max
        } else {
            p.trim().parse().ok()?
        };
        (prefix <= max).then_some(Net { addr, prefix })
    }
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}

/// Why an address may not be fetched from, or `None` for a public address.
pub fn non_public_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_reason(v4);
            }
            let seg = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if seg[0] & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if seg[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if seg[0] & 0xff00 == 0xff00 {
                Some("multicast")
            } else if seg[0] == 0x64 && seg[1] == 0xff9b {
                // NAT64: judge the embedded IPv4 address.
                let o = v6.octets();
                v4_reason(Ipv4Addr::new(o[12], o[13], o[14], o[15]))
            } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
                Some("documentation")
            } else {
                None
            }
        }
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        Some("cloud metadata")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("shared (carrier-grade NAT)")
    } else if ip.is_broadcast() || ip.is_multicast() || o[0] >= 240 {
        Some("multicast/reserved")
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        Some("IETF protocol assignment")
    } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
        Some("benchmarking")
    } else if ip.is_documentation() {
        Some("documentation")
    } else {
        None
    }
}

/// The address check with the allow-list applied.
#[derive(Debug, Clone)]
struct AddressGuard {
    allow: Vec<Net>,
}

impl AddressGuard {
    fn check(&self, host: &str, ip: IpAddr) -> Result<(), MediaError> {
        if self.allow.iter().any(|n| n.contains(ip)) {
            return Ok(());
        }
        match non_public_reason(ip) {
            None => Ok(()),
            Some(why) if host.parse::<IpAddr>().is_ok() || host.starts_with('[') => {
                Err(MediaError::Refused(format!(
                    "{host} is a non-public address ({why}); fetching from it is refused"
                )))
            }
            Some(why) => Err(MediaError::Refused(format!(
                "{host} resolves to {ip}, a non-public address ({why}); fetching from it is refused"
            ))),
        }
    }

    /// Scheme and (for IP literals, which skip the resolver) address of one URL.
    fn check_url(&self, url: &reqwest::Url, allow_http: bool) -> Result<(), MediaError> {
        match url.scheme() {
            "https" => {}
            "http" if allow_http => {}
            other => {
                return Err(MediaError::Refused(format!(
                    "only https:// URLs are fetched (got {other}://)"
                )))
            }
        }
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check(&ip.to_string(), IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check(&format!("[{ip}]"), IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => Ok(()),
            None => Err(MediaError::Refused(format!("URL {url} has no host"))),
        }
    }
}

/// Resolves names and refuses any that has a non-public address.
struct GuardedResolver {
    guard: Arc<AddressGuard>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| MediaError::Fetch(format!("cannot resolve {host}: {e}")))?
                .collect();
            if addrs.is_empty() {
                return Err(MediaError::Fetch(format!("{host} has no address")).into());
            }
            for a in &addrs {
                guard.check(&host, a.ip())?;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                Box::new(addrs.into_iter()) as reqwest::dns::Addrs
            )
        })
    }
}

/// Fetches and decodes media values and stores them in the input folder.
pub struct MediaFetcher {
    policy: MediaPolicy,
    guard: Arc<AddressGuard>,
    client: reqwest::Client,
}

impl MediaFetcher {
    pub fn new(policy: MediaPolicy) -> MediaFetcher {
        let allow = policy
            .allow_networks
            .iter()
            .filter_map(|s| {
                let n = Net::parse(s);
                if n.is_none() {
                    tracing::warn!(
                        "ignoring media allow-list entry {s:?}: expected IP or IP/prefix"
                    );
                }
                n
            })
            .collect();
        let guard = Arc::new(AddressGuard { allow });
        let redirect_guard = guard.clone();
        let (max_redirects, allow_http) = (policy.max_redirects, policy.allow_http);
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                guard: guard.clone(),
            }))
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
        self.guard.check_url(&parsed, self.policy.allow_http)?;
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
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(m) = s.downcast_ref::<MediaError>() {
            return m.clone();
        }
        // io::Error hides a wrapped error from `source()`.
        if let Some(m) = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<MediaError>())
        {
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
    fn address_classes() {
        let r = |s: &str| non_public_reason(s.parse().unwrap());
        assert_eq!(r("127.0.0.1"), Some("loopback"));
        assert_eq!(r("10.1.2.3"), Some("private"));
        assert_eq!(r("172.16.0.1"), Some("private"));
        assert_eq!(r("192.168.1.1"), Some("private"));
        assert_eq!(r("169.254.169.254"), Some("cloud metadata"));
        assert_eq!(r("169.254.1.1"), Some("link-local"));
        assert_eq!(r("0.0.0.0"), Some("unspecified"));
        assert_eq!(r("100.64.0.1"), Some("shared (carrier-grade NAT)"));
        assert_eq!(r("::1"), Some("loopback"));
        assert_eq!(r("::ffff:10.0.0.1"), Some("private"));
        assert_eq!(r("fd00:ec2::254"), Some("private (unique local)"));
        assert_eq!(r("fe80::1"), Some("link-local"));
        assert_eq!(r("64:ff9b::a9fe:a9fe"), Some("cloud metadata"));
        assert_eq!(r("93.184.216.34"), None);
        assert_eq!(r("2606:4700::1111"), None);
    }

    #[test]
    fn allow_list_networks() {
        let n = Net::parse("127.0.0.1/32").unwrap();
        assert!(n.contains("127.0.0.1".parse().unwrap()));
        assert!(!n.contains("127.0.0.2".parse().unwrap()));
        let n = Net::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.200.1.1".parse().unwrap()));
        assert!(Net::parse("10.0.0.0/33").is_none());
        assert!(Net::parse("::1").unwrap().contains("::1".parse().unwrap()));
    }

    #[test]
    fn media_values() {
        assert!(MediaFetcher::is_media_value("https://example.com/a.png"));
        assert!(MediaFetcher::is_media_value("data:image/png;base64,AAAA"));
        assert!(!MediaFetcher::is_media_value("example.png"));
        assert!(!MediaFetcher::is_media_value("short"));
        assert!(MediaFetcher::is_media_value(&"QUJD".repeat(20)));
    }
}
