//! How a Proxmox task ended, read once from its `exitstatus` (`GET /nodes/{node}/tasks/{upid}/status`).
//!
//! Proxmox reports a task's end only as text: `OK`, `WARNINGS: N`, the worker's `die` message, or
//! `unexpected status` for a worker that vanished (`UPID.pm status_is_error`). This module is the one place that
//! reads that text — a parser of Proxmox's wire format, like the JSON decoders in `types.rs` — and turns it into
//! [`TaskExit`]; every decision after it (retry, repair, "already gone") matches on [`TaskFailure`]'s variants.

use std::fmt;

/// A stopped task's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskExit {
    /// `OK`.
    Ok,
    /// `WARNINGS: N`: a success that logged warnings.
    Warnings(u32),
    /// Anything else.
    Failed(TaskFailure),
}

impl TaskExit {
    /// Reads an `exitstatus` (`None`: a stopped task without one, which Proxmox words `unexpected status`).
    pub fn parse(exitstatus: Option<&str>) -> Self {
        match exitstatus.map(str::trim) {
            Some("OK") => TaskExit::Ok,
            Some(s) => match s.strip_prefix("WARNINGS: ").and_then(|n| n.parse().ok()) {
                Some(n) => TaskExit::Warnings(n),
                None => TaskExit::Failed(TaskFailure::parse(s)),
            },
            None => TaskExit::Failed(TaskFailure::parse("unexpected status")),
        }
    }
}

/// What kind of failure a task reported. Each variant keeps Proxmox's own words (`message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    pub kind: TaskFailureKind,
    /// The task's `exitstatus`, as Proxmox wrote it.
    pub message: String,
}

/// The kinds of task failure vztmpld acts on differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskFailureKind {
    /// The file's hash does not match the expected checksum (a corrupt cached file, or a tampered mirror).
    ChecksumMismatch,
    /// The target file exists and the task will not overwrite it (download-url without a checksum, OCI pulls).
    RefusedOverwrite,
    /// The storage filled up while writing.
    NoSpace,
    /// The transfer itself failed: the source or mirror is unreachable, refused or cut the connection.
    DownloadFailed,
    /// The registry pull (skopeo) failed: the registry is unreachable or refused the reference.
    PullFailed,
    /// The node refused an operation for lack of a privilege.
    PermissionDenied,
    /// The task was stopped (by vztmpld past its deadline, or by a person).
    Interrupted,
    /// The volume to delete is not there (another writer deleted it first).
    VolumeMissing,
    /// The worker ended without writing an end (killed, or the node rebooted).
    Vanished,
    /// Anything else Proxmox said.
    Other,
}

/// Proxmox's words for each kind, in the order they are tried: the first that matches wins. Wording from
/// `common:PVE/Tools.pm` (download_file_from_url), `sto:PVE/API2/Storage/Content.pm`, `common:RESTEnvironment.pm`
/// (fork_worker), `mgr:PVE/API2/Nodes.pm` (oci-registry-pull) and `common:PVE/Tools.pm run_command`.
const PATTERNS: &[(Match, TaskFailureKind)] = &[
    (Match::Prefix("checksum mismatch"), TaskFailureKind::ChecksumMismatch),
    (Match::Prefix("refusing to override existing file"), TaskFailureKind::RefusedOverwrite),
    (Match::Anywhere("No space left on device"), TaskFailureKind::NoSpace),
    (Match::Anywhere("received interrupt"), TaskFailureKind::Interrupted),
    (Match::Anywhere("interrupted by signal"), TaskFailureKind::Interrupted),
    (Match::Prefix("download failed"), TaskFailureKind::DownloadFailed),
    (Match::Prefix("command 'skopeo"), TaskFailureKind::PullFailed),
    (Match::Prefix("command '/usr/bin/skopeo"), TaskFailureKind::PullFailed),
    (Match::Anywhere("Permission check failed"), TaskFailureKind::PermissionDenied),
    (Match::Anywhere("permission denied"), TaskFailureKind::PermissionDenied),
    (Match::Suffix("does not exist"), TaskFailureKind::VolumeMissing),
    (Match::Exact("unexpected status"), TaskFailureKind::Vanished),
];

#[derive(Debug, Clone, Copy)]
enum Match {
    Exact(&'static str),
    Prefix(&'static str),
    Suffix(&'static str),
    Anywhere(&'static str),
}

impl Match {
    fn matches(self, text: &str) -> bool {
        match self {
            Match::Exact(p) => text == p,
            Match::Prefix(p) => text.starts_with(p),
            Match::Suffix(p) => text.ends_with(p),
            Match::Anywhere(p) => text.contains(p),
        }
    }
}

impl TaskFailure {
    /// Classifies a failed task's `exitstatus`.
    pub fn parse(exitstatus: &str) -> Self {
        let message = exitstatus.trim();
        // Proxmox may quote the volume and add a newline-turned-space; the suffix is read without either.
        let bare = message.trim_end_matches(['.', ' ', '\n']);
        let kind = PATTERNS.iter().find(|(m, _)| m.matches(bare)).map_or(TaskFailureKind::Other, |(_, kind)| *kind);
        Self { kind, message: message.to_string() }
    }

    /// Whether the same task may succeed on a later pass without anyone changing anything.
    pub fn retryable(&self) -> bool {
        self.kind.retryable()
    }

    /// A short, fixed label for metrics and JSON (`checksum_mismatch`, `no_space`, …).
    pub fn metric_label(&self) -> &'static str {
        self.kind.metric_label()
    }
}

impl TaskFailureKind {
    /// Whether a later pass may succeed unchanged: a full disk is freed, a mirror comes back, a stopped or
    /// vanished task is started again; a wrong checksum, a refused overwrite or a missing privilege stay.
    pub fn retryable(self) -> bool {
        !matches!(
            self,
            TaskFailureKind::ChecksumMismatch | TaskFailureKind::RefusedOverwrite | TaskFailureKind::PermissionDenied
        )
    }

    /// A short, fixed label for metrics and JSON.
    pub fn metric_label(self) -> &'static str {
        match self {
            TaskFailureKind::ChecksumMismatch => "checksum_mismatch",
            TaskFailureKind::RefusedOverwrite => "refused_overwrite",
            TaskFailureKind::NoSpace => "no_space",
            TaskFailureKind::DownloadFailed => "download_failed",
            TaskFailureKind::PullFailed => "pull_failed",
            TaskFailureKind::PermissionDenied => "permission_denied",
            TaskFailureKind::Interrupted => "interrupted",
            TaskFailureKind::VolumeMissing => "volume_missing",
            TaskFailureKind::Vanished => "vanished",
            TaskFailureKind::Other => "task_failed",
        }
    }

    /// What a person can do about it (empty when a retry is all it takes).
    fn advice(self) -> &'static str {
        match self {
            TaskFailureKind::ChecksumMismatch => {
                "the file does not match its checksum: check the source or mirror, and the configured checksum"
            }
            TaskFailureKind::RefusedOverwrite => {
                "a file of that name is already there: delete it on the storage, or give the template a checksum"
            }
            TaskFailureKind::NoSpace => "free space on the storage, or set another storage; retried next pass",
            TaskFailureKind::DownloadFailed => "the source or mirror did not deliver; retried next pass",
            TaskFailureKind::PullFailed => "the registry did not deliver the image; retried next pass",
            TaskFailureKind::PermissionDenied => "grant the token the privilege the task names",
            TaskFailureKind::Interrupted => "the task was stopped; retried next pass",
            TaskFailureKind::VolumeMissing => "it was already gone",
            TaskFailureKind::Vanished => "the task's worker ended without a result (killed, or the node restarted)",
            TaskFailureKind::Other => "",
        }
    }
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind.advice() {
            "" => f.write_str(&self.message),
            advice => write!(f, "{} ({advice})", self.message),
        }
    }
}

impl std::error::Error for TaskFailure {}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> TaskFailureKind {
        match TaskExit::parse(Some(s)) {
            TaskExit::Failed(f) => f.kind,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn successes_are_ok_and_warnings() {
        assert_eq!(TaskExit::parse(Some("OK")), TaskExit::Ok);
        assert_eq!(TaskExit::parse(Some("WARNINGS: 2")), TaskExit::Warnings(2));
        assert!(matches!(TaskExit::parse(Some("WARNINGS: x")), TaskExit::Failed(_)));
        assert_eq!(
            TaskExit::parse(None),
            TaskExit::Failed(TaskFailure { kind: TaskFailureKind::Vanished, message: "unexpected status".into() })
        );
    }

    #[test]
    fn proxmox_wordings_are_classified() {
        use TaskFailureKind::*;
        let cases = [
            ("checksum mismatch: got 'a' != expect 'b', aborting", ChecksumMismatch),
            ("refusing to override existing file '/var/lib/vz/template/cache/x.tar'", RefusedOverwrite),
            ("download failed: Cannot write to '/x.tmp_dwnl.1' (No space left on device).", NoSpace),
            ("download failed: Read error at byte 5/10 (Connection reset by peer). Giving up.", DownloadFailed),
            ("received interrupt", Interrupted),
            ("command 'skopeo copy docker://nginx:1 oci-archive:/x' failed: exit code 1", PullFailed),
            ("volume 'local:vztmpl/x.tar.xz' does not exist", VolumeMissing),
            ("unexpected status", Vanished),
            ("Permission check failed (/storage/local, Datastore.Allocate)", PermissionDenied),
            ("something new", Other),
        ];
        for (text, want) in cases {
            assert_eq!(kind(text), want, "{text}");
        }
    }

    #[test]
    fn only_what_a_person_must_fix_is_final() {
        assert!(!TaskFailure::parse("checksum mismatch: got 'a' != expect 'b'").retryable());
        assert!(!TaskFailure::parse("refusing to override existing file 'x'").retryable());
        assert!(TaskFailure::parse("download failed: Connection refused.").retryable());
        assert!(TaskFailure::parse("received interrupt").retryable());
        assert!(TaskFailure::parse("something new").retryable());
    }

    #[test]
    fn display_keeps_proxmox_words_and_adds_what_to_do() {
        let f = TaskFailure::parse("checksum mismatch: got 'a' != expect 'b'");
        let text = f.to_string();
        assert!(text.starts_with("checksum mismatch: got 'a' != expect 'b' ("), "{text}");
        assert_eq!(TaskFailure::parse("something new").to_string(), "something new");
        assert_eq!(f.metric_label(), "checksum_mismatch");
    }
}
