//! Watches the configuration file for edits: the parent directory (so editors' write-and-rename, `sed -i` and
//! Kubernetes ConfigMap symlink swaps are all seen) and, for a symlinked file, its target's directory too.
//! Events are only hints ([`Control::ConfigChanged`]): the daemon debounces them, re-reads the file and compares
//! a hash of its bytes. A producer for `super::run`'s control stream, wired by `cli` (and by tests).

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

/// Starts watching; each event sends [`Control::ConfigChanged`] (dropped when the channel is full: a hint is
/// already queued).
pub fn watch(path: &Path, tx: ControlSender) -> notify::Result<ConfigWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Runs on notify's own thread: only try_send, never block.
        if event.is_ok() {
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
