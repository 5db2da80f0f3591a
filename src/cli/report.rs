//! Human and machine renderings of plans and apply results.

use std::collections::BTreeMap;

use serde_json::json;

use crate::reconcile::Outcome;
use crate::reconcile::plan::{ItemState, Plan, Scope, summary};

/// One row of the table.
struct Row {
    cluster: String,
    node: String,
    /// The row stands for the whole cluster (`*`: it could not be observed).
    cluster_wide: bool,
    template: String,
    state: String,
    storage: String,
    detail: String,
}

/// Renders the plan (and, after apply, the outcomes) as an aligned text table with a summary line;
/// `running` marks planned downloads a Proxmox task is already doing (`in progress`).
pub(super) fn render_text(plan: &Plan, outcomes: Option<&[Outcome]>, running: &BTreeMap<usize, String>) -> String {
    let rows: Vec<Row> = plan
        .items
        .iter()
        .map(|item| {
            let (state, storage, detail) = match &item.state {
                ItemState::Cached { volid } => {
                    ("cached".to_string(), volid.split(':').next().unwrap_or("").to_string(), volid.to_string())
                }
                ItemState::Download { download } => download_cells(plan, *download, outcomes, running),
                ItemState::Blocked(b) => ("blocked".to_string(), "-".to_string(), b.to_string()),
            };
            Row {
                cluster: item.cluster.to_string(),
                node: item.node.to_string(),
                cluster_wide: item.node == Scope::Cluster,
                template: item.template.to_string(),
                state,
                storage,
                detail,
            }
        })
        .collect();
    let mut rows = collapse_unobserved(rows);
    rows.extend(deletion_rows(plan, outcomes));
    let header = Row {
        cluster: "CLUSTER".into(),
        node: "NODE".into(),
        cluster_wide: false,
        template: "TEMPLATE".into(),
        state: "STATE".into(),
        storage: "STORAGE".into(),
        detail: "DETAIL".into(),
    };
    let mut out = table(&header, &rows);
    match outcomes {
        None => out.push_str(&format!("Plan: {}\n", summary(plan))),
        Some(o) => {
            let downloads = &o[..plan.downloads.len().min(o.len())];
            let ok = downloads.iter().filter(|o| o.succeeded()).count();
            out.push_str(&format!(
                "Applied: {ok} of {} downloads finished; plan was {}\n",
                downloads.len(),
                summary(plan)
            ));
        }
    }
    out
}

/// One row per superseded build `prune` deletes (its outcome after apply).
fn deletion_rows(plan: &Plan, outcomes: Option<&[Outcome]>) -> Vec<Row> {
    let first = plan.downloads.len();
    plan.deletions
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let kept = format!("{} (keeping {})", d.volid, d.kept.join(", "));
            let (state, detail) = match (&d.blocked, outcomes.and_then(|o| o.get(first + i))) {
                (Some(reason), _) => ("blocked".to_string(), format!("{} not deleted: {reason}", d.volid)),
                (None, None) => ("delete".to_string(), kept),
                (None, Some(Outcome::Finished { .. } | Outcome::AlreadyAbsent)) => ("deleted".to_string(), kept),
                (None, Some(Outcome::AlreadyPresent)) => ("already present".to_string(), kept),
                (None, Some(Outcome::Failed { failure, .. })) => {
                    ("failed".to_string(), format!("{}: {failure}", d.volid))
                }
            };
            Row {
                cluster: d.cluster.clone(),
                node: if d.shared { format!("{} (shared)", d.node) } else { d.node.clone() },
                cluster_wide: false,
                template: d.template.clone(),
                state,
                storage: d.storage.clone(),
                detail,
            }
        })
        .collect()
}

/// The state, storage and detail of a planned download, as planned, running or ended.
fn download_cells(
    plan: &Plan,
    download: usize,
    outcomes: Option<&[Outcome]>,
    running: &BTreeMap<usize, String>,
) -> (String, String, String) {
    let d = &plan.downloads[download];
    let how = match &d.source {
        crate::reconcile::plan::Source::Appliance { .. } => "appliance index",
        crate::reconcile::plan::Source::Url { .. } => "download-url",
        crate::reconcile::plan::Source::Oci { .. } => "oci-registry-pull",
    };
    let shared = if d.shared { format!(", shared by {}", d.for_nodes.join(", ")) } else { String::new() };
    let planned = format!("{} via {} ({how}{shared})", d.file, d.node);
    match outcomes.and_then(|o| o.get(download)) {
        None => match running.get(&download) {
            Some(upid) => {
                ("in progress".to_string(), d.storage.clone(), format!("{} by task {upid} (apply adopts it)", d.file))
            }
            None => ("download".to_string(), d.storage.clone(), planned),
        },
        Some(Outcome::Finished { seconds, adopted, .. }) => {
            let note = if *adopted { ", adopted a running task" } else { "" };
            ("downloaded".to_string(), d.storage.clone(), format!("{} in {seconds}s{note}", d.volid()))
        }
        Some(Outcome::AlreadyPresent | Outcome::AlreadyAbsent) => {
            ("cached".to_string(), d.storage.clone(), format!("{} (another writer put it there meanwhile)", d.volid()))
        }
        Some(Outcome::Failed { failure, .. }) => ("failed".to_string(), d.storage.clone(), failure.to_string()),
    }
}

/// The rows under the header, in aligned columns.
fn table(header: &Row, rows: &[Row]) -> String {
    let width = |f: fn(&Row) -> &str| rows.iter().chain([header]).map(|r| f(r).chars().count()).max().unwrap_or(0);
    let w =
        [width(|r| &r.cluster), width(|r| &r.node), width(|r| &r.template), width(|r| &r.state), width(|r| &r.storage)];
    let mut out = String::new();
    for r in [header].into_iter().chain(rows.iter()) {
        out.push_str(&format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {:<w4$}  {}\n",
            r.cluster,
            r.node,
            r.template,
            r.state,
            r.storage,
            r.detail,
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4]
        ));
    }
    out
}

/// A cluster that could not be observed is one row (`*`, all its templates), not one row per template.
fn collapse_unobserved(rows: Vec<Row>) -> Vec<Row> {
    let mut out: Vec<Row> = Vec::with_capacity(rows.len());
    let mut templates = 0;
    for row in rows {
        let same = row.cluster_wide
            && out.last().is_some_and(|last: &Row| {
                last.cluster_wide && last.cluster == row.cluster && last.detail == row.detail
            });
        if same {
            templates += 1;
            if let Some(last) = out.last_mut() {
                last.template = format!("({templates} templates)");
            }
            continue;
        }
        templates = 1;
        out.push(row);
    }
    out
}

/// The plan (and outcomes) as JSON; `in_progress` (download index → UPID) only when a task already runs one.
pub(super) fn render_json(plan: &Plan, outcomes: Option<&[Outcome]>, running: &BTreeMap<usize, String>) -> String {
    let mut v = json!({ "items": plan.items, "downloads": plan.downloads });
    if !plan.deletions.is_empty() {
        v["deletions"] = json!(plan.deletions);
    }
    if !running.is_empty() {
        v["in_progress"] = json!(running);
    }
    if let Some(o) = outcomes {
        v["outcomes"] = json!(o);
    }
    serde_json::to_string_pretty(&v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
