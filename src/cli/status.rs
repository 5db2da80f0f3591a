//! `vztmpld status`: a running daemon's status as a nodes × templates table.

use super::{ExitStatus, print};
use crate::daemon::status::{Status, TemplateState};

/// GETs `path` from the daemon's status server at `addr` (`host:port` or a URL), with the bearer token when
/// given; the base URL (for messages) and the response.
pub(super) async fn get_from_daemon(
    addr: &str,
    path: &str,
    query: &[(&str, &str)],
    token_file: Option<&std::path::Path>,
    timeout: std::time::Duration,
) -> anyhow::Result<(String, reqwest::Response)> {
    let base = if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let client = reqwest::Client::builder().timeout(timeout).no_proxy().build()?;
    let mut request = client.get(format!("{base}{path}")).query(query);
    if let Some(path) = token_file {
        let token = crate::files::read_bounded_text(path, crate::files::SECRET_LIMIT)
            .map_err(|e| anyhow::anyhow!("{}: cannot read the token: {e}", path.display()))?;
        request = request.bearer_auth(token.trim());
    }
    let response = request
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the daemon at {base}: {e} (is `vztmpld run` up? see --addr)"))?;
    Ok((base, response))
}

/// Fetches `/api/v1/status` from `addr` and prints it; exit 0 when every template is cached, 1 otherwise.
pub(super) async fn run(addr: &str, token_file: Option<&std::path::Path>, json: bool) -> anyhow::Result<ExitStatus> {
    let timeout = std::time::Duration::from_secs(10);
    let (base, response) = get_from_daemon(addr, "/api/v1/status", &[], token_file, timeout).await?;
    if !response.status().is_success() {
        let code = response.status();
        let body: String = response.text().await.unwrap_or_default().chars().take(200).collect();
        anyhow::bail!("the daemon at {base} answered {code}: {} (see --token-file)", body.trim());
    }
    let status: Status = response.json().await?;
    if json {
        print(&(serde_json::to_string_pretty(&status)? + "\n"))?;
    } else {
        print(&render(&status))?;
    }
    Ok(if status.ready && status.all_cached() { ExitStatus::Success } else { ExitStatus::Failure })
}

/// `↓ 42% 11.2 MiB/s 15s`: percent, then rate and time left when known.
fn downloading_cell(t: &crate::daemon::status::TemplateStatus) -> String {
    let mut cell = format!("↓ {}%", t.detail().progress.unwrap_or(0));
    if let Some(rate) = t.detail().rate_bytes_per_second {
        cell.push_str(&format!(" {:.1} MiB/s", rate as f64 / (1024.0 * 1024.0)));
    }
    if let Some(eta) = t.detail().eta_seconds {
        cell.push_str(&format!(" {eta}s"));
    }
    cell
}

/// The table: one row per node, one column per template; ✓ cached, ↓ downloading (with %), ✗ failed or
/// blocked (reasons listed below), · missing.
pub(super) fn render(status: &Status) -> String {
    let mut templates: Vec<String> = Vec::new();
    for t in status.clusters.iter().flat_map(|c| &c.nodes).flat_map(|n| &n.templates) {
        if !templates.iter().any(|l| **l == *t.template) {
            templates.push(t.template.to_string());
        }
    }
    let mut rows: Vec<Vec<String>> =
        vec![std::iter::once("NODE".to_string()).chain(templates.iter().cloned()).collect()];
    let mut notes = Vec::new();
    for c in &status.clusters {
        for n in &c.nodes {
            let mut row = vec![format!("{}/{}", c.name, n.name)];
            for label in &templates {
                let cell = match n.templates.iter().find(|t| *t.template == **label) {
                    None => "".to_string(),
                    Some(t) => match t.state {
                        TemplateState::Cached => "✓".to_string(),
                        TemplateState::Downloading => downloading_cell(t),
                        TemplateState::Queued => "⋯ queued".to_string(),
                        TemplateState::Verifying => "↓ verifying".to_string(),
                        TemplateState::Missing => "·".to_string(),
                        TemplateState::Failed | TemplateState::Blocked | TemplateState::Corrupt => {
                            notes.push(format!(
                                "{}/{} {}: {}",
                                c.name,
                                n.name,
                                t.template,
                                t.error().unwrap_or_default()
                            ));
                            format!("✗ [{}]", notes.len())
                        }
                    },
                };
                row.push(cell);
            }
            rows.push(row);
        }
    }
    let cols = rows[0].len();
    let widths: Vec<usize> =
        (0..cols).map(|i| rows.iter().map(|r| r.get(i).map_or(0, |c| c.chars().count())).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in &rows {
        let cells: Vec<String> =
            r.iter().enumerate().map(|(i, c)| format!("{c}{}", " ".repeat(widths[i] - c.chars().count()))).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    for (i, n) in notes.iter().enumerate() {
        out.push_str(&format!("[{}] {n}\n", i + 1));
    }
    let last = status.last_pass.as_ref().map_or("no pass yet".to_string(), |p| {
        format!(
            "last pass {} ({}, trigger {})",
            p.outcome.as_str(),
            p.finished_at.map_or_else(|| "running".into(), |t| t.to_string()),
            p.trigger
        )
    });
    out.push_str(&format!("config generation {} · {last}\n", status.config.generation));
    if let Some(ha) = status.ha() {
        out.push_str(&ha_line(ha));
    }
    out
}

/// `ha: standby (mgmt2:812) · mgmt1:733 leads since … (status at …)`.
fn ha_line(ha: &crate::ha::HaStatus) -> String {
    let mut line = format!("ha: {} ({})", ha.role.as_str(), ha.id);
    if let Some(l) = ha.leader.as_ref().filter(|_| ha.role != crate::ha::Role::Leader) {
        line.push_str(&format!(" · {} leads", l.id));
        if let Some(since) = &l.since {
            line.push_str(&format!(" since {since}"));
        }
        if let Some(url) = &l.status_url {
            line.push_str(&format!(" (status at {url})"));
        }
    } else if let Some(since) = &ha.since {
        line.push_str(&format!(" since {since}"));
    }
    if let Some(e) = &ha.etcd_error {
        line.push_str(&format!(" · etcd: {e}"));
    }
    line.push('\n');
    line
}
