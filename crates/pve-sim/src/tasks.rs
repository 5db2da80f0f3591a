//! Worker tasks: UPID parsing and the download worker that behaves like Proxmox's
//! `download_file_from_url` running `wget`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Sim;
use super::content::MultiHasher;
use super::scenario::DownloadFaultKind;
use super::state::{Volume, VolumeKey, now_epoch};

/// The fields of a UPID that handlers need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedUpid {
    pub node: String,
}

/// Parses `UPID:node:PID:PSTART:STARTTIME:type:id:user:` as `PVE::Tools::upid_decode` does.
pub(crate) fn parse_upid(upid: &str) -> Option<ParsedUpid> {
    let rest = upid.strip_prefix("UPID:")?.strip_suffix(':')?;
    let parts: Vec<&str> = rest.splitn(7, ':').collect();
    if parts.len() != 7 {
        return None;
    }
    let hex = |s: &str, lens: std::ops::RangeInclusive<usize>| {
        lens.contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit())
    };
    let bad = |s: &str| s.chars().any(|c| c == ':' || c == '/' || c.is_whitespace());
    let ok = super::scenario::valid_node_name(parts[0])
        && hex(parts[1], 8..=8)
        && hex(parts[2], 8..=9)
        && hex(parts[3], 8..=8)
        && !parts[4].is_empty()
        && !bad(parts[4])
        && !bad(parts[5])
        && !parts[6].is_empty()
        && !bad(parts[6]);
    ok.then(|| ParsedUpid { node: parts[0].to_string() })
}

/// What a download task fetches and where it puts it.
#[derive(Debug, Clone)]
pub(crate) struct DownloadJob {
    pub url: String,
    pub file: String,
    pub node: String,
    pub storage: String,
    pub key: VolumeKey,
    /// `<mount>/template/cache`.
    pub dest_dir: String,
    /// `(algorithm, expected hex)`.
    pub checksum: Option<(String, String)>,
    pub verify_certificates: bool,
}

/// Runs one download task to its end, logging like Proxmox and recording the outcome.
pub(crate) async fn run_download(sim: Arc<Sim>, upid: String, cancel: CancellationToken, job: DownloadJob) {
    let stats_key = (job.node.clone(), job.storage.clone(), job.file.clone());
    sim.with_world(|w| w.stats.downloads.entry(stats_key.clone()).or_default().started += 1);
    let outcome = download(&sim, &upid, &cancel, &job).await;
    sim.with_world(|w| {
        let count = w.stats.downloads.entry(stats_key).or_default();
        if outcome.is_ok() {
            count.succeeded += 1;
        } else {
            count.failed += 1;
        }
        w.finish(&upid, outcome);
    });
}

async fn download(sim: &Arc<Sim>, upid: &str, cancel: &CancellationToken, job: &DownloadJob) -> Result<(), String> {
    let dest = format!("{}/{}", job.dest_dir, job.file);
    let log = |line: String| sim.with_world(|w| w.log(upid, line));
    let existing = sim.with_world(|w| w.volumes.get(&job.key).and_then(|v| v.get(&job.file)).cloned());
    if let Some(volume) = existing {
        let Some((algorithm, expected)) = &job.checksum else {
            return Err(format!("refusing to override existing file '{dest}'"));
        };
        let got = volume.digests.get(algorithm).unwrap_or_default().to_string();
        if got.eq_ignore_ascii_case(expected) {
            log("calculating checksum of existing file...OK, got correct file already, no need to download".into());
            return Ok(());
        }
        log("calculating checksum of existing file...".into());
        return Err(format!("checksum mismatch: got '{got}' != expect '{expected}', aborting"));
    }

    log(format!("downloading {} to {dest}", job.url));
    let pid = sim.with_world(|w| w.tasks.iter().find(|t| t.upid == upid).map_or(0, |t| t.pid));
    let tmp = format!("{dest}.tmp_dwnl.{pid}");
    let fault = sim.with_world(|w| w.take_download_fault(&job.file));
    let (hasher, bytes) = tokio::select! {
        r = fetch(sim, upid, job, &tmp, fault) => r?,
        () = cancel.cancelled() => return Err("received interrupt".into()),
    };
    let digests = Arc::new(hasher.finish());
    if let Some((algorithm, expected)) = &job.checksum {
        let got = digests.get(algorithm).unwrap_or_default();
        if !got.eq_ignore_ascii_case(expected) {
            log("calculating checksum...".into());
            return Err(format!("checksum mismatch: got '{got}' != expect '{expected}'"));
        }
        log("calculating checksum...OK, checksum verified".into());
    }
    // The rename: the file appears under its final name only now, complete.
    sim.with_world(|w| {
        w.volumes
            .entry(job.key.clone())
            .or_default()
            .insert(job.file.clone(), Volume { size: bytes, ctime: now_epoch(), digests });
    });
    log(format!("download of '{}' to '{dest}' finished", job.url));
    Ok(())
}

/// The `wget` part: fetch, throttle to the scenario's bandwidth, hash, and log progress.
async fn fetch(
    sim: &Arc<Sim>,
    upid: &str,
    job: &DownloadJob,
    tmp: &str,
    fault: Option<DownloadFaultKind>,
) -> Result<(MultiHasher, u64), String> {
    let log = |line: String| sim.with_world(|w| w.log(upid, line));
    let url = reqwest::Url::parse(&job.url).map_err(|e| format!("download failed: wget: {e}"))?;
    let host = url.host_str().unwrap_or_default().to_string();
    // The simulator must never reach beyond this machine: other hosts "do not resolve".
    let loopback = host == "localhost"
        || host.trim_matches(|c| c == '[' || c == ']').parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    log(format!("--{}--  {}", wget_time(), job.url));
    if !loopback {
        return Err(format!("download failed: wget: unable to resolve host address '{host}'"));
    }
    let client = if job.verify_certificates { &sim.fetch_verified } else { &sim.fetch_unverified };
    let response = client.get(url.clone()).send().await.map_err(|e| {
        if is_tls_error(&e) {
            format!("download failed: ERROR: cannot verify {host}'s certificate")
        } else {
            format!("download failed: failed: {}", root_cause(&e))
        }
    })?;
    let status = response.status();
    log(format!(
        "HTTP request sent, awaiting response... {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    ));
    if !status.is_success() {
        return Err(format!(
            "download failed: ERROR {}: {}.",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ));
    }
    let length = response.content_length().unwrap_or(0);
    log(format!("Length: {length} ({}) [application/octet-stream]", human(length)));
    log(format!("Saving to: '{tmp}'"));

    let avail =
        sim.with_world(|w| w.storage(&job.storage).map_or(0, |s| s.total.saturating_sub(w.used_bytes(s, &job.node))));
    let started = Instant::now();
    let mut hasher = MultiHasher::default();
    let mut received: u64 = 0;
    let mut next_report: u64 = PROGRESS_STEP;
    let mut stream = response.bytes_stream();
    let mut first = true;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            format!("download failed: Read error at byte {received}/{length} ({}). Giving up.", root_cause(&e))
        })?;
        if fault == Some(DownloadFaultKind::Fail) && received + chunk.len() as u64 >= length / 2 {
            return Err(format!(
                "download failed: Read error at byte {received}/{length} (Connection reset by peer). Giving up."
            ));
        }
        if fault == Some(DownloadFaultKind::Hang) {
            std::future::pending::<()>().await;
        }
        if received + chunk.len() as u64 > avail {
            return Err(format!("download failed: Cannot write to '{tmp}' (No space left on device)."));
        }
        if first && fault == Some(DownloadFaultKind::Corrupt) && !chunk.is_empty() {
            let mut altered = chunk.to_vec();
            altered[0] ^= 0x5a;
            hasher.update(&altered);
        } else {
            hasher.update(&chunk);
        }
        first = false;
        received += chunk.len() as u64;
        throttle(sim, received, started).await;
        while received >= next_report && received < length {
            log(progress_line(next_report, length, started));
            next_report += PROGRESS_STEP;
        }
    }
    if received != length {
        return Err(format!("download failed: Read error at byte {received}/{length}. Giving up."));
    }
    let secs = started.elapsed().as_secs_f64().max(0.001);
    log(format!(
        "{} ({:.1} MB/s) - '{tmp}' saved [{received}/{length}]",
        wget_time(),
        received as f64 / secs / 1_000_000.0
    ));
    Ok((hasher, received))
}

/// wget's `dot:giga` style prints a line per 32 MiB.
const PROGRESS_STEP: u64 = 32 * 1024 * 1024;

fn progress_line(done: u64, total: u64, started: Instant) -> String {
    let pct = (done * 100).checked_div(total).unwrap_or(100);
    let secs = started.elapsed().as_secs_f64().max(0.001);
    let rate = done as f64 / secs;
    let eta = if rate > 0.0 { (total.saturating_sub(done)) as f64 / rate } else { 0.0 };
    format!(
        "{:>8}K ........ ........ ........ ........ {pct:>3}% {:.1}M {:.0}s",
        (done - PROGRESS_STEP) / 1024,
        rate / (1024.0 * 1024.0),
        eta
    )
}

async fn throttle(sim: &Sim, received: u64, started: Instant) {
    let bandwidth = sim.with_world(|w| w.bandwidth).max(1);
    let due = Duration::from_secs_f64(received as f64 / bandwidth as f64);
    let elapsed = started.elapsed();
    if due > elapsed {
        tokio::time::sleep(due - elapsed).await;
    }
}

fn wget_time() -> String {
    let t = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    t.trim_end_matches('Z').replace('T', " ")
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1}G", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{}M", b >> 20),
        b if b >= 1 << 10 => format!("{}K", b >> 10),
        b => b.to_string(),
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn is_tls_error(e: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        cause = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upid_parsing_follows_proxmox() {
        let upid = "UPID:pve1:0002F1A3:00A1B2C3:6853F0A1:download:alpine-3.22-default_20250617_amd64.tar.xz:root@pam:";
        assert_eq!(parse_upid(upid), Some(ParsedUpid { node: "pve1".into() }));
        assert!(parse_upid("UPID:pve:00061CB3:010BA69C:64EFECB0:imgcopy::root@pam:").is_some());
        assert!(parse_upid("UPID:pve1:0002F1A3:00A1B2C3:6853F0A1:download:x:svc@pve!cache:").is_some());
        assert!(parse_upid("UPID:pve1:2F1A3:00A1B2C3:6853F0A1:download:x:root@pam:").is_none());
        assert!(parse_upid("UPID:pve1:0002F1A3:00A1B2C3:6853F0A1:download:x:root@pam").is_none());
        assert!(parse_upid("garbage").is_none());
    }

    #[test]
    fn sizes_print_like_wget() {
        assert_eq!(human(126_129_049), "120M");
        assert_eq!(human(2048), "2K");
        assert!(!wget_time().contains('T'));
    }
}
