//! The schedule on made-up instants: no clock, no sleeps.

use super::*;
use crate::backoff::Jitter;

const HOUR: Duration = Duration::from_secs(3600);

fn key(node: &str) -> NodeKey {
    ("lab".to_string(), node.to_string())
}

/// A pass that reported no node.
fn nothing() -> [(NodeKey, bool); 0] {
    []
}

fn at(t0: Instant, secs: f64) -> Instant {
    t0 + Duration::from_secs_f64(secs)
}

#[test]
fn the_first_pass_is_due_at_once_and_only_once() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(HOUR, t0, Jitter::new(7));
    assert_eq!(s.next_due(), Some(t0));
    assert_eq!(s.start(t0), Some(Trigger::Start));
    assert!(s.is_running());
    assert_eq!(s.next_due(), None, "nothing is due while a pass runs");
    assert_eq!(s.start(t0), None, "passes never stack");
}

#[test]
fn the_interval_is_jittered_by_at_most_five_percent() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(HOUR, t0, Jitter::new(42));
    let mut seen = std::collections::BTreeSet::new();
    let mut now = t0;
    for _ in 0..50 {
        assert!(s.start(now).is_some());
        s.finish(now, [(key("pve1"), false)]);
        let due = s.next_due().unwrap();
        let wait = due - now;
        assert!(wait >= HOUR && wait <= HOUR.mul_f64(1.05), "{wait:?}");
        assert_eq!(s.next_trigger(), Trigger::Interval);
        assert_eq!(s.start(due - Duration::from_millis(1)), None, "not before it is due");
        seen.insert(wait.as_millis());
        now = due;
    }
    assert!(seen.len() > 40, "jitter spreads passes: {} distinct waits", seen.len());
}

#[test]
fn a_failing_node_backs_off_exponentially_capped_at_the_interval() {
    let t0 = Instant::now();
    let interval = Duration::from_secs(120);
    let mut s = Scheduler::new(interval, t0, Jitter::new(3));
    let mut now = t0;
    let mut waits = Vec::new();
    for _ in 0..8 {
        s.start(now).unwrap();
        let retries = s.finish(now, [(key("pve1"), false), (key("pve2"), true)]);
        assert!(!retries.contains_key(&key("pve1")), "healthy nodes get no retry");
        let r = retries[&key("pve2")];
        waits.push((r.failures, r.after));
        now = s.next_due().unwrap();
    }
    for (i, (failures, after)) in waits.iter().enumerate() {
        assert_eq!(*failures, i as u32 + 1);
        let base = RETRY_BASE * (1 << i);
        if base < interval {
            assert!(*after >= base && *after <= base.mul_f64(1.2), "try {failures}: {after:?} vs {base:?}");
        } else {
            assert_eq!(*after, interval, "capped at the interval");
        }
    }
}

#[test]
fn recovery_resets_the_backoff() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(HOUR, t0, Jitter::new(9));
    for i in 0..3 {
        let now = at(t0, f64::from(i) * 100.0);
        s.start(now).unwrap();
        s.finish(now, [(key("pve2"), true)]);
    }
    assert_eq!(s.failures(&key("pve2")), 3);
    assert_eq!(s.next_trigger(), Trigger::Retry);
    let now = at(t0, 1000.0);
    s.start(now).unwrap();
    let retries = s.finish(now, [(key("pve2"), false)]);
    assert!(retries.is_empty());
    assert_eq!(s.failures(&key("pve2")), 0);
    assert_eq!(s.next_trigger(), Trigger::Interval);
    s.start(s.next_due().unwrap()).unwrap();
    let r = s.finish(at(t0, 5000.0), [(key("pve2"), true)]);
    assert_eq!(r[&key("pve2")].failures, 1, "counting starts over");
    assert!(r[&key("pve2")].after <= RETRY_BASE.mul_f64(1.2));
}

#[test]
fn requests_during_a_pass_queue_exactly_one_follow_up() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(HOUR, t0, Jitter::new(1));
    s.start(t0).unwrap();
    s.request(Trigger::Api, at(t0, 1.0));
    s.request(Trigger::Config, at(t0, 2.0));
    s.request(Trigger::Signal, at(t0, 3.0));
    let done = at(t0, 4.0);
    s.finish(done, nothing());
    assert_eq!(s.next_due(), Some(done), "the follow-up runs right after");
    assert_eq!(s.next_trigger(), Trigger::Api, "the first request names it");
    assert_eq!(s.start(done), Some(Trigger::Api));
    s.finish(at(t0, 5.0), nothing());
    assert_eq!(s.next_trigger(), Trigger::Interval, "one follow-up, not three");
}

#[test]
fn a_request_while_idle_runs_at_once_and_a_due_pass_keeps_its_trigger() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(HOUR, t0, Jitter::new(1));
    s.request(Trigger::Api, t0);
    assert_eq!(s.start(t0), Some(Trigger::Start), "the due first pass serves the request");
    s.finish(t0, nothing());
    let now = at(t0, 60.0);
    s.request(Trigger::Api, now);
    assert_eq!(s.next_due(), Some(now));
    assert_eq!(s.start(now), Some(Trigger::Api));
}

#[test]
fn an_aborted_pass_is_retried_soon() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(HOUR, t0, Jitter::new(1));
    s.start(t0).unwrap();
    s.abort(t0);
    assert_eq!(s.next_due(), Some(t0 + RETRY_BASE));
    assert_eq!(s.next_trigger(), Trigger::Retry);
}

#[test]
fn a_shorter_interval_brings_the_next_regular_pass_forward() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(HOUR, t0, Jitter::new(1));
    s.start(t0).unwrap();
    s.finish(t0, nothing());
    s.set_interval(Duration::from_secs(60), at(t0, 10.0));
    assert_eq!(s.next_due(), Some(at(t0, 70.0)));
}

#[test]
fn config_hints_are_debounced_with_a_maximum_wait() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(HOUR, t0, Jitter::new(1));
    assert_eq!(s.reload_due(), None);
    s.config_hint(t0);
    assert_eq!(s.reload_due(), Some(t0 + DEBOUNCE));
    assert!(!s.take_reload(at(t0, 0.1)));
    // Events every 100 ms keep pushing it back, but never past DEBOUNCE_MAX after the first.
    let mut now = t0;
    for _ in 0..50 {
        now += Duration::from_millis(100);
        s.config_hint(now);
    }
    assert_eq!(s.reload_due(), Some(t0 + DEBOUNCE_MAX));
    assert!(s.take_reload(t0 + DEBOUNCE_MAX));
    assert_eq!(s.reload_due(), None);
    // The next burst starts its own clock.
    s.config_hint(now);
    assert_eq!(s.reload_due(), Some(now + DEBOUNCE));
}
