//! The desired-state configuration: the YAML contract, its validation, and the validated model.
//!
//! Loading never half-succeeds: either every problem is reported, each with `file:line:column` and the fix,
//! or a [`Config`] comes back that the reconciler can trust. Secrets are read here and kept in [`Secret`],
//! whose `Debug` never shows them.

mod cluster;
mod credentials;
mod ha;
mod mirrors;
mod model;
mod oci_reference;
mod positions;
mod scope;
mod text;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::names::parse_fingerprint;
pub use ha::{MAX_LEASE_TTL, MIN_HA_POLL, MIN_LEASE_TTL};
use positions::Positions;
use scope::TemplateScope;
pub use vztmpld_core::config::{
    Checksum, ClusterConfig, Config, DownloadSettings, HaConfig, NodeSelector, PemFile, Policy, Secret,
    StorageSelector, TemplateConfig, TemplateSource, TlsMode, rewrite_mirror,
};

use crate::template::TemplateSpec;

/// Shortest `interval`: a pass costs a few API calls per node; faster than this only loads the cluster.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);
/// Shortest `downloads.poll_interval`.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Shortest `verify` period: each verification makes Proxmox read and hash the whole file.
pub const MIN_VERIFY: Duration = Duration::from_secs(10);
/// Most clusters one configuration may hold.
pub const MAX_CLUSTERS: usize = 1_000;
/// Most templates one configuration may hold.
pub const MAX_TEMPLATES: usize = 10_000;

/// One thing wrong with a configuration file, with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names and values from the file are data: never a terminal escape or a right-to-left override.
        let message = text::escape_controls(&self.message);
        write!(f, "{}:{}:{}: {message}", self.file.display(), self.line, self.column)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the configuration: {source} (check the path given with -c)", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid { problems: Vec<Problem> },
}

impl ConfigError {
    /// The individual problems (one for a read error).
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Read { .. } => vec![self.to_string()],
            ConfigError::Invalid { problems } => problems.iter().map(ToString::to_string).collect(),
        }
    }
}

/// Reads, parses and validates a configuration file, reading the secrets it names.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = crate::files::read_bounded_text(path, crate::files::CONFIG_LIMIT)
        .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    parse(&text, path)
}

/// Parses and validates configuration text; `path` names it in errors and anchors relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    // Editors on Windows start files with a byte-order mark; it is not part of the YAML.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Err(deep) = text::check_nesting(text) {
        let problem = Problem { file: path.to_path_buf(), line: deep.line, column: deep.column, message: deep.message };
        return Err(ConfigError::Invalid { problems: vec![problem] });
    }
    let raw: model::RawConfig = match yaml_serde::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            let mut message = strip_location(&e.to_string());
            let near = |l: usize| text.lines().nth(l.saturating_sub(1)).is_some_and(|t| t.contains('\t'));
            if near(line) || near(line.saturating_sub(1)) {
                message.push_str(" — this line holds a tab: YAML indents with spaces only, replace the tab");
            }
            return Err(ConfigError::Invalid {
                problems: vec![Problem { file: path.to_path_buf(), line, column, message: with_hint(&message) }],
            });
        }
    };
    let mut v = Validator { file: path.to_path_buf(), positions: Positions::index(text), problems: Vec::new() };
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let config = v.config(raw, &base_dir);
    if v.problems.is_empty() { Ok(config) } else { Err(ConfigError::Invalid { problems: v.problems }) }
}

fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// The parser's message says what is wrong (an unknown key with the expected ones, a missing key, a wrong type);
/// where the keys are described is the same for all of them. (Not chosen by the message's wording: the parser's
/// error has no kind to choose by.)
fn with_hint(message: &str) -> String {
    format!("{message} (see README's configuration reference)")
}

/// What makes two template entries the same: label, cluster narrowing, node narrowing.
type TemplateKey = (String, Option<Vec<String>>, Option<Vec<String>>);

/// Collects problems with their positions while building the validated model.
struct Validator {
    file: PathBuf,
    positions: Positions,
    problems: Vec<Problem>,
}

impl Validator {
    fn problem(&mut self, path: &str, message: impl Into<String>) {
        let (line, column) = self.positions.find(path);
        self.problems.push(Problem { file: self.file.clone(), line, column, message: message.into() });
    }

    fn duration(&mut self, path: &str, value: Option<&str>, default: Duration) -> Duration {
        let Some(text) = value else { return default };
        match humantime::parse_duration(text) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.problem(path, format!("{path}: must be longer than zero (e.g. `10m`)"));
                default
            }
            Err(e) => {
                self.problem(path, format!("{path}: '{text}' is not a duration ({e}); write e.g. `30s`, `10m`, `1h`"));
                default
            }
        }
    }

    /// A duration of at least `min`.
    fn duration_at_least(&mut self, path: &str, value: Option<&str>, default: Duration, min: Duration) -> Duration {
        let d = self.duration(path, value, default);
        if d < min {
            let (d, min) = (humantime::format_duration(d), humantime::format_duration(min));
            self.problem(path, format!("{path}: {d} is shorter than the minimum of {min}; use at least `{min}`"));
        }
        d.max(min)
    }

    fn config(&mut self, mut raw: model::RawConfig, base_dir: &Path) -> Config {
        let interval =
            self.duration_at_least("interval", raw.interval.as_deref(), Duration::from_secs(600), MIN_INTERVAL);
        if raw.clusters.is_empty() {
            self.problem("clusters", "clusters: at least one cluster is needed");
        }
        // Caps first: a huge file is reported in one line, not checked item by item.
        if raw.clusters.len() > MAX_CLUSTERS {
            let n = raw.clusters.len();
            self.problem(
                "clusters",
                format!(
                    "clusters: {n} clusters exceed the limit of {MAX_CLUSTERS}; split the configuration across daemons"
                ),
            );
            raw.clusters.truncate(MAX_CLUSTERS);
        }
        if raw.templates.len() > MAX_TEMPLATES {
            let n = raw.templates.len();
            self.problem("templates", format!("templates: {n} templates exceed the limit of {MAX_TEMPLATES}; use version-agnostic specs (`debian-12`) instead of listing builds"));
            raw.templates.truncate(MAX_TEMPLATES);
        }
        let names: Vec<String> = raw.clusters.iter().map(|c| c.name.clone()).collect();
        let mut seen_names: HashSet<&str> = HashSet::new();
        let duplicate_names: HashSet<usize> =
            names.iter().enumerate().filter(|(_, n)| !seen_names.insert(n.as_str())).map(|(i, _)| i).collect();
        let mut clusters = Vec::new();
        let mut warnings = Vec::new();
        for (i, rc) in raw.clusters.into_iter().enumerate() {
            let at = format!("clusters[{i}]");
            if duplicate_names.contains(&i) {
                self.problem(
                    &format!("{at}.name"),
                    format!("cluster name '{}' is used twice; names must be unique", rc.name),
                );
            }
            if let Some(c) = self.cluster(&at, rc, base_dir, &mut warnings) {
                clusters.push(c);
            }
        }
        let mut scope = TemplateScope::new(&names, &clusters);
        scope.verify = match raw.verify.as_deref() {
            None | Some("off") => None,
            Some(text) => Some(self.duration_at_least("verify", Some(text), MIN_VERIFY, MIN_VERIFY)),
        };
        scope.repair = raw.repair.unwrap_or(false);
        let templates = self.templates(raw.templates, &scope);
        let (listen, token_file, open) =
            raw.server.map_or((None, None, None), |s| (s.listen, s.token_file, s.allow_unauthenticated));
        let server_allow_unauthenticated = open.unwrap_or(false);
        let server_listen = listen.and_then(|l| match l.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problem("server.listen", format!("server.listen: '{l}' is not an address like 127.0.0.1:9811"));
                None
            }
        });
        let has_token_file = token_file.is_some();
        let server_token =
            token_file.and_then(|f| self.secret_file("server.token_file", &base_dir.join(f), &mut warnings));
        if let Some(addr) = server_listen.filter(|a| !a.ip().is_loopback()) {
            if !has_token_file && !server_allow_unauthenticated {
                self.problem("server.listen", format!("server.listen: {addr} is beyond loopback and there is no server.token_file: anyone who reaches it could read the status and start passes. Set server.token_file, listen on 127.0.0.1, or say server.allow_unauthenticated: true"));
            }
        }
        let ha = raw.ha.and_then(|h| self.ha(h, base_dir, &mut warnings));
        let downloads = self.downloads(raw.downloads.unwrap_or_default());
        // Relative to the configuration file, like every other path in it.
        let state_dir = raw.state_dir.map(|d| base_dir.join(d));
        Config {
            path: self.file.clone(),
            interval,
            clusters,
            templates,
            server_listen,
            server_token,
            server_allow_unauthenticated,
            downloads,
            ha,
            state_dir,
            warnings,
        }
    }

    /// Every template entry, each checked; one listed twice (same label and narrowing) is a problem.
    fn templates(&mut self, raw: Vec<model::RawTemplate>, scope: &TemplateScope<'_>) -> Vec<TemplateConfig> {
        let mut templates: Vec<TemplateConfig> = Vec::new();
        let mut seen: HashSet<TemplateKey> = HashSet::new();
        for (i, rt) in raw.into_iter().enumerate() {
            if let Some(t) = self.template(&format!("templates[{i}]"), rt, scope) {
                if !seen.insert((t.label.clone(), t.clusters.clone(), t.nodes.clone())) {
                    self.problem(
                        &format!("templates[{i}]"),
                        format!("template '{}' is listed twice; remove one", t.label),
                    );
                }
                templates.push(t);
            }
        }
        templates
    }

    /// `downloads`: the deadline's fixed part, the slowest acceptable rate, and how often tasks are polled.
    fn downloads(&mut self, d: model::RawDownloads) -> DownloadSettings {
        let defaults = DownloadSettings::default();
        DownloadSettings {
            timeout: self.duration("downloads.timeout", d.timeout.as_deref(), defaults.timeout),
            min_rate: match d.min_rate {
                Some(0) => {
                    self.problem("downloads.min_rate", "downloads.min_rate: must be at least 1 byte per second");
                    defaults.min_rate
                }
                Some(r) => r,
                None => defaults.min_rate,
            },
            poll_interval: self.duration_at_least(
                "downloads.poll_interval",
                d.poll_interval.as_deref(),
                defaults.poll_interval,
                MIN_POLL_INTERVAL,
            ),
        }
    }

    fn cluster(
        &mut self,
        at: &str,
        rc: model::RawCluster,
        base_dir: &Path,
        warnings: &mut Vec<String>,
    ) -> Option<ClusterConfig> {
        let before = self.problems.len();
        if rc.name.trim().is_empty() || rc.name.contains(char::is_whitespace) {
            self.problem(&format!("{at}.name"), "cluster name must be a non-empty word");
        }
        if rc.endpoints.is_empty() {
            self.problem(&format!("{at}.endpoints"), "endpoints: give at least one, e.g. [https://pve1.lan:8006]");
        }
        let endpoints = self.endpoints(at, &rc.endpoints, &rc.name, warnings);
        self.token_id(at, &rc.auth.token_id);
        let secret = self.secret(at, &rc.auth, base_dir, warnings);
        let tls = self.tls(at, rc.tls, base_dir);
        let nodes = self.node_selector(at, rc.nodes);
        let storage = self.storage_selector(at, rc.storage.as_deref());
        let limit = |v: &mut Self, key: &str, value: Option<u32>, default: usize| match value {
            Some(0) => {
                v.problem(&format!("{at}.{key}"), format!("{key}: must be at least 1"));
                default
            }
            Some(n) => n as usize,
            None => default,
        };
        let max_parallel_downloads = limit(self, "max_parallel_downloads", rc.max_parallel_downloads, 4);
        let max_downloads_per_node = limit(self, "max_downloads_per_node", rc.max_downloads_per_node, 1);
        let mirrors = self.mirrors(at, rc.mirrors);
        (self.problems.len() == before).then(|| ClusterConfig {
            name: rc.name,
            endpoints,
            token_id: rc.auth.token_id,
            secret: secret.unwrap_or_default(),
            tls: tls.unwrap_or(TlsMode::Insecure),
            nodes,
            storage,
            max_parallel_downloads,
            max_downloads_per_node,
            mirrors,
        })
    }

    fn template(&mut self, at: &str, rt: model::RawTemplate, scope: &TemplateScope<'_>) -> Option<TemplateConfig> {
        let before = self.problems.len();
        let policy = match rt.policy.as_deref() {
            None | Some("present") => Policy::Present,
            Some("latest") => Policy::Latest,
            Some(p) => {
                self.problem(&format!("{at}.policy"), format!("policy '{p}' is unknown: use `present` or `latest`"));
                Policy::Present
            }
        };
        let source = self.template_source(at, &rt);
        if policy == Policy::Latest && source.as_ref().is_some_and(|s| s.fixed_file().is_some()) {
            self.problem(
                &format!("{at}.policy"),
                "policy `latest` needs the appliance index; a url or oci template is one fixed file",
            );
        }
        self.template_targets(at, &rt, scope);
        let verify = match rt.verify.as_deref() {
            Some("off") => None,
            Some(text) => Some(self.duration_at_least(&format!("{at}.verify"), Some(text), MIN_VERIFY, MIN_VERIFY)),
            None => scope.verify,
        };
        let repair = rt.repair.unwrap_or(scope.repair);
        if verify.is_some() && matches!(source, Some(TemplateSource::Oci { .. })) && rt.verify.is_some() {
            self.problem(
                &format!("{at}.verify"),
                "verify: Proxmox gives no checksum for an OCI image, so it cannot be verified",
            );
        }
        let prune = rt.prune.and_then(|p| self.template_prune(at, p.keep, source.as_ref()));
        if let Some(s) = &rt.storage {
            if !crate::names::valid_storage_id(s) {
                self.problem(&format!("{at}.storage"), format!("storage: '{s}' is not a storage ID"));
            }
        }
        let source = source?;
        (self.problems.len() == before).then(|| TemplateConfig {
            label: source.label(),
            source,
            policy,
            clusters: rt.clusters,
            nodes: rt.nodes,
            storage: rt.storage,
            prune,
            verify,
            repair,
        })
    }

    /// A template entry's source: exactly one of `template:`, `url:` and `oci:`.
    fn template_source(&mut self, at: &str, rt: &model::RawTemplate) -> Option<TemplateSource> {
        match (rt.template.as_deref(), rt.url.as_deref(), rt.oci.as_deref()) {
            (Some(spec), None, None) => {
                if rt.checksum.is_some() || rt.filename.is_some() {
                    self.problem(at, "checksum and filename belong to `url:` templates; appliance templates are verified by Proxmox's index");
                }
                match TemplateSpec::parse(spec) {
                    Ok(s) => {
                        self.check_arch(&format!("{at}.template"), &s);
                        Some(TemplateSource::Appliance(s))
                    }
                    Err(e) => {
                        self.problem(&format!("{at}.template"), format!("{e}"));
                        None
                    }
                }
            }
            (None, Some(url), None) => self.url_template(at, url, rt.checksum.as_deref(), rt.filename.as_deref()),
            (None, None, Some(reference)) => {
                self.oci_template(at, reference, rt.filename.as_deref(), rt.checksum.as_deref())
            }
            _ => {
                self.problem(
                    at,
                    "give exactly one of `template:` (from the appliance index), `url:` or `oci:` (an OCI image)",
                );
                None
            }
        }
    }

    /// The clusters and nodes a template entry names must exist among the configured ones.
    fn template_targets(&mut self, at: &str, rt: &model::RawTemplate, scope: &TemplateScope<'_>) {
        if let Some(list) = &rt.clusters {
            for (j, name) in list.iter().enumerate() {
                if !scope.names.contains(name.as_str()) {
                    self.problem(
                        &format!("{at}.clusters[{j}]"),
                        format!(
                            "no cluster named '{name}'{} (known: {})",
                            crate::suggest::hint(name, scope.names.iter().copied()),
                            scope.known()
                        ),
                    );
                }
            }
        }
        if let Some(nodes) = &rt.nodes {
            for (j, n) in nodes.iter().enumerate() {
                if !scope.may_target(rt.clusters.as_deref(), n) {
                    let hint = crate::suggest::hint(n, scope.listed_nodes());
                    self.problem(&format!("{at}.nodes[{j}]"), format!("node '{n}' is not among the nodes of the targeted clusters{hint}, so this template cannot match anything"));
                }
            }
        }
    }

    /// `prune.keep`: 1 or more, and only for templates with builds to prune.
    fn template_prune(&mut self, at: &str, keep: i64, source: Option<&TemplateSource>) -> Option<usize> {
        match (keep, source) {
            (_, Some(s)) if s.fixed_file().is_some() => {
                self.problem(
                    &format!("{at}.prune"),
                    "prune: a url or oci template is one fixed file; nothing to prune",
                );
                None
            }
            (keep @ 1..=1000, _) => usize::try_from(keep).ok(),
            (keep, _) => {
                self.problem(
                    &format!("{at}.prune.keep"),
                    format!("prune.keep: {keep} must be 1 or more (the newest build is always kept)"),
                );
                None
            }
        }
    }

    fn check_arch(&mut self, at: &str, spec: &TemplateSpec) {
        const KNOWN: &[&str] = &["amd64", "arm64", "i386", "armhf", "ppc64el", "riscv64", "s390x"];
        let arch = match spec {
            TemplateSpec::Pattern { arch: Some(a), .. } => Some(a.clone()),
            TemplateSpec::File(f) => crate::template::TemplateName::parse(f).map(|n| n.arch),
            _ => None,
        };
        if let Some(a) = arch.filter(|a| !KNOWN.contains(&a.as_str())) {
            self.problem(
                at,
                format!("architecture '{a}' matches no Proxmox node (use amd64 or arm64, or leave it out)"),
            );
        }
    }

    fn url_template(
        &mut self,
        at: &str,
        url: &str,
        checksum: Option<&str>,
        filename: Option<&str>,
    ) -> Option<TemplateSource> {
        let parsed = match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            _ => {
                self.problem(&format!("{at}.url"), format!("url '{url}' must be an http:// or https:// URL"));
                None
            }
        };
        let checksum = match checksum {
            None => {
                self.problem(at, "url templates need `checksum: \"sha256:<hex>\"` (or sha512/sha1/md5/...) so Proxmox verifies the file");
                None
            }
            Some(c) => match Checksum::parse(c) {
                Ok(c) => Some(c),
                Err(e) => {
                    self.problem(&format!("{at}.checksum"), e);
                    None
                }
            },
        };
        let filename = match filename {
            Some(f) => f.to_string(),
            None => parsed.as_ref().and_then(|u| u.path_segments()?.next_back().map(String::from)).unwrap_or_default(),
        };
        let normalized_ok =
            !filename.is_empty() && filename.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !normalized_ok || !crate::template::has_template_extension(&filename) {
            let key = if filename.is_empty() { format!("{at}.url") } else { format!("{at}.filename") };
            self.problem(&key, format!("file name '{filename}' must end in .tar.gz/.tar.xz/.tar.zst/.tar.bz2/.tar and use only letters, digits, '.', '-', '_' (set `filename:`)"));
        }
        Some(TemplateSource::Url { url: parsed?, checksum: checksum?, filename })
    }
}
