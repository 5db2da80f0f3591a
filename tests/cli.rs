//! The command line's own outputs: shell completions and the manual page.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

mod common;

#[test]
fn completions_for_bash_zsh_and_fish_name_the_subcommands() {
    for (shell, marker) in [("bash", "_vztmpld()"), ("zsh", "#compdef vztmpld"), ("fish", "complete -c vztmpld")] {
        let (code, out, err) = common::vztmpld(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(out.contains(marker), "{shell}: {}", &out[..out.len().min(300)]);
        for sub in ["check", "plan", "apply", "run", "status"] {
            assert!(out.contains(sub), "{shell} completes {sub}");
        }
    }
    let (code, _, err) = common::vztmpld(&["completions", "tcsh"]);
    assert_eq!(code, 2, "clap refuses an unknown shell: {err}");
}

#[test]
fn the_manual_page_is_roff_with_every_command() {
    let (code, out, err) = common::vztmpld(&["man"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(".ie") || out.contains(".TH vztmpld"), "{}", &out[..out.len().min(200)]);
    assert!(out.contains(".TH vztmpld 1"), "section 1");
    for sub in ["check", "plan", "apply", "run", "status", "completions"] {
        assert!(out.contains(sub), "the page lists {sub}");
    }
}

#[test]
fn the_version_names_the_commit_when_built_from_a_checkout() {
    let (code, out, _) = common::vztmpld(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with(&format!("vztmpld {}", env!("CARGO_PKG_VERSION"))), "{out}");
    let in_checkout = std::process::Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match in_checkout {
        Some(commit) => assert!(out.contains(&format!("({commit})")), "{out} vs {commit}"),
        None => eprintln!("skipped the commit check: not a git checkout"),
    }
}
