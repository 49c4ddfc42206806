//! "No send starts with less lease time left than its timeout" (issue 18): AD and Graph cannot
//! check a fencing token, so the leader checks its own lease before every send and cuts the send
//! at a timeout shorter than what is left.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::coord::Leadership;

/// The leadership a term acts under: set while this instance leads, cleared when it stops.
pub type CurrentLeadership = Arc<Mutex<Option<Arc<Leadership>>>>;

/// Whether a send may start, and when it must be cut.
#[derive(Debug, Clone, Default)]
pub struct SendGate(Option<Leased>);

#[derive(Debug, Clone)]
struct Leased {
    current: CurrentLeadership,
    send_timeout: Duration,
    refused: Arc<std::sync::atomic::AtomicU64>,
}

impl SendGate {
    /// One instance: every send may start, cut only by the provider's own timeouts.
    pub fn open() -> SendGate {
        SendGate(None)
    }

    /// Several instances: a send starts only while this instance leads with more than
    /// `send_timeout` of its lease surely left, and is cut at `send_timeout`.
    pub fn leased(current: CurrentLeadership, send_timeout: Duration) -> SendGate {
        SendGate(Some(Leased { current, send_timeout, refused: Arc::default() }))
    }

    /// `Ok(None)`: send, no cut of remedy's own; `Ok(Some(cut))`: send, and give up waiting after
    /// `cut`; `Err(why)`: do not send.
    pub fn permit(&self) -> Result<Option<Duration>, String> {
        let Some(leased) = &self.0 else { return Ok(None) };
        let leadership = leased.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let refusal = match leadership {
            None => "this instance does not lead (several instances: only the leader sends)".to_owned(),
            Some(leadership) => {
                let remaining = leadership.remaining();
                if remaining > leased.send_timeout {
                    return Ok(Some(leased.send_timeout));
                }
                match leadership.lost() {
                    Some(why) => format!("this instance's leadership is lost: {why}"),
                    None => format!(
                        "this instance's lease has {:.1}s surely left, not more than the send timeout ({}s): no send starts that could outlast the lease",
                        remaining.as_secs_f64(),
                        leased.send_timeout.as_secs_f64()
                    ),
                }
            }
        };
        leased.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Err(refusal)
    }

    /// Whether every send may start uncut (one instance).
    pub fn permit_is_open(&self) -> bool {
        self.0.is_none()
    }

    /// How many sends were refused (for the metrics).
    pub fn refused(&self) -> u64 {
        self.0.as_ref().map_or(0, |leased| leased.refused.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// Runs `send` under a cut: `Err(elapsed)` when it did not finish within `cut`.
pub async fn cut<T>(cut: Option<Duration>, send: impl std::future::Future<Output = T>) -> Result<T, Duration> {
    match cut {
        None => Ok(send.await),
        Some(limit) => tokio::time::timeout(limit, send).await.map_err(|_| limit),
    }
}
