//! The pure core (`crates/vztmpld-core`: models, planner, scheduler) can do no I/O: its manifest names no
//! runtime, HTTP or file-system crate, and its source touches no file, socket, process or environment. The
//! compiler then enforces "plan does no I/O" — code there has nothing to do I/O with.

use std::path::{Path, PathBuf};

const FORBIDDEN_CRATES: &[&str] = &[
    "tokio",
    "tokio-util",
    "tokio-rustls",
    "hyper",
    "hyper-util",
    "reqwest",
    "axum",
    "notify",
    "libc",
    "rustls",
    "sd-notify",
    "signal-hook",
    "futures-util",
    "tracing",
    "yaml_serde",
    "yaml-rust2",
];

const FORBIDDEN_PATHS: &[&str] =
    &["std::fs", "std::process", "std::env", "std::thread", "TcpStream", "TcpListener", "UdpSocket", "File::open"];

fn core_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/vztmpld-core")
}

/// The crate names under `[dependencies]` (not dev-dependencies: tests may use the simulator).
fn dependencies(manifest: &str) -> Vec<String> {
    let mut in_deps = false;
    let mut names = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && !line.is_empty() && !line.starts_with('#') {
            if let Some((name, _)) = line.split_once('=') {
                names.push(name.trim().split('.').next().unwrap_or_default().to_string());
            }
        }
    }
    names
}

#[test]
fn the_core_depends_on_nothing_that_does_io() {
    let manifest = std::fs::read_to_string(core_dir().join("Cargo.toml")).unwrap_or_else(|e| panic!("{e}"));
    let deps = dependencies(&manifest);
    assert!(deps.iter().any(|d| d == "serde"), "the manifest was read: {deps:?}");
    let bad: Vec<&String> = deps.iter().filter(|d| FORBIDDEN_CRATES.contains(&d.as_str())).collect();
    assert!(bad.is_empty(), "the core may not depend on {bad:?}");
}

#[test]
fn the_core_source_touches_no_file_socket_or_process() {
    let mut offences = Vec::new();
    let mut stack = vec![core_dir().join("src")];
    let mut files = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            files += 1;
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // Unit tests may read fixtures; the code above them may not.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (n, line) in code.lines().enumerate() {
                if let Some(p) = FORBIDDEN_PATHS.iter().find(|p| line.contains(*p)) {
                    offences.push(format!("{}:{}: {p}", path.display(), n + 1));
                }
            }
        }
    }
    assert!(files >= 10, "the core's source was read ({files} files)");
    assert!(offences.is_empty(), "I/O in the pure core:\n{}", offences.join("\n"));
}
