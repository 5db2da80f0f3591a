//! Task endpoints: list, status, log and stop, with Proxmox's visibility rules.

use serde_json::{Value, json};

use super::auth::may_see;
use super::{Ctx, Reply};
use crate::http::ApiError;
use crate::state::World;
use crate::tasks;

fn task_row(t: &crate::state::Task) -> Value {
    let (user, tokenid) = match t.user.split_once('!') {
        Some((u, tok)) => (u.to_string(), Some(tok.to_string())),
        None => (t.user.clone(), None),
    };
    let mut row = json!({
        "upid": t.upid, "node": t.node, "pid": t.pid, "pstart": t.pstart, "starttime": t.starttime,
        "type": t.kind, "id": t.id, "user": user,
    });
    if let Some(tok) = tokenid {
        row["tokenid"] = json!(tok);
    }
    row
}

pub(super) fn task_list(w: &World, ctx: &Ctx) -> Result<Reply, ApiError> {
    let source = ctx.param("source").unwrap_or("archive");
    let errors_only = ctx.flag("errors", false);
    let mut rows: Vec<(u64, Value)> = w
        .tasks
        .iter()
        .filter(|t| t.node == ctx.node)
        .filter(|t| may_see(&ctx.token, &t.user, &ctx.node, "Sys.Audit"))
        .filter(|t| match source {
            "active" => t.end.is_none(),
            "all" => true,
            _ => t.end.is_some(),
        })
        .filter(|t| ctx.param("typefilter").is_none_or(|f| f == t.kind))
        .filter(|t| ctx.param("userfilter").is_none_or(|f| t.user.to_lowercase().contains(&f.to_lowercase())))
        .filter(|t| !errors_only || t.end.as_ref().is_some_and(|(_, s)| s != "OK"))
        .filter(|t| ctx.param("since").is_none_or(|s| s.parse::<u64>().is_ok_and(|s| t.starttime >= s)))
        .filter(|t| ctx.param("until").is_none_or(|u| u.parse::<u64>().is_ok_and(|u| t.starttime <= u)))
        .map(|t| {
            let mut row = task_row(t);
            match &t.end {
                Some((end, status)) => {
                    row["endtime"] = json!(end);
                    row["status"] = json!(status);
                }
                None => row["status"] = json!("RUNNING"),
            }
            (t.starttime, row)
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    let total = rows.len();
    let start = usize::try_from(ctx.int("start", 0)).unwrap_or(usize::MAX);
    let limit = usize::try_from(ctx.int("limit", 50)).unwrap_or(usize::MAX);
    let page: Vec<Value> = rows.into_iter().skip(start).take(limit).map(|(_, r)| r).collect();
    Ok((Value::Array(page), Some(total)))
}

pub(super) fn find_task<'a>(w: &'a World, ctx: &Ctx) -> Result<&'a crate::state::Task, ApiError> {
    let upid = ctx.param("upid").unwrap_or_default();
    let Some(parsed) = tasks::parse_upid(upid) else {
        return Err(ApiError::param("upid", format!("unable to parse worker upid '{upid}'")));
    };
    // A task is only known on the node that ran it.
    let found = w.tasks.iter().find(|t| t.upid == upid && t.node == ctx.node && parsed.node == ctx.node);
    found.ok_or_else(|| ApiError::param("upid", "no such task"))
}

pub(super) fn task_status(w: &World, ctx: &Ctx) -> Result<Reply, ApiError> {
    let t = find_task(w, ctx)?;
    if !may_see(&ctx.token, &t.user, &ctx.node, "Sys.Audit") {
        return Err(ApiError::permission(&format!("/nodes/{}", ctx.node), "Sys.Audit"));
    }
    let mut row = task_row(t);
    match &t.end {
        Some((_, status)) => {
            row["status"] = json!("stopped");
            row["exitstatus"] = json!(status);
        }
        None => row["status"] = json!("running"),
    }
    Ok((row, None))
}

pub(super) fn task_log(w: &World, ctx: &Ctx) -> Result<Reply, ApiError> {
    let t = find_task(w, ctx)?;
    if !may_see(&ctx.token, &t.user, &ctx.node, "Sys.Audit") {
        return Err(ApiError::permission(&format!("/nodes/{}", ctx.node), "Sys.Audit"));
    }
    let start = usize::try_from(ctx.int("start", 0)).unwrap_or(usize::MAX);
    let limit = match ctx.int("limit", 50) {
        0 => usize::MAX,
        n => usize::try_from(n).unwrap_or(usize::MAX),
    };
    if t.log.is_empty() {
        return Ok((json!([{"n": 1, "t": "no content"}]), Some(1)));
    }
    let lines: Vec<Value> =
        t.log.iter().enumerate().skip(start).take(limit).map(|(i, line)| json!({"n": i + 1, "t": line})).collect();
    Ok((Value::Array(lines), Some(t.log.len())))
}

pub(super) fn task_stop(w: &World, ctx: &Ctx) -> Result<Reply, ApiError> {
    let t = find_task(w, ctx)?;
    if !may_see(&ctx.token, &t.user, &ctx.node, "Sys.Modify") {
        return Err(ApiError::permission(&format!("/nodes/{}", ctx.node), "Sys.Modify"));
    }
    // SIGTERM: the worker removes its temp file and ends in an error.
    t.cancel.cancel();
    Ok((Value::Null, None))
}
