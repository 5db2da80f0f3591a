//! Template file names and specs: parsing, matching and ordering. Pure: no I/O.
//!
//! A file name is `<package>_<build>_<arch>.tar.<ext>` with `<package>` = `<os>[-<version>][-<variant>]`, e.g.
//! `alpine-3.22-default_20250617_amd64.tar.xz` or `debian-12-standard_12.7-1_amd64.tar.zst`. A spec is the same
//! shape cut short anywhere (`alpine`, `alpine-3.22`, `debian-12-standard_12.7-1`) or a full file name.

use std::cmp::Ordering;
use std::fmt;

const EXTENSIONS: &[&str] = &[".tar.gz", ".tar.xz", ".tar.zst", ".tar.bz2", ".tar"];

/// A parsed template file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateName {
    /// The whole file name, as Proxmox lists it.
    pub file: String,
    /// `alpine-3.22-default`.
    pub package: String,
    /// `alpine`, `debian`, `proxmox-mail-gateway`.
    pub os: String,
    /// `3.22`, `12`, `24.04` (absent for e.g. `archlinux-base`).
    pub version: Option<String>,
    /// `default`, `standard`, `stream-default`.
    pub variant: Option<String>,
    /// `20250617`, `12.7-1`.
    pub build: String,
    /// Debian architecture name: `amd64`, `arm64`, `i386`.
    pub arch: String,
    /// `tar.xz`, `tar.zst`, ...
    pub format: String,
}

/// True when a name ends in a vztmpl extension Proxmox lists.
pub fn has_template_extension(name: &str) -> bool {
    EXTENSIONS.iter().any(|e| name.ends_with(e))
}

/// Maps kernel architecture names to Debian ones (`x86_64` → `amd64`, `aarch64` → `arm64`).
pub fn debian_arch(arch: &str) -> String {
    match arch {
        "x86_64" => "amd64".into(),
        "aarch64" => "arm64".into(),
        other => other.to_string(),
    }
}

/// Splits a package name into os, version and variant: the version is the first `-` part that starts with a digit.
fn split_package(package: &str) -> (String, Option<String>, Option<String>) {
    let parts: Vec<&str> = package.split('-').collect();
    match parts.iter().position(|p| p.starts_with(|c: char| c.is_ascii_digit())) {
        Some(0) | None => {
            let variant = (parts.len() > 1).then(|| parts[1..].join("-"));
            (parts[0].to_string(), None, variant)
        }
        Some(i) => {
            let variant = (parts.len() > i + 1).then(|| parts[i + 1..].join("-"));
            (parts[..i].join("-"), Some(parts[i].to_string()), variant)
        }
    }
}

impl TemplateName {
    /// Parses a template file name; `None` when it is not `<package>_<build>_<arch>.tar.<ext>`.
    pub fn parse(file: &str) -> Option<Self> {
        let ext = EXTENSIONS.iter().find(|e| file.ends_with(*e))?;
        let stem = &file[..file.len() - ext.len()];
        // One historical name spells the arch `x86_64`, with its own underscore.
        let (rest, arch) = match stem.strip_suffix("_x86_64") {
            Some(rest) => (rest, "amd64".to_string()),
            None => {
                let (rest, arch) = stem.rsplit_once('_')?;
                (rest, debian_arch(arch))
            }
        };
        let (package, build) = rest.split_once('_')?;
        if package.is_empty() || build.is_empty() || arch.is_empty() || build.contains('_') {
            return None;
        }
        let (os, version, variant) = split_package(package);
        Some(Self {
            file: file.to_string(),
            package: package.to_string(),
            os,
            version,
            variant,
            build: build.to_string(),
            arch,
            format: ext.trim_start_matches('.').to_string(),
        })
    }
}

/// What a desired-state entry asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSpec {
    /// An exact file name.
    File(String),
    /// `OS[-VERSION[-VARIANT[_BUILD[_ARCH]]]]`.
    Pattern {
        os: String,
        version: Option<String>,
        variant: Option<String>,
        build: Option<String>,
        arch: Option<String>,
    },
}

/// Why a spec string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("empty template spec")]
    Empty,
    #[error("'{0}' is not a template file name (expected <package>_<build>_<arch>.tar.<gz|xz|zst|bz2>)")]
    BadFileName(String),
    #[error("'{0}' has characters that never occur in template names (use letters, digits, '.', '-', '_')")]
    BadCharacters(String),
    #[error("'{0}' has too many '_' parts (expected OS[-VERSION[-VARIANT[_BUILD[_ARCH]]]])")]
    TooManyParts(String),
}

impl TemplateSpec {
    /// Parses a spec: a full file name when it ends in a template extension, else a pattern.
    pub fn parse(spec: &str) -> Result<Self, SpecError> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(SpecError::Empty);
        }
        if !spec.chars().all(|c| c.is_ascii_alphanumeric() || "._-+~".contains(c)) {
            return Err(SpecError::BadCharacters(spec.to_string()));
        }
        if has_template_extension(spec) {
            return TemplateName::parse(spec)
                .map(|_| TemplateSpec::File(spec.to_string()))
                .ok_or_else(|| SpecError::BadFileName(spec.to_string()));
        }
        // `x86_64` carries its own underscore; read it as the Debian name.
        let spec = match spec.strip_suffix("_x86_64") {
            Some(rest) => format!("{rest}_amd64"),
            None => spec.to_string(),
        };
        let parts: Vec<&str> = spec.split('_').collect();
        if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(SpecError::TooManyParts(spec));
        }
        let (os, version, variant) = split_package(parts[0]);
        Ok(TemplateSpec::Pattern {
            os,
            version,
            variant,
            build: parts.get(1).map(|s| s.to_string()),
            arch: parts.get(2).map(|a| debian_arch(a)),
        })
    }

    /// Whether a file satisfies this spec on a node of architecture `node_arch` (Debian name). A spec without an
    /// arch matches only the node's arch.
    pub fn matches(&self, name: &TemplateName, node_arch: &str) -> bool {
        match self {
            TemplateSpec::File(file) => *file == name.file,
            TemplateSpec::Pattern { os, version, variant, build, arch } => {
                // Without a version, `proxmox-mail-gateway` may be a multi-word OS rather than OS + variant.
                let whole_os = version.is_none()
                    && variant.as_ref().is_some_and(|v| format!("{os}-{v}") == name.os)
                    && build.as_ref().is_none_or(|b| *b == name.build)
                    && arch.as_deref().unwrap_or(node_arch) == name.arch;
                whole_os
                    || *os == name.os
                        && version
                            .as_ref()
                            .is_none_or(|v| name.version.as_ref().is_some_and(|nv| version_prefix(v, nv)))
                        && variant.as_ref().is_none_or(|v| name.variant.as_ref() == Some(v))
                        && build.as_ref().is_none_or(|b| *b == name.build)
                        && arch.as_deref().unwrap_or(node_arch) == name.arch
            }
        }
    }

    /// Whether a file (its name, parsed when it is a template name) satisfies this spec on a node of `node_arch`:
    /// the exact file, or a match as [`TemplateSpec::matches`] decides. The one rule every lookup uses.
    pub fn accepts(&self, file: &str, name: Option<&TemplateName>, node_arch: &str) -> bool {
        self.exact_file() == Some(file) || name.is_some_and(|n| self.matches(n, node_arch))
    }

    /// Whether the spec names one exact file (so the index is not needed to know what to fetch).
    pub fn exact_file(&self) -> Option<&str> {
        match self {
            TemplateSpec::File(f) => Some(f),
            TemplateSpec::Pattern { .. } => None,
        }
    }
}

impl fmt::Display for TemplateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateSpec::File(file) => f.write_str(file),
            TemplateSpec::Pattern { os, version, variant, build, arch } => {
                f.write_str(os)?;
                for part in [version, variant].into_iter().flatten() {
                    write!(f, "-{part}")?;
                }
                for part in [build, arch].into_iter().flatten() {
                    write!(f, "_{part}")?;
                }
                Ok(())
            }
        }
    }
}

/// `3` matches `3` and `3.22`; `3.2` does not match `3.22`.
fn version_prefix(want: &str, have: &str) -> bool {
    have == want || have.strip_prefix(want).is_some_and(|rest| rest.starts_with(['.', '-']))
}

/// Compares versions and builds the way people read them: digit runs numerically, the rest as text.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let xn = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let yn = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (xs, ys) = (trim_zeros(&x[..xn]), trim_zeros(&y[..yn]));
                let ord = xs.len().cmp(&ys.len()).then_with(|| xs.cmp(ys));
                if ord != Ordering::Equal {
                    return ord;
                }
                x = &x[xn..];
                y = &y[yn..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let start = digits.iter().position(|d| *d != b'0').unwrap_or(digits.len());
    &digits[start..]
}

/// Orders two files of a spec by recency: version first, then build.
pub fn compare_recency(a: &TemplateName, b: &TemplateName) -> Ordering {
    compare_versions(a.version.as_deref().unwrap_or(""), b.version.as_deref().unwrap_or(""))
        .then_with(|| compare_versions(&a.build, &b.build))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(f: &str) -> TemplateName {
        TemplateName::parse(f).unwrap_or_else(|| panic!("{f} parses"))
    }

    #[test]
    fn modern_names_are_classified() {
        let cases = [
            (
                "alpine-3.22-default_20250617_amd64.tar.xz",
                "alpine",
                Some("3.22"),
                Some("default"),
                "20250617",
                "amd64",
                "tar.xz",
            ),
            (
                "debian-12-standard_12.7-1_amd64.tar.zst",
                "debian",
                Some("12"),
                Some("standard"),
                "12.7-1",
                "amd64",
                "tar.zst",
            ),
            (
                "ubuntu-25.04-standard_25.04-1.1_amd64.tar.zst",
                "ubuntu",
                Some("25.04"),
                Some("standard"),
                "25.04-1.1",
                "amd64",
                "tar.zst",
            ),
            (
                "archlinux-base_20260420-1_amd64.tar.zst",
                "archlinux",
                None,
                Some("base"),
                "20260420-1",
                "amd64",
                "tar.zst",
            ),
            (
                "centos-9-stream-default_20240828_amd64.tar.xz",
                "centos",
                Some("9"),
                Some("stream-default"),
                "20240828",
                "amd64",
                "tar.xz",
            ),
            (
                "proxmox-mail-gateway-9.1-standard_9.1-1_amd64.tar.zst",
                "proxmox-mail-gateway",
                Some("9.1"),
                Some("standard"),
                "9.1-1",
                "amd64",
                "tar.zst",
            ),
            (
                "gentoo-current-openrc_20250508_amd64.tar.xz",
                "gentoo",
                None,
                Some("current-openrc"),
                "20250508",
                "amd64",
                "tar.xz",
            ),
            ("devuan-5.0-standard_5.0_amd64.tar.gz", "devuan", Some("5.0"), Some("standard"), "5.0", "amd64", "tar.gz"),
            ("custom_1.0_arm64.tar.zst", "custom", None, None, "1.0", "arm64", "tar.zst"),
            (
                "archlinux-base_2015-24-29-1_x86_64.tar.gz",
                "archlinux",
                None,
                Some("base"),
                "2015-24-29-1",
                "amd64",
                "tar.gz",
            ),
        ];
        for (file, os, version, variant, build, arch, format) in cases {
            let n = name(file);
            assert_eq!(
                (
                    n.os.as_str(),
                    n.version.as_deref(),
                    n.variant.as_deref(),
                    n.build.as_str(),
                    n.arch.as_str(),
                    n.format.as_str()
                ),
                (os, version, variant, build, arch, format),
                "{file}"
            );
        }
        assert!(TemplateName::parse("notatemplate.iso").is_none());
        assert!(TemplateName::parse("x.tar.xz").is_none());
        assert!(TemplateName::parse("_1_amd64.tar.xz").is_none());
    }

    #[test]
    fn every_real_name_parses_without_panic_and_modern_ones_classify() {
        let Some(path) = pve_sim::testing::fixture("template-names.txt") else { return };
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut count = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            count += 1;
            let parsed = TemplateName::parse(line.trim());
            let n = parsed.unwrap_or_else(|| panic!("{line} did not parse"));
            assert!(["amd64", "i386"].contains(&n.arch.as_str()), "{line}: {}", n.arch);
            // Modern families: the OS is the first word and the version starts with a digit.
            for os in ["alpine", "debian", "ubuntu", "fedora", "rockylinux", "almalinux", "opensuse"] {
                if line.starts_with(&format!("{os}-")) {
                    assert_eq!(n.os, os, "{line}");
                    assert!(n.version.as_ref().is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit())), "{line}");
                }
            }
            let spec = TemplateSpec::parse(line.trim()).unwrap();
            assert!(spec.matches(&n, &n.arch), "{line} matches itself");
        }
        assert_eq!(count, 209);
    }

    #[test]
    fn spec_matching() {
        let alpine = name("alpine-3.22-default_20250617_amd64.tar.xz");
        let m = |s: &str, n: &TemplateName, arch: &str| TemplateSpec::parse(s).unwrap().matches(n, arch);
        assert!(m("alpine", &alpine, "amd64"));
        assert!(m("alpine-3.22", &alpine, "amd64"));
        assert!(m("alpine-3", &alpine, "amd64"));
        assert!(!m("alpine-3.2", &alpine, "amd64"));
        assert!(m("alpine-3.22-default", &alpine, "amd64"));
        assert!(!m("alpine-3.22-edge", &alpine, "amd64"));
        assert!(m("alpine-3.22-default_20250617", &alpine, "amd64"));
        assert!(!m("alpine-3.22-default_20250101", &alpine, "amd64"));
        assert!(!m("alpine", &alpine, "arm64"), "a spec without arch matches only the node's arch");
        assert!(m("alpine-3.22-default_20250617_amd64", &alpine, "arm64"), "an explicit arch wins");
        assert!(m("alpine-3.22-default_20250617_x86_64", &alpine, "arm64"));
        assert!(!m("debian", &alpine, "amd64"));
        assert!(m("alpine-3.22-default_20250617_amd64.tar.xz", &alpine, "arm64"));
        let debian = name("debian-12-standard_12.7-1_amd64.tar.zst");
        assert!(m("debian-12", &debian, "amd64"));
        assert!(m("debian-12-standard_12.7-1", &debian, "amd64"));
        let pmg = name("proxmox-mail-gateway-9.1-standard_9.1-1_amd64.tar.zst");
        assert!(m("proxmox-mail-gateway", &pmg, "amd64"));
        assert!(!m("proxmox", &pmg, "amd64"));
    }

    #[test]
    fn spec_errors() {
        assert_eq!(TemplateSpec::parse(""), Err(SpecError::Empty));
        assert!(matches!(TemplateSpec::parse("a b"), Err(SpecError::BadCharacters(_))));
        assert!(matches!(TemplateSpec::parse("a_b_c_d"), Err(SpecError::TooManyParts(_))));
        assert!(matches!(TemplateSpec::parse("x.tar.xz"), Err(SpecError::BadFileName(_))));
        assert_eq!(TemplateSpec::parse("debian-12-standard").unwrap().to_string(), "debian-12-standard");
    }

    #[test]
    fn recency_ordering() {
        assert_eq!(compare_versions("3.9", "3.22"), Ordering::Less);
        assert_eq!(compare_versions("12.12-1", "12.7-1"), Ordering::Greater);
        assert_eq!(compare_versions("25.04-1.1", "25.04-1"), Ordering::Greater);
        assert_eq!(compare_versions("20250617", "20250617"), Ordering::Equal);
        assert_eq!(compare_versions("007", "7"), Ordering::Equal);
        let older = name("alpine-3.9-default_20190101_amd64.tar.xz");
        let newer = name("alpine-3.22-default_20250617_amd64.tar.xz");
        assert_eq!(compare_recency(&older, &newer), Ordering::Less);
    }
}
