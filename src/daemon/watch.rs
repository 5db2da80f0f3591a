//! Watches the configuration file for edits: the parent directory (so editors' write-and-rename, `sed -i` and
//! Kubernetes ConfigMap symlink swaps are all seen) and, for a symlinked file, its target's directory too.
//! Only events that name the file, its target, or a link on the way there (ConfigMap's `..data`) become hints
//! ([`Control::ConfigChanged`]); writes to other files in those directories (a log file) are ignored. The daemon
//! debounces hints, re-reads the file and compares a hash of its bytes.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};

use super::control::{Control, ControlSender};

/// Keeps the OS watch alive while held.
#[derive(Debug)]
pub struct ConfigWatcher {
    _watcher: RecommendedWatcher,
    /// The directories watched.
    pub dirs: Vec<PathBuf>,
}

/// The file names whose events matter: the config's own, and every name on its symlink chain.
fn interesting_names(path: &Path) -> HashSet<OsString> {
    let mut names = HashSet::new();
    let mut current = path.to_path_buf();
    // Follow at most a few links: ConfigMaps use two (config.yaml → ..data/config.yaml, ..data → ..v1).
    for _ in 0..8 {
        if let Some(name) = current.file_name() {
            names.insert(name.to_os_string());
        }
        let Ok(target) = std::fs::read_link(&current) else { break };
        for part in target.components() {
            if let std::path::Component::Normal(name) = part {
                names.insert(name.to_os_string());
            }
        }
        current = match current.parent() {
            Some(dir) => dir.join(&target),
            None => target,
        };
    }
    if let Ok(real) = std::fs::canonicalize(path) {
        if let Some(name) = real.file_name() {
            names.insert(name.to_os_string());
        }
    }
    names
}

/// Whether an event concerns the configuration (an event without paths — a rescan — always does).
fn is_relevant(event: &notify::Event, names: &HashSet<OsString>) -> bool {
    event.paths.is_empty() || event.paths.iter().any(|p| p.file_name().is_some_and(|n| names.contains(n)))
}

/// Starts watching; each relevant event sends [`Control::ConfigChanged`] (dropped when the channel is full: a
/// hint is already queued).
pub fn watch(path: &Path, tx: ControlSender) -> notify::Result<ConfigWatcher> {
    let names = interesting_names(path);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Runs on notify's own thread: only try_send, never block, never log per event above trace.
        if event.is_ok_and(|e| is_relevant(&e, &names)) {
            let _ = tx.try_send(Control::ConfigChanged);
        }
    })?;
    let mut dirs = Vec::new();
    let parent = |p: &Path| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    dirs.push(parent(path));
    if let Ok(real) = std::fs::canonicalize(path) {
        let real_dir = parent(&real);
        if std::fs::canonicalize(&dirs[0]).ok().as_deref() != Some(real_dir.as_path()) {
            dirs.push(real_dir);
        }
    }
    for d in &dirs {
        watcher.watch(d, RecursiveMode::NonRecursive)?;
    }
    Ok(ConfigWatcher { _watcher: watcher, dirs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(paths: &[&str]) -> notify::Event {
        let mut e = notify::Event::new(notify::EventKind::Any);
        for p in paths {
            e = e.add_path(PathBuf::from(p));
        }
        e
    }

    #[test]
    fn only_events_about_the_file_or_its_links_count() {
        let dir = std::env::temp_dir().join(format!("vztmpld-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("..v1")).unwrap();
        std::fs::write(dir.join("..v1/config.yaml"), "x").unwrap();
        std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/config.yaml", dir.join("config.yaml")).unwrap();
        let names = interesting_names(&dir.join("config.yaml"));
        let d = dir.display();
        assert!(is_relevant(&event(&[&format!("{d}/config.yaml")]), &names));
        assert!(is_relevant(&event(&[&format!("{d}/..data_tmp"), &format!("{d}/..data")]), &names), "the swap");
        assert!(is_relevant(&event(&[&format!("{d}/..v1/config.yaml")]), &names), "the target");
        assert!(!is_relevant(&event(&[&format!("{d}/vztmpld.log")]), &names), "a log file beside it");
        assert!(!is_relevant(&event(&[&format!("{d}/.config.yaml.swp")]), &names));
        assert!(is_relevant(&event(&[]), &names), "a rescan");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
