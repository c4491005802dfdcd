//! Pending and past webhook deliveries, in the job store so a restart loses none.
//!
//! One row per event: its `id` is the Standard Webhooks `webhook-id`, stable across retries
//! (`INSERT OR IGNORE` makes recording an event idempotent).

use super::{now_ms, Result, SqliteStore, WebhookLog};
use rusqlite::{params, OptionalExtension};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id              TEXT PRIMARY KEY,
    request_id      TEXT NOT NULL,
    url             TEXT NOT NULL,
    body            TEXT NOT NULL,
    final           INTEGER NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    delivered_at    INTEGER,
    last_error      TEXT
);
CREATE INDEX IF NOT EXISTS webhook_due ON webhook_deliveries(state, next_attempt_at);
CREATE INDEX IF NOT EXISTS webhook_request ON webhook_deliveries(request_id);
"#;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    /// Gave up (too old).
    Failed,
}

impl DeliveryState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }
    pub(crate) fn parse(s: &str) -> DeliveryState {
        match s {
            "delivered" => DeliveryState::Delivered,
            "failed" => DeliveryState::Failed,
            _ => DeliveryState::Pending,
        }
    }
}

/// One webhook event and its delivery record.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub request_id: String,
    pub url: String,
    pub body: String,
    /// The request's last event (succeeded/failed/cancelled).
    pub is_final: bool,
    pub state: DeliveryState,
    pub attempts: u32,
    pub created_at: i64,
    pub next_attempt_at: i64,
    pub delivered_at: Option<i64>,
    pub last_error: Option<String>,
}

const SELECT: &str = "SELECT id, request_id, url, body, final, state, attempts, created_at,
    next_attempt_at, delivered_at, last_error FROM webhook_deliveries";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        request_id: r.get(1)?,
        url: r.get(2)?,
        body: r.get(3)?,
        is_final: r.get::<_, i64>(4)? != 0,
        state: DeliveryState::parse(&r.get::<_, String>(5)?),
        attempts: r.get::<_, i64>(6)? as u32,
        created_at: r.get(7)?,
        next_attempt_at: r.get(8)?,
        delivered_at: r.get(9)?,
        last_error: r.get(10)?,
    })
}

impl WebhookLog for SqliteStore {
    /// Records an event to deliver now. False when this event id was already recorded.
    fn add_delivery(
        &self,
        id: &str,
        request_id: &str,
        url: &str,
        body: &str,
        is_final: bool,
    ) -> Result<bool> {
        let now = now_ms();
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO webhook_deliveries(id, request_id, url, body, final,
                 created_at, next_attempt_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            params![id, request_id, url, body, is_final as i64, now],
        )?;
        Ok(n > 0)
    }

    /// Pending deliveries due at `now_ms`, oldest first.
    fn due_deliveries(&self, now: i64, limit: usize) -> Result<Vec<Delivery>> {
        let c = self.conn();
        let mut st = c.prepare(&format!(
            "{SELECT} WHERE state = 'pending' AND next_attempt_at <= ?1
             ORDER BY next_attempt_at, created_at LIMIT ?2"
        ))?;
        let rows = st.query_map(params![now, limit as i64], row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// When the next pending delivery is due, if any.
    fn next_delivery_at(&self) -> Result<Option<i64>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT MIN(next_attempt_at) FROM webhook_deliveries WHERE state = 'pending'",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()?
            .flatten())
    }

    /// Holds a pending delivery back until `until_ms` while an attempt is in flight (if the
    /// process dies mid-attempt, it is retried after that).
    fn lease_delivery(&self, id: &str, until_ms: i64) -> Result<()> {
        self.conn().execute(
            "UPDATE webhook_deliveries SET next_attempt_at = ?2 WHERE id = ?1",
            params![id, until_ms],
        )?;
        Ok(())
    }

    /// Every delivery of a request, in creation order.
    fn deliveries_of(&self, request_id: &str) -> Result<Vec<Delivery>> {
        let c = self.conn();
        let mut st = c.prepare(&format!(
            "{SELECT} WHERE request_id = ?1 ORDER BY created_at, rowid"
        ))?;
        let rows = st.query_map([request_id], row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records one attempt: delivered, retry at `next_at`, or given up.
    fn delivery_attempted(
        &self,
        id: &str,
        state: DeliveryState,
        next_at: i64,
        error: Option<&str>,
    ) -> Result<()> {
        let now = now_ms();
        self.conn().execute(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, state = ?2,
                 next_attempt_at = ?3, last_error = ?4,
                 delivered_at = CASE WHEN ?2 = 'delivered' THEN ?5 ELSE delivered_at END
             WHERE id = ?1",
            params![id, state.as_str(), next_at, error, now],
        )?;
        Ok(())
    }

    /// Finished jobs that asked for a webhook (`extra_data.serverless.webhook`) but have no
    /// final event recorded, finished after `since_ms`: events a crash or a lagging listener
    /// missed.
    fn finished_without_final_webhook(&self, since_ms: i64) -> Result<Vec<String>> {
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT id FROM jobs
             WHERE status IN ('success', 'failed', 'interrupted', 'cancelled')
               AND finished_at >= ?1
               AND json_extract(extra_data, '$.serverless.webhook') IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                               WHERE d.request_id = jobs.id AND d.final = 1)
             ORDER BY finished_at",
        )?;
        let rows = st.query_map([since_ms], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_are_idempotent_and_scheduled() {
        for (name, s) in crate::store::test_backends() {
            eprintln!("backend {name}");
            deliveries_are_idempotent_and_scheduled_on(&*s);
        }
    }

    fn deliveries_are_idempotent_and_scheduled_on(s: &crate::store::JobStore) {
        assert!(s
            .add_delivery("msg_a", "r1", "http://x", "{}", false)
            .unwrap());
        assert!(!s
            .add_delivery("msg_a", "r1", "http://x", "{}", false)
            .unwrap());
        assert!(s
            .add_delivery("msg_b", "r1", "http://x", "{}", true)
            .unwrap());
        let now = now_ms();
        assert_eq!(s.due_deliveries(now + 1, 10).unwrap().len(), 2);
        s.delivery_attempted("msg_a", DeliveryState::Pending, now + 60_000, Some("503"))
            .unwrap();
        s.delivery_attempted("msg_b", DeliveryState::Delivered, 0, None)
            .unwrap();
        assert!(s.due_deliveries(now + 1, 10).unwrap().is_empty());
        assert_eq!(s.next_delivery_at().unwrap(), Some(now + 60_000));
        let all = s.deliveries_of("r1").unwrap();
        assert_eq!(all[0].attempts, 1);
        assert_eq!(all[0].last_error.as_deref(), Some("503"));
        assert_eq!(all[1].state, DeliveryState::Delivered);
        assert!(all[1].delivered_at.is_some());
    }
}
