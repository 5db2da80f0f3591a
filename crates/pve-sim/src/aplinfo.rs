//! The appliance index (`aplinfo`): Proxmox's `.dat` format, parsed by Proxmox's own rules, and the
//! built-in indexes the simulator serves when a scenario names no file.

use std::collections::BTreeMap;

/// One appliance as `GET /nodes/{node}/aplinfo` returns it: every value a string.
pub(crate) type AplEntry = BTreeMap<String, String>;

const VZTMPL_EXTENSIONS: &[&str] = &[".tar", ".tar.gz", ".tar.xz", ".tar.zst", ".tar.bz2"];

/// True when a file name ends in an extension Proxmox lists as vztmpl content.
pub(crate) fn has_vztmpl_extension(name: &str) -> bool {
    VZTMPL_EXTENSIONS.iter().any(|ext| name.ends_with(ext))
}

/// The result of reading an index: the usable entries, and one warning per dropped record.
#[derive(Debug, Default)]
pub(crate) struct ParsedIndex {
    pub entries: Vec<AplEntry>,
    pub warnings: Vec<String>,
}

/// Parses `.dat` text the way `APLInfo.pm` does in read mode: field names lower-cased, `Description`
/// last (its continuation lines swallowed), bad records dropped with a warning. `source` is the
/// index base URL that relative `Location`s hang off.
pub(crate) fn parse_dat(text: &str, source: &str) -> ParsedIndex {
    let mut out = ParsedIndex::default();
    for (number, record) in split_records(text).into_iter().enumerate() {
        match parse_record(&record, source) {
            Ok(Some(entry)) => out.entries.push(entry),
            Ok(None) => {}
            Err(why) => out.warnings.push(format!("record {}: {why}", number + 1)),
        }
    }
    out
}

fn split_records(text: &str) -> Vec<Vec<&str>> {
    let mut records = Vec::new();
    let mut current = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                records.push(std::mem::take(&mut current));
            }
        } else {
            current.push(line);
        }
    }
    if !current.is_empty() {
        records.push(current);
    }
    records
}

fn parse_record(lines: &[&str], source: &str) -> Result<Option<AplEntry>, String> {
    let mut entry = AplEntry::new();
    let mut iter = lines.iter();
    while let Some(line) = iter.next() {
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("unable to parse line '{line}'"));
        };
        if key.is_empty() || key.starts_with(char::is_whitespace) {
            return Err(format!("unable to parse line '{line}'"));
        }
        let key = key.to_ascii_lowercase();
        let value = value.trim().to_string();
        if key == "description" {
            // Description swallows the rest of the record: first line is the headline.
            let rest: Vec<&str> = iter.by_ref().map(|l| l.trim()).collect();
            entry.insert("headline".into(), value);
            entry.insert("description".into(), rest.join("\n"));
            break;
        }
        entry.insert(key, value);
    }
    if entry.get("package").map(String::as_str) == Some("pve-web-news") {
        return Ok(None);
    }
    for required in ["package", "type", "os", "version", "infopage"] {
        if !entry.contains_key(required) {
            let name = entry.get("package").cloned().unwrap_or_else(|| "?".into());
            return Err(format!("appliance '{name}': missing field '{required}'"));
        }
    }
    let version = &entry["version"];
    if !valid_version(version) {
        return Err(format!("unable to parse version '{version}'"));
    }
    let kind = &entry["type"];
    if kind != "lxc" && kind != "openvz" {
        return Err(format!("unknown app type '{kind}'"));
    }
    entry.entry("section".into()).or_insert_with(|| "unknown".into());
    entry.entry("description".into()).or_default();
    entry.entry("headline".into()).or_default();
    let location = entry.get("location").cloned().unwrap_or_default();
    let basename = location.rsplit('/').next().unwrap_or_default().to_string();
    let template = if has_vztmpl_extension(&basename) {
        basename
    } else {
        format!(
            "{}-{}_{}_{}.tar.gz",
            entry["os"],
            entry["package"],
            entry["version"],
            entry.get("architecture").map(String::as_str).unwrap_or("i386")
        )
    };
    entry.insert("template".into(), template);
    entry.insert("source".into(), source.to_string());
    if !location.contains("://") {
        entry.insert("location".into(), format!("{source}/{location}"));
    }
    Ok(Some(entry))
}

/// `^\d[a-zA-Z0-9.+\-:~]*(-\d+)?$` without a regex engine.
fn valid_version(v: &str) -> bool {
    let mut chars = v.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_alphanumeric() || ".+-:~".contains(c))
}

/// One built-in appliance: enough to write a faithful `.dat` record.
struct Builtin {
    package: &'static str,
    version: &'static str,
    os: &'static str,
    section: &'static str,
    file: &'static str,
    infopage: &'static str,
    headline: &'static str,
    more: &'static str,
}

const LXC_INFO: &str = "https://linuxcontainers.org";
const PVE_INFO: &str = "https://pve.proxmox.com/wiki/Linux_Container#pct_supported_distributions";

macro_rules! lxc {
    ($pkg:literal, $ver:literal, $os:literal, $file:literal, $head:literal) => {
        Builtin {
            package: $pkg,
            version: $ver,
            os: $os,
            section: "system",
            file: $file,
            infopage: LXC_INFO,
            headline: $head,
            more: "",
        }
    };
}

macro_rules! standard {
    ($pkg:literal, $ver:literal, $os:literal, $file:literal, $head:literal, $more:literal) => {
        Builtin {
            package: $pkg,
            version: $ver,
            os: $os,
            section: "system",
            file: $file,
            infopage: PVE_INFO,
            headline: $head,
            more: $more,
        }
    };
}

/// Modelled on the index Proxmox VE 9 ships (names and versions as of mid-2026).
const CURRENT: &[Builtin] = &[
    lxc!(
        "almalinux-10-default",
        "20250930",
        "almalinux",
        "almalinux-10-default_20250930_amd64.tar.xz",
        "LXC default image for almalinux 10 (20250930)"
    ),
    lxc!(
        "alpine-3.22-default",
        "20250617",
        "alpine",
        "alpine-3.22-default_20250617_amd64.tar.xz",
        "LXC default image for alpine 3.22 (20250617)"
    ),
    lxc!(
        "alpine-3.23-default",
        "20260116",
        "alpine",
        "alpine-3.23-default_20260116_amd64.tar.xz",
        "LXC default image for alpine 3.23 (20260116)"
    ),
    lxc!(
        "alpine-3.24-default",
        "20260714",
        "alpine",
        "alpine-3.24-default_20260714_amd64.tar.xz",
        "LXC default image for alpine 3.24 (20260714)"
    ),
    Builtin {
        package: "archlinux-base",
        version: "20260420-1",
        os: "archlinux",
        section: "system",
        file: "archlinux-base_20260420-1_amd64.tar.zst",
        infopage: "https://www.archlinux.org",
        headline: "ArchLinux base image.",
        more: "ArchLinux template with the 'base' group and the 'openssh' package installed.",
    },
    standard!(
        "debian-12-standard",
        "12.12-1",
        "debian-12",
        "debian-12-standard_12.12-1_amd64.tar.zst",
        "Debian 12 Bookworm (standard)",
        "A small Debian Bookworm system including all standard packages."
    ),
    standard!(
        "debian-13-standard",
        "13.6-1",
        "debian-13",
        "debian-13-standard_13.6-1_amd64.tar.zst",
        "Debian 13 Trixie (standard)",
        "A small Debian Trixie system including all standard packages."
    ),
    lxc!(
        "fedora-44-default",
        "20260713",
        "fedora",
        "fedora-44-default_20260713_amd64.tar.xz",
        "LXC default image for fedora 44 (20260713)"
    ),
    lxc!(
        "rockylinux-10-default",
        "20251001",
        "rockylinux",
        "rockylinux-10-default_20251001_amd64.tar.xz",
        "LXC default image for rockylinux 10 (20251001)"
    ),
    standard!(
        "ubuntu-22.04-standard",
        "22.04-1",
        "ubuntu-22.04",
        "ubuntu-22.04-standard_22.04-1_amd64.tar.zst",
        "Ubuntu 22.04 Jammy (standard)",
        "A small Ubuntu 22.04 Jammy Jellyfish system including all standard packages."
    ),
    standard!(
        "ubuntu-24.04-standard",
        "24.04-2",
        "ubuntu-24.04",
        "ubuntu-24.04-standard_24.04-2_amd64.tar.zst",
        "Ubuntu 24.04 Noble (standard)",
        "A small Ubuntu 24.04 Noble Numbat system including all standard packages."
    ),
    // The file is 25.04-1.1 while the version says 25.04-1: clients must use `template`.
    standard!(
        "ubuntu-25.04-standard",
        "25.04-1",
        "ubuntu-25.04",
        "ubuntu-25.04-standard_25.04-1.1_amd64.tar.zst",
        "Ubuntu 25.04 Plucky (standard)",
        "A small Ubuntu 25.04 Plucky Puffin system including all standard packages."
    ),
    standard!(
        "ubuntu-26.04-standard",
        "26.04-1",
        "ubuntu-26.04",
        "ubuntu-26.04-standard_26.04-1_amd64.tar.zst",
        "Ubuntu 26.04 Resolute (standard)",
        "A small Ubuntu 26.04 Resolute Raccoon system including all standard packages."
    ),
    Builtin {
        package: "proxmox-mail-gateway-9.1-standard",
        version: "9.1-1",
        os: "debian-13",
        section: "mail",
        file: "proxmox-mail-gateway-9.1-standard_9.1-1_amd64.tar.zst",
        infopage: "https://www.proxmox.com/en/proxmox-mail-gateway/overview",
        headline: "Proxmox Mail Gateway 9.1",
        more: "A full featured mail proxy for spam and virus filtering, optimized for container environment.",
    },
];

/// Modelled on the index of mid-2024: what a node that never ran `pveam update` still has.
const STALE: &[Builtin] = &[
    lxc!(
        "alpine-3.19-default",
        "20240207",
        "alpine",
        "alpine-3.19-default_20240207_amd64.tar.xz",
        "LXC default image for alpine 3.19 (20240207)"
    ),
    lxc!(
        "alpine-3.18-default",
        "20230607",
        "alpine",
        "alpine-3.18-default_20230607_amd64.tar.xz",
        "LXC default image for alpine 3.18 (20230607)"
    ),
    standard!(
        "debian-11-standard",
        "11.7-1",
        "debian-11",
        "debian-11-standard_11.7-1_amd64.tar.zst",
        "Debian 11 Bullseye (standard)",
        "A small Debian Bullseye system including all standard packages."
    ),
    standard!(
        "debian-12-standard",
        "12.2-1",
        "debian-12",
        "debian-12-standard_12.2-1_amd64.tar.zst",
        "Debian 12 Bookworm (standard)",
        "A small Debian Bookworm system including all standard packages."
    ),
    standard!(
        "ubuntu-22.04-standard",
        "22.04-1",
        "ubuntu-22.04",
        "ubuntu-22.04-standard_22.04-1_amd64.tar.zst",
        "Ubuntu 22.04 Jammy (standard)",
        "A small Ubuntu 22.04 Jammy Jellyfish system including all standard packages."
    ),
    standard!(
        "ubuntu-24.04-standard",
        "24.04-2",
        "ubuntu-24.04",
        "ubuntu-24.04-standard_24.04-2_amd64.tar.zst",
        "Ubuntu 24.04 Noble (standard)",
        "A small Ubuntu 24.04 Noble Numbat system including all standard packages."
    ),
];

/// The built-in indexes a scenario can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BuiltinIndex {
    /// The current PVE 9 index.
    Current,
    /// A mid-2024 index, as on a node whose `pveam update` never ran.
    Stale,
}

/// Writes a built-in index as `.dat` text (without checksums: the simulator computes its own).
pub(crate) fn builtin_dat(which: BuiltinIndex) -> String {
    let table = match which {
        BuiltinIndex::Current => CURRENT,
        BuiltinIndex::Stale => STALE,
    };
    let mut out = String::from(
        "Package: pve-web-news\nDescription: News displayed on the admin interface\n  <b>Welcome</b> to the simulated Proxmox Virtual Environment!\n\n",
    );
    for b in table {
        out.push_str(&format!(
            "Package: {}\nVersion: {}\nType: lxc\nOS: {}\nSection: {}\nMaintainer: Proxmox Support Team <support@proxmox.com>\nArchitecture: amd64\nLocation: {}/{}\nInfopage: {}\nDescription: {}\n",
            b.package, b.version, b.os, b.section, b.section, b.file, b.infopage, b.headline
        ));
        if !b.more.is_empty() {
            out.push_str(&format!(" {}\n", b.more));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "http://mirror/images";

    #[test]
    fn builtin_indexes_parse_cleanly() {
        for which in [BuiltinIndex::Current, BuiltinIndex::Stale] {
            let parsed = parse_dat(&builtin_dat(which), SRC);
            assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
            assert!(parsed.entries.len() >= 6);
        }
    }

    #[test]
    fn computed_fields_follow_proxmox() {
        let parsed = parse_dat(&builtin_dat(BuiltinIndex::Current), SRC);
        let ubuntu = parsed.entries.iter().find(|e| e["package"] == "ubuntu-25.04-standard").unwrap();
        assert_eq!(ubuntu["version"], "25.04-1");
        assert_eq!(ubuntu["template"], "ubuntu-25.04-standard_25.04-1.1_amd64.tar.zst");
        assert_eq!(ubuntu["location"], format!("{SRC}/system/ubuntu-25.04-standard_25.04-1.1_amd64.tar.zst"));
        let alpine = parsed.entries.iter().find(|e| e["package"] == "alpine-3.22-default").unwrap();
        assert_eq!(alpine["description"], "");
        assert_eq!(alpine["headline"], "LXC default image for alpine 3.22 (20250617)");
        let debian = parsed.entries.iter().find(|e| e["package"] == "debian-13-standard").unwrap();
        assert_eq!(debian["description"], "A small Debian Trixie system including all standard packages.");
        assert!(!parsed.entries.iter().any(|e| e["package"] == "pve-web-news"));
    }

    #[test]
    fn bad_records_are_dropped_with_a_warning() {
        let text = "Package: a\nVersion: x1\nType: lxc\nOS: a\nInfopage: i\n\nPackage: b\nType: lxc\nOS: b\nVersion: 1\n\nPackage: c\nVersion: 1\nType: vm\nOS: c\nInfopage: i\n\nPackage: ok\nversion: 2.0\nTYPE: lxc\nOs: ok\nInfopage: i\nLocation: system/ok_2.0_amd64.tar.zst\n";
        let parsed = parse_dat(text, SRC);
        assert_eq!(parsed.entries.len(), 1, "{:?}", parsed.entries);
        assert_eq!(parsed.warnings.len(), 3);
        assert_eq!(parsed.entries[0]["template"], "ok_2.0_amd64.tar.zst");
        assert_eq!(parsed.entries[0]["section"], "unknown");
    }

    #[test]
    fn real_fixtures_parse_when_present() {
        for (file, count) in [("aplinfo-pve-9.dat", 25), ("aplinfo-2024-06.dat", 21)] {
            let Some(path) = crate::testing::fixture(file) else { return };
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let parsed = parse_dat(&text, SRC);
            assert!(parsed.warnings.is_empty(), "{file}: {:?}", parsed.warnings);
            assert_eq!(parsed.entries.len(), count, "{file}");
            assert!(parsed.entries.iter().all(|e| e["sha512sum"].len() == 128));
        }
    }
}
