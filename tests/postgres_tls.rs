//! TLS to PostgreSQL (`--store postgres://...?sslmode=...&sslrootcert=...`), against the
//! tests' own Debian PostgreSQL started with `ssl=on` and a certificate for `localhost` signed
//! by a throwaway CA (made with `openssl`). The store and the cluster's event bridge connect
//! through the same `tls::connect_params`, which is what is checked here, plus the store
//! itself (migrations over TLS) and the errors of each failing case.

use comfyrs::store::postgres::testing::TempPostgres;
use comfyrs::store::postgres::tls::{self, Verify};
use comfyrs::store::postgres::{PgOptions, PgStore};
use comfyrs::store::Nodes;
use tokio_postgres::config::SslMode;

/// Connects with `url` and says whether the session is encrypted (`pg_stat_ssl`).
fn encrypted(url: &str) -> Result<bool, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (config, tls) = tls::connect_params(url)?;
        let (client, conn) = config.connect(tls).await.map_err(|e| {
            let mut t = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                t.push_str(&format!(": {s}"));
                src = s.source();
            }
            t
        })?;
        tokio::spawn(conn);
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(row.get(0))
    })
}

#[test]
fn sslmodes_against_a_tls_server() {
    let server = TempPostgres::start_tls();
    let port = server.port;
    let ca = server.ca_cert();
    let other = server.other_ca_cert();
    let url = |host: &str, q: &str| format!("postgres://postgres@{host}:{port}/postgres?{q}");
    let root = format!("sslrootcert={}", ca.display());

    // Plain and encrypted sessions: what the URL asks for.
    assert!(!encrypted(&url("127.0.0.1", "sslmode=disable")).unwrap());
    assert!(encrypted(&url("127.0.0.1", "sslmode=prefer")).unwrap());
    assert!(encrypted(&url("127.0.0.1", "sslmode=require")).unwrap());
    assert!(
        encrypted(&url("127.0.0.1", "application_name=x")).unwrap(),
        "prefer is the default"
    );
    // The chain checked: the right CA passes, another one fails.
    assert!(encrypted(&url("localhost", &format!("sslmode=verify-full&{root}"))).unwrap());
    assert!(encrypted(&url("127.0.0.1", &format!("sslmode=verify-ca&{root}"))).unwrap());
    let e = encrypted(&url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", other.display()),
    ))
    .unwrap_err();
    assert!(e.contains("UnknownIssuer") || e.contains("issuer"), "{e}");
    let e = encrypted(&url(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={}", other.display()),
    ))
    .unwrap_err();
    assert!(e.contains("UnknownIssuer") || e.contains("issuer"), "{e}");
    // verify-full also checks the name: the certificate is for localhost, not 127.0.0.1.
    let e = encrypted(&url("127.0.0.1", &format!("sslmode=verify-full&{root}"))).unwrap_err();
    assert!(e.contains("NotValidForName") || e.contains("name"), "{e}");
    // libpq's rule: require with a root file checks the chain.
    let e = encrypted(&url(
        "127.0.0.1",
        &format!("sslmode=require&sslrootcert={}", other.display()),
    ))
    .unwrap_err();
    assert!(e.contains("UnknownIssuer") || e.contains("issuer"), "{e}");
    // A missing root file is named.
    let e = encrypted(&url(
        "localhost",
        "sslmode=verify-full&sslrootcert=/nonexistent/root.pem",
    ))
    .unwrap_err();
    assert!(e.contains("/nonexistent/root.pem"), "{e}");

    // The store over verify-full: migrations and queries run on encrypted sessions.
    let store = PgStore::connect(
        &url("localhost", &format!("sslmode=verify-full&{root}")),
        PgOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.backend(), "postgres");
    assert!(store.schema_version().unwrap() > 0);
    assert!(store.live_nodes().unwrap().is_empty());
    let err = PgStore::connect(
        &url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={}", other.display()),
        ),
        PgOptions::default(),
    )
    .err()
    .expect("an untrusted server certificate refuses the store");
    assert!(err.to_string().contains("no database connection"), "{err}");
}

#[test]
fn require_refuses_a_server_without_tls() {
    let server = TempPostgres::start();
    let url = |q: &str| format!("postgres://postgres@127.0.0.1:{}/postgres?{q}", server.port);
    assert!(
        !encrypted(&url("sslmode=prefer")).unwrap(),
        "prefer falls back to plain"
    );
    let e = encrypted(&url("sslmode=require")).unwrap_err();
    assert!(e.to_lowercase().contains("tls") || e.contains("SSL"), "{e}");
}

#[test]
fn libpq_parameters_are_taken_out_of_the_url() {
    let (rest, p) = tls::split_params(
        "postgres://u:p@db:5432/x?application_name=a&sslmode=verify-full&sslrootcert=%2Fca%20dir%2Froot.pem",
    )
    .unwrap();
    assert_eq!(rest, "postgres://u:p@db:5432/x?application_name=a");
    assert_eq!(p.mode, SslMode::Require);
    assert_eq!(p.verify, Verify::Full);
    assert_eq!(p.root_cert.as_deref(), Some("/ca dir/root.pem"));
    let (rest, p) = tls::split_params("postgres://db/x").unwrap();
    assert_eq!(rest, "postgres://db/x");
    assert_eq!((p.mode, p.verify), (SslMode::Prefer, Verify::None));
    let (_, p) = tls::split_params("postgres://db/x?sslmode=require&sslrootcert=/r.pem").unwrap();
    assert_eq!(p.verify, Verify::Ca);
    let (rest, p) = tls::split_params("host=db dbname=x sslmode=verify-ca").unwrap();
    assert_eq!(rest, "host=db dbname=x");
    assert_eq!(p.verify, Verify::Ca);
    let e = tls::split_params("postgres://db/x?sslmode=strict").unwrap_err();
    assert!(e.contains("verify-full"), "{e}");
    let e = tls::split_params("postgres://db/x?sslcert=/c.pem").unwrap_err();
    assert!(e.contains("sslkey"), "{e}");
    let (_, p) =
        tls::split_params("postgres://db/x?sslmode=verify-full&sslrootcert=system").unwrap();
    assert!(tls::client_config(&p).is_ok(), "system roots are built in");
}
