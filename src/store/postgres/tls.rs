//! TLS to PostgreSQL: the `--store` URL's libpq parameters `sslmode`, `sslrootcert`, `sslcert`
//! and `sslkey`, on rustls (with `ring`) through tokio-postgres-rustls.
//!
//! tokio-postgres itself knows only `sslmode=disable|prefer|require` and no certificate
//! parameters, so they are taken out of the URL here and turned into a rustls configuration,
//! with libpq's meanings:
//!
//! | `sslmode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | never | - |
//! | `allow`, `prefer` (default) | when the server offers TLS | no |
//! | `require` | always | no; with `sslrootcert` given, as `verify-ca` (libpq's rule) |
//! | `verify-ca` | always | signed by a root of `sslrootcert` |
//! | `verify-full` | always | as `verify-ca`, and issued for the host connected to |
//!
//! `sslrootcert` is a PEM file of trusted roots, or `system` for the Mozilla roots built in
//! (webpki-roots); without it, `verify-*` use `~/.postgresql/root.crt` as libpq does and fail
//! with the reason when that file does not exist. `sslcert`/`sslkey` (PEM) present a client
//! certificate.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_postgres::config::SslMode;
pub use tokio_postgres_rustls::MakeRustlsConnect;

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Encryption only (`prefer`, `require`).
    None,
    /// The chain up to a trusted root (`verify-ca`).
    Ca,
    /// The chain and the host name (`verify-full`).
    Full,
}

/// The TLS part of a `--store` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsParams {
    pub mode: SslMode,
    pub verify: Verify,
    pub root_cert: Option<String>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Splits the libpq TLS parameters off `url` (URL or `key=value` form): the rest, as
/// tokio-postgres reads it, and what they ask for.
pub fn split_params(url: &str) -> Result<(String, TlsParams), String> {
    let mut found: Vec<(String, String)> = vec![];
    let wanted = |k: &str| matches!(k, "sslmode" | "sslrootcert" | "sslcert" | "sslkey");
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_string(),
            Some((base, query)) => {
                let mut kept = vec![];
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    if wanted(k) {
                        found.push((k.to_string(), percent_decode(v)?));
                    } else {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        // key=value form (values without spaces or quotes).
        let mut kept = vec![];
        for tok in url.split_whitespace() {
            match tok.split_once('=') {
                Some((k, v)) if wanted(k) => found.push((k.to_string(), v.to_string())),
                _ => kept.push(tok),
            }
        }
        kept.join(" ")
    };
    let get = |k: &str| {
        found
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let root_cert = get("sslrootcert");
    let (mode, verify) = match get("sslmode").as_deref().unwrap_or("prefer") {
        "disable" => (SslMode::Disable, Verify::None),
        "allow" | "prefer" => (SslMode::Prefer, Verify::None),
        "require" if root_cert.is_some() => (SslMode::Require, Verify::Ca),
        "require" => (SslMode::Require, Verify::None),
        "verify-ca" => (SslMode::Require, Verify::Ca),
        "verify-full" => (SslMode::Require, Verify::Full),
        other => {
            return Err(format!(
                "sslmode={other}: use disable, allow, prefer, require, verify-ca or verify-full"
            ))
        }
    };
    let params = TlsParams {
        mode,
        verify,
        root_cert,
        client_cert: get("sslcert").map(PathBuf::from),
        client_key: get("sslkey").map(PathBuf::from),
    };
    if params.client_cert.is_some() != params.client_key.is_some() {
        return Err("sslcert and sslkey go together: give both or neither".into());
    }
    Ok((rest, params))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).map_err(|e| e.to_string())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad escape %{hex}"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|e| e.to_string())
}

fn load_roots(root_cert: Option<&str>) -> Result<RootCertStore, String> {
    let path = match root_cert {
        Some("system") => {
            return Ok(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
        }
        Some(p) => PathBuf::from(p),
        None => {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            let p = home.join(".postgresql/root.crt");
            if !p.is_file() {
                return Err(format!(
                    "certificate verification needs trusted roots: {} does not exist; give \
                     sslrootcert=FILE (PEM) or sslrootcert=system, or use sslmode=require to \
                     encrypt without verifying",
                    p.display()
                ));
            }
            p
        }
    };
    let mut roots = RootCertStore::empty();
    let certs = read_certs(&path)?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "sslrootcert {}: no usable certificate in it",
            path.display()
        ));
    }
    Ok(roots)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not PEM certificates ({e})", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// The rustls side of `params`.
pub fn client_config(params: &TlsParams) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn ServerCertVerifier> = match params.verify {
        Verify::None => Arc::new(NoVerify(provider)),
        Verify::Ca | Verify::Full => {
            let roots = load_roots(params.root_cert.as_deref())?;
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| e.to_string())?;
            if params.verify == Verify::Full {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&params.client_cert, &params.client_key) {
        (Some(cert), Some(key)) => {
            let certs = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("sslkey {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("sslcert/sslkey: {e}"))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// The connection settings and TLS connector for a `--store` URL.
pub fn connect_params(url: &str) -> Result<(tokio_postgres::Config, MakeRustlsConnect), String> {
    let (rest, params) = split_params(url)?;
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e| format!("{e}"))?;
    config.ssl_mode(params.mode);
    let tls = MakeRustlsConnect::new(client_config(&params)?);
    Ok((config, tls))
}

/// `sslmode=prefer|require`: the connection is encrypted; the certificate is not checked
/// (the handshake's signatures still are).
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must lead to a trusted root; the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain is checked before the name: a name error means the chain is good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
