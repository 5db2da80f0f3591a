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
