//! Running comfyrs as many processes over one PostgreSQL store (`comfyrs serve --store
//! postgres://... --role api|worker|all`).
//!
//! - [`caps`]: what a job needs and a node has (capability matching, model affinity).
//! - [`events`]: execution events across processes (PostgreSQL `LISTEN/NOTIFY`), so a client
//!   gets its WebSocket messages, progress and webhooks whichever node it talks to.
//!
//! The queue and leases themselves live in the store ([`crate::store::postgres`]).

pub mod caps;
pub mod events;

/// What a process does in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Takes requests and serves reads; runs no jobs.
    Api,
    /// Runs jobs; serves only what an operator needs (health, /system_stats).
    Worker,
    /// Both (the single-process default).
    #[default]
    All,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role, String> {
        match s {
            "api" => Ok(Role::Api),
            "worker" => Ok(Role::Worker),
            "all" => Ok(Role::All),
            other => Err(format!("--role {other:?}: use api, worker or all")),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Worker => "worker",
            Role::All => "all",
        }
    }
    pub fn runs_jobs(self) -> bool {
        self != Role::Api
    }
}
