//! Download progress a person can watch, derived from what Proxmox's task log really prints.
//!
//! Proxmox runs `wget --progress=dot:giga`: after `Length: 126129049 (120M) [...]` it prints one line per 32 MiB,
//! `  32768K ........ ........ ........ ........ 26% 43.9M 2s` — the bytes before the line (in KiB), 32 dots of
//! 1 MiB, the percent, wget's rate and its ETA — then `... saved [N/N]`, and Proxmox prints `calculating
//! checksum...` while it verifies. Between two lines the tracker interpolates from the measured rate, never past
//! the next line's mark, so a bar moves every poll instead of every 32 MiB.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// wget's `dot:giga`: one progress line per 32 MiB.
const LINE_BYTES: u64 = 32 * 1024 * 1024;

/// Where a download stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for a free slot on its node or in its cluster.
    Queued,
    /// The Proxmox task is transferring.
    Downloading,
    /// The transfer is complete; Proxmox checks the checksum and moves the file into place.
    Verifying,
}

/// Progress of one download, for live displays.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Index in the plan's downloads.
    pub download: usize,
    pub phase: Phase,
    pub upid: Option<String>,
    /// Bytes transferred (interpolated between log lines), when known.
    pub done: Option<u64>,
    /// The file's size, from wget's `Length:` line.
    pub total: Option<u64>,
    /// Bytes per second, as wget measured it.
    pub rate: Option<f64>,
}

impl Progress {
    /// A download waiting for a slot.
    pub fn queued(download: usize) -> Self {
        Self { download, phase: Phase::Queued, upid: None, done: None, total: None, rate: None }
    }

    /// Percent done, when the size is known.
    pub fn percent(&self) -> Option<u8> {
        let (done, total) = (self.done?, self.total.filter(|t| *t > 0)?);
        u8::try_from((done.min(total) * 100) / total).ok()
    }

    /// Time left at the current rate.
    pub fn eta(&self) -> Option<Duration> {
        let rate = self.rate.filter(|r| *r > 0.0)?;
        let left = self.total?.saturating_sub(self.done?);
        Some(Duration::from_secs_f64(left as f64 / rate))
    }
}

/// Receives progress updates (a terminal bar, the daemon's status).
pub type ProgressSink = Arc<dyn Fn(Progress) + Send + Sync>;

/// Follows one task's log lines and estimates where the transfer is now.
#[derive(Debug)]
pub(super) struct Tracker {
    total: Option<u64>,
    /// Bytes at the last progress line, and when it was read.
    mark: u64,
    mark_at: Option<Instant>,
    rate: Option<f64>,
    verifying: bool,
}

impl Tracker {
    pub(super) fn new() -> Self {
        Self { total: None, mark: 0, mark_at: None, rate: None, verifying: false }
    }

    /// The size from the `Length:` line, once seen.
    pub(super) fn total(&self) -> Option<u64> {
        self.total
    }

    /// Takes one task log line into account (read at `now`).
    pub(super) fn feed(&mut self, line: &str, now: Instant) {
        if let Some(len) = parse_length(line) {
            self.total = Some(len);
        } else if let Some((before_kib, rate)) = parse_progress_line(line) {
            let end = before_kib.saturating_mul(1024).saturating_add(LINE_BYTES);
            self.mark = self.total.map_or(end, |t| end.min(t));
            self.mark_at = Some(now);
            if rate.is_some() {
                self.rate = rate;
            }
        } else if line.contains("' saved [") || line.starts_with("calculating checksum") {
            self.verifying = true;
            self.mark = self.total.unwrap_or(self.mark);
        }
    }

    /// Where the download stands at `now`.
    pub(super) fn progress(&self, download: usize, upid: &str, now: Instant) -> Progress {
        let phase = if self.verifying { Phase::Verifying } else { Phase::Downloading };
        let mut done = self.mark;
        if let (Some(at), Some(rate), false) = (self.mark_at, self.rate, self.verifying) {
            let moved = (rate * now.saturating_duration_since(at).as_secs_f64()) as u64;
            let ceiling = self.total.map_or(self.mark + LINE_BYTES, |t| (self.mark + LINE_BYTES).min(t));
            done = (self.mark + moved).min(ceiling);
        }
        Progress { download, phase, upid: Some(upid.to_string()), done: Some(done), total: self.total, rate: self.rate }
    }
}

/// wget's `Length: 126129049 (120M) [application/octet-stream]`.
pub fn parse_length(line: &str) -> Option<u64> {
    line.strip_prefix("Length: ")?.split_whitespace().next()?.parse().ok()
}

/// wget's dot-progress line: the KiB before it and its rate (`43.9M` = MiB/s), e.g.
/// `  32768K ........ ........ ........ ........ 26% 43.9M 2s`.
pub fn parse_progress_line(line: &str) -> Option<(u64, Option<f64>)> {
    let mut words = line.split_whitespace();
    let before = words.next()?.strip_suffix('K')?.parse::<u64>().ok()?;
    let rest: Vec<&str> = words.collect();
    let pct = rest.iter().position(|w| w.strip_suffix('%').is_some_and(|p| p.parse::<u8>().is_ok()))?;
    let rate = rest.get(pct + 1).and_then(|r| {
        let (num, unit) = r.split_at(r.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(r.len()));
        let scale = match unit {
            "" => 1.0,
            "K" => 1024.0,
            "M" => 1024.0 * 1024.0,
            "G" => 1024.0 * 1024.0 * 1024.0,
            _ => return None,
        };
        num.parse::<f64>().ok().map(|n| n * scale)
    });
    Some((before, rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wget_lines() {
        assert_eq!(parse_length("Length: 126129049 (120M) [application/octet-stream]"), Some(126_129_049));
        assert_eq!(parse_length("Saving to: 'x'"), None);
        let (before, rate) = parse_progress_line("     0K ........ ........ ........ ........ 26% 43.9M 2s").unwrap();
        assert_eq!(before, 0);
        assert!((rate.unwrap() - 43.9 * 1024.0 * 1024.0).abs() < 1.0);
        assert_eq!(parse_progress_line("  32768K ........ ........ ........ ........ 53% 12.0M 1s").unwrap().0, 32768);
        assert_eq!(parse_progress_line("downloading http://x to y"), None);
    }

    #[test]
    fn interpolates_between_lines_but_never_past_the_next_mark() {
        let t0 = Instant::now();
        let mut t = Tracker::new();
        t.feed("Length: 104857600 (100M) [application/octet-stream]", t0);
        assert_eq!(t.progress(0, "U", t0).percent(), Some(0));
        // The first line at 32 MiB, 16 MiB/s.
        t.feed("     0K ........ ........ ........ ........ 32% 16.0M 4s", t0);
        assert_eq!(t.progress(0, "U", t0).done, Some(LINE_BYTES));
        let later = t.progress(0, "U", t0 + Duration::from_millis(500));
        assert_eq!(later.done, Some(LINE_BYTES + 8 * 1024 * 1024), "half a second at 16 MiB/s");
        assert_eq!(later.percent(), Some(40));
        assert!(later.eta().unwrap() > Duration::from_secs(3));
        let stuck = t.progress(0, "U", t0 + Duration::from_secs(60));
        assert_eq!(stuck.done, Some(2 * LINE_BYTES), "not past the next line's mark");
        t.feed("calculating checksum...", t0 + Duration::from_secs(7));
        let v = t.progress(0, "U", t0 + Duration::from_secs(7));
        assert_eq!((v.phase, v.percent()), (Phase::Verifying, Some(100)));
    }
}
