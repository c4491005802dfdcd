//! The SSRF guard (spec §6) shared by everything that connects to a URL a client gave: media
//! inputs ([`super::media`]) and webhook receivers ([`super::webhooks`]).
//!
//! An address is refused when it is loopback, private, link-local, cloud metadata or
//! otherwise not public, unless it lies in the explicit allow-list (tests, private setups).
//! IP literals are checked before connecting; host names are checked inside the HTTP
//! client's resolver ([`UrlGuard::resolver`]), so the address checked is the address
//! connected to, and a name re-resolved later (DNS can change) is checked again.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

/// Why the guard would not connect.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GuardError {
    /// Scheme or address refused.
    #[error("{0}")]
    Refused(String),
    /// The host name does not resolve.
    #[error("{0}")]
    Unresolvable(String),
}

/// A network in the allow-list.
#[derive(Debug, Clone, Copy)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// `"127.0.0.1"`, `"10.0.0.0/8"`, `"::1"`; `None` when malformed.
    pub fn parse(s: &str) -> Option<Net> {
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

    pub fn contains(&self, ip: IpAddr) -> bool {
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

/// Why an address may not be connected to, or `None` for a public address.
pub fn non_public_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

/// IPv6: only global unicast (`2000::/3`) can be public. Everything else (IPv4-compatible
/// `::/96`, IPv4-translated `::ffff:0:0/96`, discard `100::/64`, site-local `fec0::/10`,
/// unique local, link-local, multicast) is refused, except the two forms whose IPv4 address
/// is the real destination and can be judged: IPv4-mapped `::ffff:0:0/96` and NAT64
/// `64:ff9b::/96`. Inside `2000::/3`, the tunnels that carry an IPv4 address a relay will
/// reach (6to4 `2002::/16`, Teredo `2001::/32`) and the special-purpose blocks are refused.
fn v6_reason(v6: std::net::Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return v4_reason(v4);
    }
    let seg = v6.segments();
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        // NAT64 (well-known prefix): judge the embedded IPv4 address.
        let o = v6.octets();
        return v4_reason(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    if v6.is_loopback() {
        Some("loopback")
    } else if v6.is_unspecified() {
        Some("unspecified")
    } else if seg[0..6] == [0, 0, 0, 0, 0, 0] {
        Some("IPv4-compatible (deprecated)")
    } else if seg[0..5] == [0, 0, 0, 0, 0xffff] && seg[5] == 0 {
        Some("IPv4-translated")
    } else if seg[0] & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else if seg[0] & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if seg[0] & 0xffc0 == 0xfec0 {
        Some("site-local (deprecated)")
    } else if seg[0] & 0xff00 == 0xff00 {
        Some("multicast")
    } else if seg[0] & 0xe000 != 0x2000 {
        // Outside global unicast: discard-only 100::/64, local-use NAT64, unassigned space.
        Some("not global unicast")
    } else if seg[0] == 0x2002 {
        Some("6to4 tunnel (embeds an IPv4 address)")
    } else if seg[0] == 0x2001 && seg[1] == 0 {
        Some("Teredo tunnel (embeds an IPv4 address)")
    } else if seg[0] == 0x2001 && seg[1] < 0x0200 {
        Some("IETF protocol assignment")
    } else if (seg[0] == 0x2001 && seg[1] == 0x0db8) || (seg[0] == 0x3fff && seg[1] < 0x1000) {
        Some("documentation")
    } else {
        None
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
    } else if o[0] == 192 && o[1] == 88 && o[2] == 99 {
        Some("6to4 relay anycast")
    } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
        Some("benchmarking")
    } else if ip.is_documentation() {
        Some("documentation")
    } else {
        None
    }
}

/// The address check with an allow-list applied.
#[derive(Debug, Clone)]
pub struct UrlGuard {
    allow: Vec<Net>,
    /// What is refused, for messages: "fetching from it", "sending webhooks to it".
    action: &'static str,
}

impl UrlGuard {
    /// A guard exempting `allow_networks` (malformed entries are logged and ignored).
    pub fn new(allow_networks: &[String], action: &'static str) -> UrlGuard {
        let allow = allow_networks
            .iter()
            .filter_map(|s| {
                let n = Net::parse(s);
                if n.is_none() {
                    tracing::warn!("ignoring allow-list entry {s:?}: expected IP or IP/prefix");
                }
                n
            })
            .collect();
        UrlGuard { allow, action }
    }

    /// Refuses `ip` (the address of `host`) unless public or allowed.
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), GuardError> {
        if self.allow.iter().any(|n| n.contains(ip)) {
            return Ok(());
        }
        let action = self.action;
        match non_public_reason(ip) {
            None => Ok(()),
            Some(why) if host.parse::<IpAddr>().is_ok() || host.starts_with('[') => {
                Err(GuardError::Refused(format!(
                    "{host} is a non-public address ({why}); {action} is refused"
                )))
            }
            Some(why) => Err(GuardError::Refused(format!(
                "{host} resolves to {ip}, a non-public address ({why}); {action} is refused"
            ))),
        }
    }

    /// The scheme (`https`, or `http` too when `allow_http`), and the address of an IP
    /// literal host (literals skip the resolver). Host names pass here; they are checked
    /// when resolved.
    pub fn check_url(&self, url: &reqwest::Url, allow_http: bool) -> Result<(), GuardError> {
        match url.scheme() {
            "https" => {}
            "http" if allow_http => {}
            other => {
                return Err(GuardError::Refused(format!(
                    "only https:// URLs are fetched (got {other}://)"
                )))
            }
        }
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check_ip(&ip.to_string(), IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check_ip(&format!("[{ip}]"), IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => Ok(()),
            None => Err(GuardError::Refused(format!("URL {url} has no host"))),
        }
    }

    /// Resolves `host` and refuses it if *any* of its addresses is refused; returns the
    /// addresses.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, GuardError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| GuardError::Unresolvable(format!("cannot resolve {host}: {e}")))?
            .collect();
        if addrs.is_empty() {
            return Err(GuardError::Unresolvable(format!("{host} has no address")));
        }
        for a in &addrs {
            self.check_ip(host, a.ip())?;
        }
        Ok(addrs)
    }

    /// [`UrlGuard::check_url`], then the host name's addresses as they resolve now.
    pub async fn check_url_resolved(
        &self,
        url: &reqwest::Url,
        allow_http: bool,
    ) -> Result<(), GuardError> {
        self.check_url(url, allow_http)?;
        if let Some(url::Host::Domain(d)) = url.host() {
            self.resolve(d, url.port_or_known_default().unwrap_or(0))
                .await?;
        }
        Ok(())
    }

    /// A resolver for `reqwest::ClientBuilder::dns_resolver` that applies this guard to
    /// every name the client connects to.
    pub fn resolver(self: &Arc<Self>) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver {
            guard: self.clone(),
        })
    }
}

/// A DNS resolver that refuses names with a refused address (see [`UrlGuard::resolver`]).
pub struct GuardedResolver {
    guard: Arc<UrlGuard>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = guard.resolve(&host, 0).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                Box::new(addrs.into_iter()) as reqwest::dns::Addrs
            )
        })
    }
}

/// The guard's own error inside a client error (the resolver's refusal), if that is what
/// failed the request.
pub fn guard_error_in(e: &(dyn std::error::Error + 'static)) -> Option<GuardError> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(g) = s.downcast_ref::<GuardError>() {
            return Some(g.clone());
        }
        // io::Error hides a wrapped error from `source()`.
        if let Some(g) = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<GuardError>())
        {
            return Some(g.clone());
        }
        src = s.source();
    }
    None
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

    /// The IPv6 forms that embed or reach IPv4 (issue 18, defect 7), and the deprecated and
    /// special blocks: none is public.
    #[test]
    fn ipv6_forms_that_embed_ipv4_are_refused() {
        let r = |s: &str| non_public_reason(s.parse().unwrap());
        for (addr, why) in [
            ("::7f00:2", "IPv4-compatible (deprecated)"),
            ("::127.0.0.1", "IPv4-compatible (deprecated)"),
            ("::a9fe:a9fe", "IPv4-compatible (deprecated)"),
            ("2002:7f00:1::", "6to4 tunnel (embeds an IPv4 address)"),
            ("2002:5db8:d822::1", "6to4 tunnel (embeds an IPv4 address)"),
            (
                "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                "Teredo tunnel (embeds an IPv4 address)",
            ),
            ("fec0::1", "site-local (deprecated)"),
            ("feff::1", "site-local (deprecated)"),
            ("100::1", "not global unicast"),
            ("::ffff:0:7f00:1", "IPv4-translated"),
            ("::ffff:0:a9fe:a9fe", "IPv4-translated"),
            ("64:ff9b:1::7f00:1", "not global unicast"),
            ("64:ff9b::7f00:1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("2001:db8::1", "documentation"),
            ("2001:2::1", "IETF protocol assignment"),
            ("4000::1", "not global unicast"),
            ("ff02::1", "multicast"),
        ] {
            assert_eq!(r(addr), Some(why), "{addr}");
        }
        assert_eq!(r("192.88.99.1"), Some("6to4 relay anycast"));
        // Public addresses stay public.
        assert_eq!(r("2a00:1450:4001::200e"), None);
        assert_eq!(r("64:ff9b::5db8:d822"), None);
        assert_eq!(r("::ffff:93.184.216.34"), None);
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
}
