//! Every configuration error names file:line:column and the fix; a good file loads; secrets stay hidden.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

use std::path::{Path, PathBuf};

use vztmpld::config::{self, NodeSelector, Policy, TemplateSource, TlsMode};

const FP: &str = "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99";

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("vztmpld-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let secret = d.join("lab.secret");
    // Written under a temporary name and renamed: tests run in parallel and must never see it half-written.
    let tmp = d.join(format!("lab.secret.{:?}", std::thread::current().id()));
    std::fs::write(&tmp, "d6a1f0b2-1111-2222-3333-444455556666\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::rename(&tmp, &secret).unwrap();
    d
}

fn good() -> String {
    format!(
        r#"interval: 10m
clusters:
  - name: lab
    endpoints: [https://pve1.lan:8006, https://pve2.lan:8006]
    auth:
      token_id: "vztmpld@pve!cache"
      secret_file: lab.secret
    tls:
      fingerprint: "{FP}"
    nodes: all
    storage: auto
    max_parallel_downloads: 4
templates:
  - template: alpine-3.22
  - template: debian-12-standard
    policy: latest
    clusters: [lab]
  - template: alpine
  - url: https://mirror.example/ct/custom_1.0_amd64.tar.zst
    checksum: "sha256:{}"
    filename: custom_1.0_amd64.tar.zst
"#,
        "ab".repeat(32)
    )
}

fn parse(text: &str) -> Result<config::Config, config::ConfigError> {
    config::parse(text, &dir().join("vztmpld.yaml"))
}

/// The single problem of a config, as `line:col: message`.
fn problem(text: &str) -> String {
    let err = parse(text).expect_err("config must be rejected");
    let all = err.problems();
    assert_eq!(all.len(), 1, "{all:#?}");
    let file = dir().join("vztmpld.yaml").display().to_string();
    all[0].strip_prefix(&format!("{file}:")).unwrap_or_else(|| panic!("names the file: {}", all[0])).to_string()
}

fn replace(from: &str, to: &str) -> String {
    let g = good();
    assert!(g.contains(from), "{from}");
    g.replacen(from, to, 1)
}

#[test]
fn the_issue_example_loads() {
    let c = parse(&good()).unwrap();
    assert_eq!(c.interval, std::time::Duration::from_secs(600));
    assert_eq!(c.clusters.len(), 1);
    let lab = &c.clusters[0];
    assert_eq!(lab.endpoints.len(), 2);
    assert!(matches!(&lab.tls, TlsMode::Pinned(pins) if pins.len() == 1 && pins[0][0] == 0xAA));
    assert_eq!(lab.nodes, NodeSelector::All);
    assert_eq!(lab.secret.expose(), "d6a1f0b2-1111-2222-3333-444455556666");
    assert_eq!(c.templates.len(), 4);
    assert_eq!(c.templates[1].policy, Policy::Latest);
    assert!(matches!(&c.templates[3].source, TemplateSource::Url { checksum, .. } if checksum.algorithm == "sha256"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn debug_never_shows_the_secret() {
    let c = parse(&good()).unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains("d6a1f0b2"), "{shown}");
    assert!(shown.contains("Secret(***)"));
}

#[test]
fn unknown_keys() {
    assert!(
        problem(&replace("    storage: auto\n", "    storag: auto\n"))
            .starts_with("11:5: clusters[0]: unknown field `storag`")
    );
    assert!(
        problem(&replace("interval: 10m\n", "interval: 10m\nintervall: 5m\n"))
            .starts_with("2:1: unknown field `intervall`")
    );
}

#[test]
fn bad_durations() {
    let p = problem(&replace("interval: 10m", "interval: ten minutes"));
    assert!(p.starts_with("1:11: interval: 'ten minutes' is not a duration"), "{p}");
}

#[test]
fn duplicate_cluster_names() {
    let second = "  - name: lab\n    endpoints: [https://pve3.lan:8006]\n    auth: {token_id: \"a@pve!bb\", secret_file: lab.secret}\n    tls: {insecure: true}\n";
    let text = replace("templates:\n", &format!("{second}templates:\n"));
    let p = problem(&text);
    assert!(p.starts_with("13:11: cluster name 'lab' is used twice"), "{p}");
}

#[test]
fn malformed_fingerprint() {
    let p = problem(&replace(FP, "AA:BB"));
    assert!(p.starts_with("9:20: fingerprint 'AA:BB' is not a SHA-256 fingerprint"), "{p}");
}

#[test]
fn tls_needs_exactly_one_mode() {
    let p = problem(&replace(
        &format!("      fingerprint: \"{FP}\"\n"),
        &format!("      fingerprint: \"{FP}\"\n      insecure: true\n"),
    ));
    assert!(p.starts_with("8:5: tls: give exactly one of"), "{p}");
}

#[test]
fn missing_secret_file() {
    let p = problem(&replace("secret_file: lab.secret", "secret_file: nope.secret"));
    assert!(p.starts_with("7:20: cannot read secret file") && p.contains("nope.secret"), "{p}");
}

#[test]
fn missing_secret_env() {
    let p = problem(&replace("secret_file: lab.secret", "secret_env: VZTMPLD_TEST_SURELY_UNSET"));
    assert!(p.starts_with("7:19: environment variable VZTMPLD_TEST_SURELY_UNSET is not set"), "{p}");
}

#[test]
fn secret_env_and_file_together() {
    let p = problem(&replace("secret_file: lab.secret", "secret_file: lab.secret\n      secret_env: X"));
    assert!(p.starts_with("5:5: auth: give exactly one of secret_file or secret_env"), "{p}");
}

#[cfg(unix)]
#[test]
fn a_world_readable_secret_file_warns() {
    use std::os::unix::fs::PermissionsExt;
    let d = dir();
    let loose = d.join("loose.secret");
    std::fs::write(&loose, "x-secret").unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let c = parse(&replace("secret_file: lab.secret", "secret_file: loose.secret")).unwrap();
    assert_eq!(c.warnings.len(), 1);
    assert!(
        c.warnings[0].contains("readable or writable by others") && c.warnings[0].contains("chmod 640"),
        "{:?}",
        c.warnings
    );
    // deploy/'s 0640 root:vztmpld: the service user reads it through its group; no warning.
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o640)).unwrap();
    let c = parse(&replace("secret_file: lab.secret", "secret_file: loose.secret")).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

/// Runs `f` on a thread and fails if it takes longer than 10 s (a FIFO would block forever).
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(10)).expect("returns instead of blocking")
}

#[cfg(unix)]
fn mkfifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    let ok = std::process::Command::new("mkfifo").arg(path).status().unwrap();
    assert!(ok.success());
}

#[cfg(unix)]
#[test]
fn secret_files_are_read_only_when_regular_and_small() {
    let d = dir();
    let err = problem(&replace("secret_file: lab.secret", "secret_file: /dev/zero"));
    assert!(err.contains("/dev/zero") && err.contains("it is a device; give a regular file"), "{err}");

    let fifo = d.join("fifo.secret");
    mkfifo(&fifo);
    let err = bounded(|| problem(&replace("secret_file: lab.secret", "secret_file: fifo.secret")));
    assert!(err.contains("fifo.secret") && err.contains("it is a FIFO"), "{err}");

    let big = d.join("big.secret");
    std::fs::write(&big, "x".repeat(5000)).unwrap();
    let err = problem(&replace("secret_file: lab.secret", "secret_file: big.secret"));
    assert!(err.contains("big.secret") && err.contains("larger than 4 KiB"), "{err}");
}

#[cfg(unix)]
#[test]
fn the_config_file_is_read_only_when_regular_and_small() {
    let d = dir();
    let fifo = d.join("fifo.yaml");
    mkfifo(&fifo);
    let err = bounded(move || config::load(&fifo).unwrap_err().to_string());
    assert!(err.contains("fifo.yaml: cannot read the configuration: it is a FIFO"), "{err}");

    let big = d.join("big.yaml");
    let mut text = good();
    text.push_str(&format!("# {}\n", "x".repeat(5 * 1024 * 1024)));
    std::fs::write(&big, text).unwrap();
    let err = config::load(&big).unwrap_err().to_string();
    assert!(err.contains("larger than 4 MiB"), "{err}");

    let err = config::load(Path::new("/dev/zero")).unwrap_err().to_string();
    assert!(err.contains("it is a device"), "{err}");
}

#[test]
fn specs_that_cannot_match_anything() {
    let p = problem(&replace("template: alpine-3.22\n", "template: alpine 3.22\n"));
    assert!(p.starts_with("14:15: 'alpine 3.22' has characters"), "{p}");
    let p = problem(&replace("template: alpine-3.22\n", "template: alpine-3.22-default_20250617_sparc\n"));
    assert!(p.starts_with("14:15: architecture 'sparc' matches no Proxmox node"), "{p}");
    let p = problem(&replace("clusters: [lab]", "clusters: [lab, prod]"));
    assert!(p.starts_with("17:21: no cluster named 'prod'"), "{p}");
    let p = problem(&replace("    policy: latest\n", "    policy: newest\n"));
    assert!(p.starts_with("16:13: policy 'newest' is unknown"), "{p}");
    let text = replace("    nodes: all\n", "    nodes: [pve1]\n")
        .replace("  - template: alpine\n", "  - template: alpine\n    nodes: [pve7]\n");
    let p = problem(&text);
    assert!(p.contains("node 'pve7' is not among the nodes"), "{p}");
}

#[test]
fn url_templates_need_a_checksum_and_a_template_file_name() {
    let no_sum = good().lines().filter(|l| !l.contains("checksum:")).collect::<Vec<_>>().join("\n");
    let p = problem(&no_sum);
    assert!(p.starts_with("19:5: url templates need `checksum:"), "{p}");
    let p = problem(&replace("sha256:", "crc32:"));
    assert!(p.starts_with("20:15: checksum algorithm 'crc32'"), "{p}");
    let p = problem(&replace("filename: custom_1.0_amd64.tar.zst", "filename: custom.iso"));
    assert!(p.starts_with("21:15: file name 'custom.iso' must end in"), "{p}");
}

#[test]
fn bad_endpoint_and_token_id() {
    let p = problem(&replace("https://pve2.lan:8006", "http://pve2.lan:8006"));
    assert!(p.starts_with("4:40: endpoint 'http://pve2.lan:8006' must be an https:// URL"), "{p}");
    let p = problem(&replace("vztmpld@pve!cache", "vztmpld"));
    assert!(p.starts_with("6:17: token_id 'vztmpld' must look like USER@REALM!TOKENID"), "{p}");
}

#[test]
fn several_problems_are_all_reported() {
    let text =
        replace("interval: 10m", "interval: soon").replace("max_parallel_downloads: 4", "max_parallel_downloads: 0");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.problems().len(), 2, "{err}");
}

#[test]
fn unreadable_file_is_a_clear_error() {
    let err = config::load(Path::new("/nonexistent/vztmpld.yaml")).unwrap_err();
    assert!(err.to_string().starts_with("/nonexistent/vztmpld.yaml: cannot read the configuration"), "{err}");
}

#[test]
fn intervals_have_a_minimum() {
    let p = problem(&replace("interval: 10m", "interval: 1ms"));
    assert!(p.starts_with("1:11: interval: 1ms is shorter than the minimum of 10s"), "{p}");
    let p = problem(&replace("interval: 10m", "interval: 10m\ndownloads: {poll_interval: 1ms}"));
    assert!(p.contains("downloads.poll_interval: 1ms is shorter than the minimum of 100ms"), "{p}");
    assert!(parse(&replace("interval: 10m", "interval: 10s\ndownloads: {poll_interval: 100ms}")).is_ok());
}

#[test]
fn validation_is_linear_and_capped() {
    // 9,000 distinct templates, each narrowed to the cluster and a node: linear checks finish at once.
    let mut many = replace("    nodes: all\n", "    nodes: [pve1, pve2]\n");
    let cut = many.find("templates:").unwrap();
    many.truncate(cut);
    many.push_str("templates:\n");
    for i in 0..9_000 {
        many.push_str(&format!("  - {{template: alpine-3.{i}, clusters: [lab], nodes: [pve1]}}\n"));
    }
    let start = std::time::Instant::now();
    let c = parse(&many).unwrap();
    assert_eq!(c.templates.len(), 9_000);
    eprintln!("9,000 templates validated in {:?}", start.elapsed());

    // Past the cap: one problem that says what to do, not 80,000.
    let mut huge = many.clone();
    for i in 9_000..10_500 {
        huge.push_str(&format!("  - {{template: alpine-3.{i}}}\n"));
    }
    let err = parse(&huge).unwrap_err().problems();
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(err[0].contains("10500 templates exceed the limit of 10000"), "{err:?}");
}

#[test]
fn a_pasted_header_form_token_id_never_echoes_the_secret() {
    let secret = "d6a1f0b2-1111-2222-3333-444455556666";
    let p = problem(&replace("token_id: \"vztmpld@pve!cache\"", &format!("token_id: \"vztmpld@pve!cache={secret}\"")));
    assert!(p.contains("token_id must not contain '='") && p.contains("secret_file"), "{p}");
    assert!(!p.contains(secret) && !p.contains("d6a1f0b2"), "{p}");
}

#[test]
fn a_secret_file_with_two_words_is_refused_without_showing_it() {
    let d = dir();
    let f = d.join("two.secret");
    std::fs::write(&f, "vztmpld@pve!cache d6a1f0b2-aaaa\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let p = problem(&replace("secret_file: lab.secret", "secret_file: two.secret"));
    assert!(p.contains("two.secret holds more than one word"), "{p}");
    assert!(!p.contains("d6a1f0b2-aaaa"), "{p}");
}

#[test]
fn an_endpoint_without_a_port_means_8006_and_says_so() {
    let c = parse(&replace("https://pve2.lan:8006", "https://pve2.lan")).unwrap();
    assert_eq!(c.clusters[0].endpoints[1].as_str(), "https://pve2.lan:8006/");
    assert!(c.warnings.iter().any(|w| w.contains("'https://pve2.lan' has no port: using 8006")), "{:?}", c.warnings);
    let c = parse(&replace("https://pve2.lan:8006", "https://pve2.lan:443")).unwrap();
    assert_eq!(c.clusters[0].endpoints[1].port_or_known_default(), Some(443), "an explicit port stays");
}

#[test]
fn a_tab_in_the_yaml_is_named() {
    let p = problem(&replace("    nodes: all\n", "\tnodes: all\n"));
    assert!(p.contains("tab"), "{p}");
}

#[test]
fn check_suggests_the_nodes_and_clusters_it_knows() {
    let text = replace("    nodes: all\n", "    nodes: [pve1, pve2]\n");
    let text = text.replacen("templates:\n", "templates:\n  - {template: alpine, nodes: [pev1]}\n", 1);
    let p = problem(&text);
    assert!(p.contains("node 'pev1'") && p.contains("did you mean 'pve1'?"), "{p}");
    let text = good().replacen("templates:\n", "templates:\n  - {template: alpine, clusters: [lba]}\n", 1);
    let p = problem(&text);
    assert!(p.contains("no cluster named 'lba' (did you mean 'lab'?)"), "{p}");
}

/// `good()` with an `ha` section; `etcd` is the body under `etcd:` (indented by 4).
fn with_ha(etcd: &str) -> String {
    format!("{}ha:\n  etcd:\n{etcd}", good())
}

#[test]
fn the_ha_section_loads_with_defaults() {
    let c = parse(&with_ha("    endpoints: [http://127.0.0.1:2379]\n")).unwrap();
    let ha = c.ha.unwrap();
    assert_eq!(ha.prefix, "/vztmpld/");
    assert_eq!(ha.lease_ttl, std::time::Duration::from_secs(15));
    assert_eq!(ha.poll, std::time::Duration::from_secs(1));
    assert!(ha.ca.is_none() && ha.identity.is_none() && ha.auth.is_none() && ha.id.is_none());
    assert!(parse(&good()).unwrap().ha.is_none(), "without ha, a single instance");
    let d = dir();
    std::fs::write(d.join("etcd-ca.pem"), "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
    let c = parse(&with_ha(
        "    endpoints: [https://10.0.0.5:2379, https://10.0.0.6:2379]\n    prefix: /vztmpld/prod/\n    lease_ttl: 20s\n    tls: { ca_file: etcd-ca.pem }\n    auth: { username: vztmpld, password_file: lab.secret }\n",
    ))
    .unwrap();
    let ha = c.ha.unwrap();
    assert_eq!(ha.endpoints.len(), 2);
    assert_eq!(ha.prefix, "/vztmpld/prod/");
    assert_eq!(ha.auth.as_ref().unwrap().0, "vztmpld");
    assert!(!format!("{ha:?}").contains("d6a1f0b2"), "the password never shows: {ha:?}");
}

#[test]
fn ha_mistakes_are_named_where_they_are() {
    // Line 22 is `ha:`, 23 `etcd:`, 24 the first key under it.
    let p = problem(&with_ha("    endpoints: [http://10.0.0.5:2379]\n"));
    assert!(p.starts_with("24:17: ha.etcd.endpoints[0]: 'http://10.0.0.5:2379' is plain http to another host"), "{p}");
    let p = problem(&with_ha("    endpoints: [https://10.0.0.5:2379]\n"));
    assert!(p.contains("ha.etcd.tls.ca_file: https endpoints need the CA"), "{p}");
    let p = problem(&with_ha("    endpoints: [\"http://[::1]:2379\"]\n    lease_ttl: 1s\n"));
    assert!(p.starts_with("25:16: ha.etcd.lease_ttl: 1s is shorter than the minimum of 2s"), "{p}");
    let p = problem(&with_ha("    endpoints: [http://localhost:2379]\n    tls: { cert_file: lab.secret }\n"));
    assert!(p.contains("give cert_file and key_file together"), "{p}");
    let p = problem(&with_ha("    endpoints: []\n"));
    assert!(p.contains("give at least one etcd client URL"), "{p}");
    let p =
        problem(&with_ha("    endpoints: [http://127.0.0.1:2379]\n    auth: { username: u, password_file: nope }\n"));
    assert!(p.starts_with("25:41: cannot read secret file") && p.contains("nope"), "{p}");
    let p = problem(&with_ha("    endpoints: [http://127.0.0.1:2379]\n    leader: me\n"));
    assert!(p.contains("unknown field `leader`"), "{p}");
}

#[test]
fn mirrors_and_prune_are_validated_where_they_are() {
    let mirrors = "    max_parallel_downloads: 4\n    mirrors:\n      \"http://download.proxmox.com/images/\": \"https://mirror.lan/pve-images/\"\n";
    let c = parse(&replace("    max_parallel_downloads: 4\n", mirrors)).unwrap();
    assert_eq!(
        c.clusters[0].mirrors,
        [("http://download.proxmox.com/images/".to_string(), "https://mirror.lan/pve-images/".to_string())]
    );
    let p = problem(&replace(
        "    max_parallel_downloads: 4\n",
        "    mirrors:\n      \"http://download.proxmox.com/images/\": \"https://mirror.lan/pve\"\n",
    ));
    assert!(p.contains("end both with '/' or neither"), "{p}");
    let p = problem(&replace("    max_parallel_downloads: 4\n", "    mirrors: {\"ftp://x/\": \"https://y/\"}\n"));
    assert!(p.contains("'ftp://x/' is not an http(s) URL prefix"), "{p}");

    let p = problem(&replace("    policy: latest\n", "    policy: latest\n    prune: {keep: 0}\n"));
    assert!(p.contains("prune.keep: 0 must be 1 or more"), "{p}");
    let p = problem(&replace(
        "    filename: custom_1.0_amd64.tar.zst\n",
        "    filename: custom_1.0_amd64.tar.zst\n    prune: {keep: 1}\n",
    ));
    assert!(p.contains("a url or oci template is one fixed file"), "{p}");
    let c = parse(&replace("    policy: latest\n", "    policy: latest\n    prune: {keep: 3}\n")).unwrap();
    assert_eq!(c.templates[1].prune, Some(3));
}

#[test]
fn a_byte_order_mark_is_not_part_of_the_yaml() {
    let text = format!("\u{feff}{}", good());
    assert!(parse(&text).is_ok(), "{:?}", parse(&text).err().map(|e| e.to_string()));
}

/// Deep nesting is refused before the YAML parser sees it, in time linear in the file (the parser's time grew
/// faster than the file: 2 MB of `[` took over two minutes). The check's time is measured by the hostile-inputs
/// script; here, a 2 MB file answers with the place.
#[test]
fn nesting_no_configuration_needs_is_refused_with_its_place() {
    let flow = format!("{}templates: {}\n", good(), "[".repeat(2_000_000));
    let p = problem(&flow);
    assert!(p.contains("nested more than 32 brackets deep"), "{p}");
    let line = good().lines().count() + 1;
    assert!(p.starts_with(&format!("{line}:{}:", 11 + 33)), "names the line and column: {p}");
    let dashes = format!("{}templates:\n  {}x\n", good(), "- ".repeat(100_000));
    assert!(problem(&dashes).contains("100000 nested lists on one line"), "{}", problem(&dashes));
}

#[test]
fn control_characters_from_the_file_are_escaped_in_errors() {
    let text = format!("\"bad\\e[2J\\0\u{202e}key\": 1\n{}", good());
    let all = parse(&text).map(|_| String::new()).unwrap_or_else(|e| e.to_string());
    assert!(!all.contains('\u{1b}') && !all.contains('\0') && !all.contains('\u{202e}'), "raw: {all:?}");
    assert!(all.contains("bad\\u{1b}[2J\\u{0}\\u{202e}key"), "shown escaped: {all}");
}

#[test]
fn a_status_server_beyond_loopback_needs_a_token_or_an_explicit_yes() {
    let open = format!("{}server:\n  listen: 0.0.0.0:9811\n", good());
    let p = problem(&open);
    assert!(p.contains("server.listen: 0.0.0.0:9811 is beyond loopback and there is no server.token_file"), "{p}");
    assert!(p.contains("server.allow_unauthenticated: true"), "says what to do: {p}");
    let allowed = format!("{}server:\n  listen: 0.0.0.0:9811\n  allow_unauthenticated: true\n", good());
    assert!(parse(&allowed).is_ok());
    assert!(parse(&format!("{}server:\n  listen: 127.0.0.1:9811\n", good())).is_ok(), "loopback needs nothing");
}
