//! No decision in `src/` depends on the wording of an error: retry, repair, "already gone" and fencing are read
//! from typed failures. This scans the source for text tests (`.contains(`, `.starts_with(`, `.ends_with(`) on
//! anything named like error text, outside tests and outside the one parser of Proxmox's task exit statuses.

use std::path::{Path, PathBuf};

/// Receivers that hold error text, as the code names them.
const ERROR_TEXT: &[&str] = &[
    "error",
    "err",
    "e",
    "message",
    "msg",
    "exit",
    "exitstatus",
    "cause",
    "detail",
    "reason",
    "stderr",
    "to_string()",
    "source",
    "failure",
];

/// The parser of Proxmox's task `exitstatus` (wire text, read once into `TaskFailureKind`).
const PARSERS: &[&str] = &["src/pve/exit.rs"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The expression right before `.method(` at `at`: identifiers, dots, `::` and a trailing `()`.
fn receiver(line: &str, at: usize) -> &str {
    let head = &line[..at];
    let start = head
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_alphanumeric() || matches!(c, '_' | '.' | ':' | '(' | ')')))
        .map_or(0, |(i, c)| i + c.len_utf8());
    &head[start..]
}

fn text_tests(source: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in source.lines().enumerate() {
        // Unit tests sit at the end of a file, after `#[cfg(test)]`.
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        if line.trim_start().starts_with("//") {
            continue;
        }
        for method in [".contains(", ".starts_with(", ".ends_with("] {
            let mut from = 0;
            while let Some(i) = line[from..].find(method) {
                let at = from + i;
                let recv = receiver(line, at);
                let last = recv.rsplit(['.', ':']).next().unwrap_or(recv);
                let named = if recv.ends_with("to_string()") { "to_string()" } else { last };
                if ERROR_TEXT.contains(&named) {
                    found.push((n + 1, line.trim().to_string()));
                }
                from = at + method.len();
            }
        }
    }
    found
}

#[test]
fn no_decision_reads_the_wording_of_an_error() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    assert!(files.len() > 50, "the scan found the source ({} files)", files.len());
    let mut offences = Vec::new();
    for file in files {
        let rel = file.strip_prefix(root).unwrap_or(&file).to_string_lossy().replace('\\', "/");
        if PARSERS.contains(&rel.as_str()) || rel.ends_with("tests.rs") {
            continue;
        }
        let source = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{rel}: {e}"));
        offences.extend(text_tests(&source).into_iter().map(|(line, text)| format!("{rel}:{line}: {text}")));
    }
    assert!(offences.is_empty(), "decisions on error text:\n{}", offences.join("\n"));
}

#[test]
fn the_scan_sees_what_it_looks_for() {
    let bad = "        Err(e) if e.to_string().contains(\"does not exist\") => {}\n    if exit.contains(\"x\") {}\n";
    assert_eq!(text_tests(bad).len(), 2);
    let fine = "    if names.contains(&n) {}\n#[cfg(test)]\nmod tests { fn t() { assert!(error.contains(\"x\")); } }\n";
    assert!(text_tests(fine).is_empty());
}
