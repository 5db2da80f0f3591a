//! `oci:` templates (Proxmox VE 9's `oci-registry-pull`): the reference must end in `:tag` (Proxmox accepts no
//! digest), and the file Proxmox writes is `normalize(filename or reference).tar`.

use super::{TemplateSource, Validator};

impl Validator {
    pub(super) fn oci_template(
        &mut self,
        at: &str,
        reference: &str,
        filename: Option<&str>,
        checksum: Option<&str>,
    ) -> Option<TemplateSource> {
        if checksum.is_some() {
            self.problem(
                &format!("{at}.checksum"),
                "checksum: Proxmox pulls OCI images without one (it gives no digest); remove it",
            );
        }
        if !valid_reference(reference) {
            let hint = if reference.contains('@') {
                "Proxmox accepts no digest (@sha256:…); name a tag"
            } else if !reference.rsplit('/').next().unwrap_or_default().contains(':') {
                "it must end in :TAG, e.g. docker.io/library/alpine:3.22"
            } else {
                "expected [REGISTRY[:PORT]/]NAME[/NAME…]:TAG with lower-case names"
            };
            self.problem(
                &format!("{at}.oci"),
                format!("oci: '{reference}' is not an image reference Proxmox accepts: {hint}"),
            );
            return None;
        }
        if let Some(f) = filename {
            if f.ends_with(".tar") {
                self.problem(
                    &format!("{at}.filename"),
                    format!("filename: give '{}' without .tar (Proxmox appends it)", f.trim_end_matches(".tar")),
                );
                return None;
            }
        }
        let file = format!("{}.tar", normalize_filename(filename.unwrap_or(reference)));
        Some(TemplateSource::Oci { reference: reference.to_string(), filename: filename.map(String::from), file })
    }
}

/// `PVE::Storage::normalize_content_filename`: the path stripped, characters other than `[A-Za-z0-9_.-]` → `_`.
fn normalize_filename(name: &str) -> String {
    let base = name.trim_end_matches('\n').rsplit(['/', '\\']).next().unwrap_or_default();
    base.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' }).collect()
}

/// Proxmox's `reference` pattern: `[host[:port]/]name[/name…]:tag`, lower-case names, a tag of word characters.
fn valid_reference(r: &str) -> bool {
    let Some((path, tag)) = r.rsplit_once(':') else { return false };
    let tag_ok = tag.len() <= 128
        && tag.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    let mut parts: Vec<&str> = path.split('/').collect();
    if parts.len() > 1 && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost") {
        let host = parts.remove(0);
        let (name, port) = host.split_once(':').unwrap_or((host, "0"));
        let label = |l: &str| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if !name.split('.').all(label) || port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    let lower = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let component = |c: &&str| {
        c.chars().next().is_some_and(lower)
            && c.chars().last().is_some_and(lower)
            && c.chars().all(|x| lower(x) || "._-".contains(x))
    };
    tag_ok && !parts.is_empty() && parts.iter().all(component)
}

#[cfg(test)]
mod tests {
    #[test]
    fn references_and_file_names_follow_proxmox() {
        for ok in ["docker.io/library/alpine:3.22", "alpine:latest", "registry.lan:5000/team/app:v1.2"] {
            assert!(super::valid_reference(ok), "{ok}");
        }
        for bad in ["docker.io/library/alpine", "Alpine:3", "alpine@sha256:abc", "alpine:", "alpine:-x"] {
            assert!(!super::valid_reference(bad), "{bad}");
        }
        assert_eq!(super::normalize_filename("docker.io/library/alpine:3.22"), "alpine_3.22");
    }
}
