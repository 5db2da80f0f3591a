//! `vztmpld resolve NODE SPEC`: asks a running daemon's resolve API and prints the volid alone, for
//! `pct create 101 "$(vztmpld resolve pve1 debian-12)"`. Exit 0 cached, 1 missing, 2 blocked.

use std::path::Path;
use std::time::Duration;

use super::{ExitStatus, print};
use crate::daemon::resolve_api::Resolution;

/// What to ask.
#[derive(Debug)]
pub(super) struct Ask {
    pub(super) node: String,
    pub(super) template: String,
    pub(super) cluster: Option<String>,
    pub(super) wait: Option<String>,
    pub(super) fresh: bool,
}

pub(super) async fn run(addr: &str, token_file: Option<&Path>, ask: Ask) -> anyhow::Result<ExitStatus> {
    let wait = match &ask.wait {
        Some(w) => humantime::parse_duration(w).map_err(|e| anyhow::anyhow!("--wait {w}: {e} (e.g. 60s)"))?,
        None => Duration::ZERO,
    };
    let mut query: Vec<(&str, &str)> = vec![("node", &ask.node), ("template", &ask.template)];
    if let Some(c) = &ask.cluster {
        query.push(("cluster", c));
    }
    if let Some(w) = &ask.wait {
        query.push(("wait", w));
    }
    if ask.fresh {
        query.push(("fresh", "1"));
    }
    let timeout = wait.min(crate::daemon::resolve_api::MAX_WAIT) + Duration::from_secs(30);
    let (base, response) = super::status::get_from_daemon(addr, "/api/v1/resolve", &query, token_file, timeout).await?;
    let code = response.status();
    let body = response.text().await.unwrap_or_default();
    let answer: Resolution = match serde_json::from_str(&body) {
        Ok(a) if code.is_success() || code == reqwest::StatusCode::NOT_FOUND => a,
        _ => {
            let text: String = body.chars().take(300).collect();
            anyhow::bail!("the daemon at {base} answered {code}: {}", text.trim());
        }
    };
    let what = format!("{} on {}/{}", answer.template, answer.cluster, answer.node);
    match answer.state.as_str() {
        "cached" => {
            print(&format!("{}\n", answer.volid.unwrap_or_default()))?;
            Ok(ExitStatus::Success)
        }
        "blocked" => {
            eprintln!("vztmpld: {what} is blocked: {}", answer.reason.unwrap_or_default());
            Ok(ExitStatus::Pending)
        }
        "downloading" => {
            let progress = answer.progress.map(|p| format!(" ({p}%)")).unwrap_or_default();
            eprintln!("vztmpld: {what} is downloading{progress}; try --wait 5m");
            Ok(ExitStatus::Failure)
        }
        "unknown" => {
            eprintln!("vztmpld: {}", answer.reason.unwrap_or_else(|| format!("{what}: unknown")));
            Ok(ExitStatus::Failure)
        }
        _ => {
            let hint = if answer.configured { "the daemon downloads it" } else { "it is not in the configuration" };
            eprintln!("vztmpld: {what} is missing ({hint})");
            Ok(ExitStatus::Failure)
        }
    }
}
