//! The state directory: what the daemon learned, kept across restarts — learned certificate pins, the verify
//! ledger with its corrupt marks, the last inventory. Nothing in it is needed for correctness, only for
//! availability and speed: a missing or bad file costs one warning and a fresh start for that part.
//!
//! Each part is one JSON file, `{"format": "vztmpld-state", "part": …, "version": N, "saved_at": …, "data": …}`,
//! written atomically (a temporary file, fsync, rename over the old one, fsync of the directory) with mode 0600,
//! and read bounded in size. A file that cannot be used (truncated, not JSON, another part, a newer version) is
//! renamed to `<file>.bad` — kept aside for a person to look at, never read again — and the part starts empty.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// What a state file says it is.
const FORMAT: &str = "vztmpld-state";

/// One kind of state, in its own file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// The file's name in the directory.
    pub file: &'static str,
    /// The layout this build writes and reads; a file of a newer one is set aside.
    pub version: u32,
    /// The largest file read or written.
    pub limit: u64,
}

/// Certificate fingerprints learned from `GET /nodes` (a few per node).
pub const PINS: Part = Part { file: "pins.json", version: 1, limit: 8 << 20 };
/// When each cached file was last verified, and which are corrupt.
pub const LEDGER: Part = Part { file: "ledger.json", version: 1, limit: 32 << 20 };
/// Every node's vztmpl volumes as last observed (about 100 bytes per file per node, shared storages once).
pub const INVENTORY: Part = Part { file: "inventory.json", version: 1, limit: 256 << 20 };

/// Why a part could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: cannot {action}: {source}; check the state directory's permissions and free space")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {size} bytes is more than the {limit} bytes a state file may hold")]
    TooLarge { path: PathBuf, size: u64, limit: u64 },
    #[error("{path}: not a state file this daemon can use: {detail}")]
    Unusable { path: PathBuf, detail: String },
    #[error(
        "{path}: written by a newer vztmpld (layout {found}; this one reads up to {supported}); starting that part afresh"
    )]
    Newer { path: PathBuf, found: u32, supported: u32 },
}

impl StateError {
    /// The file (or directory) it is about.
    pub fn path(&self) -> &Path {
        match self {
            StateError::Io { path, .. }
            | StateError::TooLarge { path, .. }
            | StateError::Unusable { path, .. }
            | StateError::Newer { path, .. } => path,
        }
    }
}

/// A state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    path: PathBuf,
    /// The daemon's: created when missing, unusable files set aside. A one-shot command only reads.
    writable: bool,
}

#[derive(Serialize)]
struct Envelope<'a, T> {
    format: &'static str,
    part: &'static str,
    version: u32,
    saved_at: Timestamp,
    data: &'a T,
}

/// The envelope without its data: read first, so that a newer layout is told apart from a corrupt file.
#[derive(Deserialize)]
struct Header {
    format: String,
    part: String,
    version: u32,
}

#[derive(Deserialize)]
struct Loaded<T> {
    saved_at: Timestamp,
    data: T,
}

impl StateDir {
    /// The directory at `path`, created (mode 0700) when missing. An error names the path and what to do.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let io = |action, source| StateError::Io { path: path.to_path_buf(), action, source };
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path).map_err(|e| io("create", e))?;
        }
        let meta = std::fs::metadata(path).map_err(|e| io("read", e))?;
        if !meta.is_dir() {
            let source = std::io::Error::new(std::io::ErrorKind::NotADirectory, "it is not a directory");
            return Err(io("use", source));
        }
        Ok(Self { path: path.to_path_buf(), writable: true })
    }

    /// The directory at `path`, to read only (a one-shot command: it neither creates nor changes anything).
    pub fn read_only(path: &Path) -> Self {
        Self { path: path.to_path_buf(), writable: false }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file of a part.
    pub fn file(&self, part: Part) -> PathBuf {
        self.path.join(part.file)
    }

    /// Reads a part: `Ok(None)` when there is none yet; an error (after setting the file aside) when it cannot
    /// be used. The caller warns once and starts that part afresh.
    pub fn load<T: DeserializeOwned>(&self, part: Part) -> Result<Option<(T, Timestamp)>, StateError> {
        let path = self.file(part);
        let bytes = match crate::files::read_bounded(&path, part.limit) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(self.set_aside(part, StateError::Io { path: path.clone(), action: "read", source: e }));
            }
            // Too large, not a regular file, not readable: not a file this daemon can use.
            Err(e) => {
                let unusable = StateError::Unusable { path: path.clone(), detail: e.to_string() };
                return Err(self.set_aside(part, unusable));
            }
        };
        let unusable = |detail: String| StateError::Unusable { path: path.clone(), detail };
        let header: Header =
            serde_json::from_slice(&bytes).map_err(|e| self.set_aside(part, unusable(e.to_string())))?;
        if header.format != FORMAT || header.part != part.file {
            let detail = format!("it says it is '{}' of '{}'", header.part, header.format);
            return Err(self.set_aside(part, unusable(detail)));
        }
        if header.version > part.version {
            let newer = StateError::Newer { path: path.clone(), found: header.version, supported: part.version };
            return Err(self.set_aside(part, newer));
        }
        let loaded: Loaded<T> =
            serde_json::from_slice(&bytes).map_err(|e| self.set_aside(part, unusable(e.to_string())))?;
        Ok(Some((loaded.data, loaded.saved_at)))
    }

    /// Writes a part atomically: after a crash at any moment the file holds the old state or the new one.
    pub fn save<T: Serialize>(&self, part: Part, data: &T) -> Result<(), StateError> {
        let path = self.file(part);
        let envelope =
            Envelope { format: FORMAT, part: part.file, version: part.version, saved_at: Timestamp::now(), data };
        let bytes = serde_json::to_vec(&envelope)
            .map_err(|e| StateError::Unusable { path: path.clone(), detail: e.to_string() })?;
        if bytes.len() as u64 > part.limit {
            return Err(StateError::TooLarge { path, size: bytes.len() as u64, limit: part.limit });
        }
        let temporary = self.path.join(format!(".{}.tmp", part.file));
        let io = |action, source| StateError::Io { path: path.clone(), action, source };
        write_synced(&temporary, &bytes).map_err(|e| {
            let _ = std::fs::remove_file(&temporary);
            io("write", e)
        })?;
        std::fs::rename(&temporary, &path).map_err(|e| io("replace", e))?;
        // The rename itself is durable only once the directory is.
        std::fs::File::open(&self.path).and_then(|d| d.sync_all()).map_err(|e| io("sync the directory of", e))
    }

    /// Renames an unusable file to `<file>.bad` (replacing an older one: at most one is kept per part).
    fn set_aside(&self, part: Part, error: StateError) -> StateError {
        if !self.writable {
            return error;
        }
        let path = self.file(part);
        let aside = self.path.join(format!("{}.bad", part.file));
        if let Err(e) = std::fs::rename(&path, &aside) {
            tracing::debug!(file = %path.display(), error = %e, "cannot set the unusable state file aside");
        }
        error
    }
}

/// Creates (mode 0600) or truncates `path`, writes `bytes` and syncs them to disk.
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests;
