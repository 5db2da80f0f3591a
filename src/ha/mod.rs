//! High availability: several daemons on the same clusters elect one leader on etcd, and only the leader
//! reconciles. No consensus of our own: the leader key `{prefix}leader` is created in one etcd transaction
//! ("create if absent"), bound to a lease the leader keeps alive; when the lease ends, etcd deletes the key
//! and a standby's next poll creates it.
//!
//! - [`etcd`]: the etcd v3 JSON-gateway client (leases, the transaction, reads, auth).
//! - `election`: the campaign / lead / standby loop, as a task publishing [`HaStatus`].
//!
//! Fencing is local and needs no clock agreement: the leader may start a download only until
//! `renewal sent + granted TTL − margin`, measured on its own monotonic clock. etcd expires the lease no
//! earlier than `renewal received + TTL`, so a new leader exists only after the old one stopped starting.

mod election;
pub mod etcd;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::HaConfig;
use crate::time::Timestamp;
pub use etcd::EtcdError;

/// How long a resigning leader waits for etcd to take its resignation.
const RESIGN_TIMEOUT: Duration = Duration::from_secs(2);

/// This daemon's part in the election.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Not yet in the election: etcd has not answered (see `etcd_error`).
    #[default]
    Connecting,
    /// Another daemon leads; this one waits, and runs no passes.
    Standby,
    /// This daemon holds the lease and reconciles.
    Leader,
}

impl Role {
    /// The label used in logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Connecting => "connecting",
            Role::Standby => "standby",
            Role::Leader => "leader",
        }
    }
}

/// What a leader writes into its key: who it is, where its status is, and since when it leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    pub id: String,
    /// The leader's status server (`ha.advertise`, else its listen address).
    pub status_url: Option<String>,
    pub since: Option<Timestamp>,
}

/// The election as status shows it (`ha` in `/api/v1/status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaStatus {
    pub role: Role,
    /// This daemon's id in the election.
    pub id: String,
    /// When this daemon took its current role.
    pub since: Option<Timestamp>,
    /// Who leads (this daemon when `role` is `leader`), when known.
    pub leader: Option<LeaderRecord>,
    /// The last etcd failure, while it lasts.
    pub etcd_error: Option<String>,
    /// When the next attempt to reach etcd is due, while it fails.
    pub retry_at: Option<Timestamp>,
    /// How often this daemon became leader.
    pub elections: u64,
    /// How often it lost the lease while leading (not counting resignations).
    pub lease_losses: u64,
    pub lease_ttl_seconds: u64,
    /// The election's key prefix.
    pub prefix: String,
}

/// Until when this daemon may start downloads (`None`: not at all). Shared by the election and the gate.
#[derive(Debug, Default)]
struct LeaseClock(Mutex<Option<Instant>>);

impl LeaseClock {
    fn open_until(&self, until: Instant) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(until);
    }

    fn close(&self) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    fn check(&self) -> Result<(), LeaseLost> {
        match *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
            Some(until) if Instant::now() < until => Ok(()),
            Some(_) => Err(LeaseLost::Expired),
            None => Err(LeaseLost::NotHeld),
        }
    }
}

/// Why this daemon may not act as leader right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseLost {
    /// The lease was held but not renewed in time: another daemon may lead by now.
    Expired,
    /// This daemon does not hold the lease.
    NotHeld,
}

/// A view of the lease for fencing: asked before each start, answers on this daemon's monotonic clock.
#[derive(Debug, Clone)]
pub struct LeaseCheck(Arc<LeaseClock>);

impl LeaseCheck {
    /// `Ok` while this daemon's lease is surely alive.
    pub fn check(&self) -> Result<(), LeaseLost> {
        self.0.check()
    }
}

/// The running election: its published status, the start gate for passes, and how to resign.
#[derive(Debug)]
pub struct Ha {
    /// The election's status; changes when the role, the leader or the etcd error changes.
    pub state: watch::Receiver<HaStatus>,
    clock: Arc<LeaseClock>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Ha {
    /// Joins the election (a task on the current runtime). `status_url` is where this daemon's status server
    /// answers, unless `ha.advertise` says otherwise (a one-shot `apply` has none).
    pub fn start(cfg: &HaConfig, status_url: Option<String>) -> Result<Self, EtcdError> {
        let id = cfg.id.clone().unwrap_or_else(default_id);
        let timeout = (cfg.lease_ttl / 3).clamp(Duration::from_millis(500), Duration::from_secs(5));
        let client = etcd::Etcd::new(cfg, timeout)?;
        let status = HaStatus {
            id: id.clone(),
            lease_ttl_seconds: cfg.lease_ttl.as_secs(),
            prefix: cfg.prefix.clone(),
            ..HaStatus::default()
        };
        let (tx, state) = watch::channel(status);
        let clock = Arc::new(LeaseClock::default());
        let stop = CancellationToken::new();
        let record = LeaderRecord {
            id,
            status_url: cfg.advertise.as_ref().map(ToString::to_string).or(status_url),
            since: None,
        };
        let election = election::Election::new(client, cfg, record, Arc::clone(&clock), tx);
        let task = tokio::spawn(election.run(stop.clone()));
        Ok(Self { state, clock, stop, task })
    }

    /// The lease, to ask before each download starts: open only while it is surely alive.
    pub fn lease(&self) -> LeaseCheck {
        LeaseCheck(Arc::clone(&self.clock))
    }

    /// Waits (up to `limit`) until the election has placed this process as leader or standby; the status then.
    pub async fn decided(&mut self, limit: Duration) -> HaStatus {
        let _ = tokio::time::timeout(limit, self.state.wait_for(|s| s.role != Role::Connecting)).await;
        self.state.borrow().clone()
    }

    /// Whether this daemon leads now.
    pub fn is_leader(&self) -> bool {
        self.state.borrow().role == Role::Leader
    }

    /// Leaves the election: stops starting downloads at once, then revokes the lease so a standby takes over
    /// without waiting for it to expire (bounded: 2 s).
    pub async fn resign(mut self) {
        self.clock.close();
        self.stop.cancel();
        if tokio::time::timeout(RESIGN_TIMEOUT, &mut self.task).await.is_err() {
            tracing::warn!("etcd did not take the resignation in time; the lease expires by itself");
        }
    }
}

impl Drop for Ha {
    fn drop(&mut self) {
        self.clock.close();
        self.stop.cancel();
    }
}

/// `HOSTNAME:PID`: unique among live daemons, readable in status.
fn default_id() -> String {
    use std::io::Read;
    let mut name = String::new();
    let read = std::fs::File::open("/proc/sys/kernel/hostname").and_then(|f| f.take(256).read_to_string(&mut name));
    let host: String = name.trim().chars().take(64).collect();
    let host = if read.is_ok() && !host.is_empty() { host } else { "vztmpld".into() };
    format!("{host}:{}", std::process::id())
}
