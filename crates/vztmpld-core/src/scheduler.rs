//! When the next pass runs, and why: the interval with jitter, per-node backoff after failures, "one
//! follow-up pass" while a pass runs, and the debounce of configuration-change hints.
//!
//! Pure: every method takes `now`; the only state besides the schedule is a seeded PRNG for jitter, so
//! tests drive it with made-up instants and a fixed seed.

use std::collections::BTreeMap;
use std::time::Duration;

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backoff::{Backoff, Jitter, Spread};

/// First retry delay for a node that failed; doubles per failing pass, capped at the interval.
pub const RETRY_BASE: Duration = Duration::from_secs(5);
/// Quiet time after the last file event before the config is re-read.
pub const DEBOUNCE: Duration = Duration::from_millis(300);
/// Longest a stream of file events can hold a re-read back (unrelated writes in the same directory).
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(2);
/// Regular passes are spread by up to this fraction of the interval, so daemons started together drift apart.
const INTERVAL_JITTER: f64 = 0.05;
/// Retries are spread by up to this fraction, so nodes that failed together do not retry in lockstep.
const RETRY_JITTER: f64 = 0.2;

/// A node, as `(cluster, node)`; `node` is `*` for a cluster that could not be observed at all.
pub type NodeKey = (String, String);

/// The daemon's schedule.
#[derive(Debug, Clone)]
pub struct Scheduler {
    interval: Duration,
    next: Instant,
    next_trigger: Trigger,
    running: bool,
    follow_up: Option<Trigger>,
    failures: BTreeMap<NodeKey, u32>,
    reload_at: Option<Instant>,
    burst_started: Option<Instant>,
    jitter: Jitter,
}

impl Scheduler {
    /// A schedule whose first pass (`start`) is due at once, its intervals spread by `jitter`.
    pub fn new(interval: Duration, now: Instant, jitter: Jitter) -> Self {
        Self {
            interval,
            next: now,
            next_trigger: Trigger::Start,
            running: false,
            follow_up: None,
            failures: BTreeMap::new(),
            reload_at: None,
            burst_started: None,
            jitter,
        }
    }

    /// A new configuration's interval; a regular pass due later than one new interval from now comes sooner.
    pub fn set_interval(&mut self, interval: Duration, now: Instant) {
        self.interval = interval;
        if !self.running && self.next > now + interval {
            self.next = now + interval;
        }
    }

    /// Asks for a pass now, or, while one runs, exactly one pass right after it.
    pub fn request(&mut self, trigger: Trigger, now: Instant) {
        if self.running {
            self.follow_up.get_or_insert(trigger);
        } else if self.next > now {
            // A pass already due serves the request under its own trigger.
            (self.next, self.next_trigger) = (now, trigger);
        }
    }

    /// When the next pass is due; `None` while one runs.
    pub fn next_due(&self) -> Option<Instant> {
        (!self.running).then_some(self.next)
    }

    /// The trigger of the pass due next.
    pub fn next_trigger(&self) -> Trigger {
        self.next_trigger
    }

    /// Whether a pass is running.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Starts the due pass, if one is due.
    pub fn start(&mut self, now: Instant) -> Option<Trigger> {
        if self.running || now < self.next {
            return None;
        }
        self.running = true;
        Some(self.next_trigger)
    }

    /// A pass finished; `nodes` says for each node whether it had a failure a retry may fix. Returns the retry
    /// schedule of every failing node and schedules the next pass (the earliest retry, the interval, or the
    /// queued follow-up).
    pub fn finish(
        &mut self,
        now: Instant,
        nodes: impl IntoIterator<Item = ((impl AsRef<str>, impl AsRef<str>), bool)>,
    ) -> BTreeMap<NodeKey, NodeRetry> {
        self.running = false;
        let mut retries = BTreeMap::new();
        for ((cluster, node), failing) in nodes {
            // Keys are made only for failing nodes, or while some node has failures: a healthy fleet's pass
            // allocates nothing here.
            let key = || (cluster.as_ref().to_owned(), node.as_ref().to_owned());
            if !failing {
                if !self.failures.is_empty() {
                    self.failures.remove(&key());
                }
                continue;
            }
            let key = key();
            let n = self.failures.entry(key.clone()).or_default();
            *n = n.saturating_add(1);
            let failures = *n;
            let backoff = Backoff { base: RETRY_BASE, cap: self.interval, spread: Spread::Fraction(RETRY_JITTER) };
            let after = backoff.delay(failures, &mut self.jitter);
            retries.insert(key, NodeRetry { failures, after });
        }
        let regular = self.interval + self.interval.mul_f64(self.jitter.fraction() * INTERVAL_JITTER);
        let soonest_retry = retries.values().map(|r| r.after).min();
        (self.next, self.next_trigger) = match soonest_retry {
            Some(r) if r < regular => (now + r, Trigger::Retry),
            _ => (now + regular, Trigger::Interval),
        };
        self.take_follow_up(now);
        retries
    }

    /// A pass ended abnormally (it panicked): try again soon.
    pub fn abort(&mut self, now: Instant) {
        self.running = false;
        (self.next, self.next_trigger) = (now + RETRY_BASE, Trigger::Retry);
        self.take_follow_up(now);
    }

    fn take_follow_up(&mut self, now: Instant) {
        if let Some(trigger) = self.follow_up.take() {
            (self.next, self.next_trigger) = (now, trigger);
        }
    }

    /// A hint that the configuration file may have changed: re-read after [`DEBOUNCE`] of quiet, but never
    /// later than [`DEBOUNCE_MAX`] after the first hint of a burst.
    pub fn config_hint(&mut self, now: Instant) {
        let first = *self.burst_started.get_or_insert(now);
        self.reload_at = Some((now + DEBOUNCE).min(first + DEBOUNCE_MAX));
    }

    /// When the debounced re-read is due.
    pub fn reload_due(&self) -> Option<Instant> {
        self.reload_at
    }

    /// Whether the debounced re-read is due now (it is then cleared).
    pub fn take_reload(&mut self, now: Instant) -> bool {
        match self.reload_at {
            Some(at) if at <= now => {
                self.reload_at = None;
                self.burst_started = None;
                true
            }
            _ => false,
        }
    }

    /// Consecutive failing passes of a node.
    pub fn failures(&self, key: &NodeKey) -> u32 {
        self.failures.get(key).copied().unwrap_or(0)
    }
}

/// Why a pass runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The daemon's first pass.
    #[default]
    Start,
    /// The regular interval.
    Interval,
    /// A failing node's backoff came due.
    Retry,
    /// The configuration changed.
    Config,
    /// SIGHUP.
    Signal,
    /// `POST /api/v1/reconcile`.
    Api,
    /// This daemon became the HA leader.
    Leader,
}

impl Trigger {
    /// The label used in logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Interval => "interval",
            Trigger::Retry => "retry",
            Trigger::Config => "config",
            Trigger::Signal => "signal",
            Trigger::Api => "api",
            Trigger::Leader => "leader",
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node's retry schedule after a pass, as the scheduler decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeRetry {
    pub failures: u32,
    pub after: Duration,
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
