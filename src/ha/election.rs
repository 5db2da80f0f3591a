//! The election loop: look at the leader key; if it is vacant, create it bound to our lease (one
//! transaction); while leading, renew the lease every third of its TTL and check the key is still ours;
//! while standing by, look again every `poll`. etcd failures are retried with backoff and shown in status.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::etcd::{Etcd, EtcdError, Holder};
use super::{HaStatus, LeaderRecord, LeaseClock, Role};
use crate::config::HaConfig;
use crate::time::Timestamp;
use vztmpld_core::backoff::{Backoff, Jitter, Spread};

/// etcd failing: 0.5 s, doubling, at most 30 s.
const ETCD_RETRY: Backoff =
    Backoff { base: Duration::from_millis(500), cap: Duration::from_secs(30), spread: Spread::None };

/// A lease this daemon holds, and until when it surely lives (renewal sent + granted TTL).
#[derive(Debug, Clone, Copy)]
struct Lease {
    id: i64,
    alive_until: Instant,
}

/// How a campaign step ended.
enum Step {
    /// Another daemon leads: look again after `poll`.
    Standby,
    /// Leadership ended (or the key is vacant again): campaign again at once.
    Again,
}

pub(super) struct Election {
    etcd: Etcd,
    key: String,
    record: LeaderRecord,
    ttl: Duration,
    poll: Duration,
    clock: Arc<LeaseClock>,
    state: watch::Sender<HaStatus>,
    lease: Option<Lease>,
}

impl Election {
    pub(super) fn new(
        etcd: Etcd,
        cfg: &HaConfig,
        record: LeaderRecord,
        clock: Arc<LeaseClock>,
        state: watch::Sender<HaStatus>,
    ) -> Self {
        Self {
            etcd,
            key: format!("{}leader", cfg.prefix),
            record,
            ttl: cfg.lease_ttl,
            poll: cfg.poll,
            clock,
            state,
            lease: None,
        }
    }

    /// Campaigns until `stop`; then resigns (revokes the lease, which deletes the key).
    pub(super) async fn run(mut self, stop: CancellationToken) {
        let mut failures = 0u32;
        loop {
            let step = tokio::select! {
                () = stop.cancelled() => break,
                step = self.step() => step,
            };
            let wait = match step {
                Ok(Step::Standby) => {
                    failures = 0;
                    self.poll
                }
                // A breath between campaigns, so nothing can spin.
                Ok(Step::Again) => {
                    failures = 0;
                    Duration::from_millis(50)
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    // One daemon retrying one etcd: nothing to spread.
                    let wait = ETCD_RETRY.delay(failures, &mut Jitter::new(0));
                    self.unreachable(&e, wait);
                    wait
                }
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        self.clock.close();
        if let Some(lease) = self.lease.take() {
            match self.etcd.revoke(lease.id).await {
                Ok(()) => tracing::info!(id = %self.record.id, "resigned: lease revoked, a standby takes over now"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not revoke the lease; a standby takes over when it expires")
                }
            }
        }
    }

    /// One look at the key, and what follows from it.
    async fn step(&mut self) -> Result<Step, EtcdError> {
        let holder = self.etcd.get(&self.key).await?;
        self.answered();
        match holder {
            // Our own key, after etcd was out of reach: still ours if the lease lives.
            Some(h) if self.lease.is_some_and(|l| l.id == h.lease) => {
                if self.renew().await? {
                    self.lead().await
                } else {
                    Ok(Step::Again)
                }
            }
            Some(h) => {
                self.stand_by(&h);
                if let Some(stale) = self.lease.take() {
                    // A lease of ours bound to nothing: let it go now rather than at its expiry.
                    let _ = self.etcd.revoke(stale.id).await;
                }
                Ok(Step::Standby)
            }
            None => {
                let lease = self.fresh_lease().await?;
                let mut record = self.record.clone();
                record.since = Some(Timestamp::now());
                let value = serde_json::to_vec(&record).unwrap_or_default();
                match self.etcd.put_if_absent(&self.key, &value, lease.id).await? {
                    None => self.lead().await,
                    Some(h) if h.lease == 0 && h.value.is_empty() => Ok(Step::Again),
                    Some(h) => {
                        self.stand_by(&h);
                        Ok(Step::Standby)
                    }
                }
            }
        }
    }

    /// Leads until the lease is lost or the key is no longer ours.
    async fn lead(&mut self) -> Result<Step, EtcdError> {
        let Some(lease) = self.lease else { return Ok(Step::Again) };
        self.clock.open_until(lease.alive_until - self.margin());
        let now = Timestamp::now();
        let mut me = self.record.clone();
        me.since = Some(now);
        self.state.send_modify(|s| {
            s.role = Role::Leader;
            s.since = Some(now);
            s.leader = Some(me);
            s.elections += 1;
        });
        tracing::info!(id = %self.record.id, lease = lease.id, "elected leader");
        let mut next = Instant::now() + self.ttl / 3;
        let mut failing = false;
        loop {
            tokio::time::sleep_until(next).await;
            match self.renew().await {
                Ok(true) => {
                    failing = false;
                    // An operator may delete the key to force a handover.
                    match self.etcd.get(&self.key).await {
                        Ok(Some(h)) if Some(h.lease) == self.lease.map(|l| l.id) => {}
                        Ok(_) => {
                            self.lost("the leader key was deleted or taken over");
                            if let Some(l) = self.lease.take() {
                                let _ = self.etcd.revoke(l.id).await;
                            }
                            return Ok(Step::Again);
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot read the leader key; the lease is renewed"),
                    }
                    next = Instant::now() + self.ttl / 3;
                }
                Ok(false) => {
                    self.lost("etcd no longer has this daemon's lease");
                    return Ok(Step::Again);
                }
                Err(e) => {
                    let deadline = self.lease.map_or(Instant::now(), |l| l.alive_until - self.margin());
                    if Instant::now() >= deadline {
                        self.lost(&format!("the lease could not be renewed before it expires: {e}"));
                        return Err(e);
                    }
                    if !failing {
                        tracing::warn!(error = %e, "cannot renew the etcd lease; retrying until it expires");
                        failing = true;
                    }
                    next = Instant::now() + ETCD_RETRY.base;
                }
            }
        }
    }

    /// Renews the lease: `false` when etcd no longer has it. Moves the start gate while leading.
    async fn renew(&mut self) -> Result<bool, EtcdError> {
        let Some(lease) = self.lease else { return Ok(false) };
        let sent = Instant::now();
        match self.etcd.keep_alive(lease.id).await? {
            Some(ttl) => {
                let alive_until = sent + Duration::from_secs(ttl.unsigned_abs());
                self.lease = Some(Lease { id: lease.id, alive_until });
                if self.state.borrow().role == Role::Leader {
                    self.clock.open_until(alive_until - self.margin());
                }
                Ok(true)
            }
            None => {
                self.clock.close();
                self.lease = None;
                Ok(false)
            }
        }
    }

    /// A lease to campaign with: ours if it still lives, else a new one.
    async fn fresh_lease(&mut self) -> Result<Lease, EtcdError> {
        if self.lease.is_some() && self.renew().await? {
            if let Some(l) = self.lease {
                return Ok(l);
            }
        }
        let sent = Instant::now();
        let (id, ttl) = self.etcd.grant(self.ttl.as_secs().max(1) as i64).await?;
        let lease = Lease { id, alive_until: sent + Duration::from_secs(ttl.unsigned_abs()) };
        self.lease = Some(lease);
        Ok(lease)
    }

    /// Starts stop a fifth of the TTL before the lease could expire: the time a start request may take to
    /// reach Proxmox after the gate let it through.
    fn margin(&self) -> Duration {
        self.ttl / 5
    }

    fn stand_by(&self, holder: &Holder) {
        let leader = serde_json::from_slice::<LeaderRecord>(&holder.value).unwrap_or_else(|_| LeaderRecord {
            id: String::from_utf8_lossy(&holder.value).chars().take(256).collect(),
            status_url: None,
            since: None,
        });
        self.state.send_if_modified(|s| {
            let changed = s.role != Role::Standby || s.leader.as_ref() != Some(&leader);
            if changed {
                tracing::info!(leader = %leader.id, "standing by; another daemon leads");
                s.role = Role::Standby;
                s.since = Some(Timestamp::now());
                s.leader = Some(leader);
            }
            changed
        });
    }

    /// Leadership ended without a resignation: stop starting downloads at once.
    fn lost(&self, why: &str) {
        self.clock.close();
        tracing::warn!(reason = why, "lost the leadership; no download is started until it is won again");
        self.state.send_modify(|s| {
            s.role = Role::Connecting;
            s.since = Some(Timestamp::now());
            s.leader = None;
            s.lease_losses += 1;
        });
    }

    /// etcd answered: clear a shown error.
    fn answered(&self) {
        self.state.send_if_modified(|s| {
            let had = s.etcd_error.is_some();
            if had {
                tracing::info!("etcd answers again");
            }
            s.etcd_error = None;
            s.retry_at = None;
            had
        });
    }

    fn unreachable(&self, e: &EtcdError, wait: Duration) {
        let message = e.to_string();
        self.state.send_modify(|s| {
            if s.etcd_error.as_deref() != Some(message.as_str()) {
                tracing::warn!(error = %message, retry_in = ?wait, "etcd: no election possible; no pass runs meanwhile");
            }
            if s.role == Role::Standby {
                s.role = Role::Connecting;
                s.since = Some(Timestamp::now());
            }
            s.etcd_error = Some(message);
            s.retry_at = Some(Timestamp::from(SystemTime::now() + wait));
        });
    }
}
