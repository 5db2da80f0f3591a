//! `mirrors:` on a cluster: URL prefixes of the appliance index's locations (and of url templates) mapped to a
//! mirror's. Only where bytes come from changes: the file name and the index's sha512 (or the configured
//! checksum) stay, so a mirror can never substitute other bytes.

use std::collections::BTreeMap;

use super::Validator;

/// At most this many mirror prefixes per cluster.
const MAX_MIRRORS: usize = 100;

impl Validator {
    /// `(prefix, replacement)` pairs, longest prefix first (the most specific one wins).
    pub(super) fn mirrors(&mut self, at: &str, raw: Option<BTreeMap<String, String>>) -> Vec<(String, String)> {
        let Some(raw) = raw else { return Vec::new() };
        let key = format!("{at}.mirrors");
        if raw.len() > MAX_MIRRORS {
            self.problem(&key, format!("mirrors: {} prefixes exceed the limit of {MAX_MIRRORS}", raw.len()));
            return Vec::new();
        }
        let mut out = Vec::new();
        for (from, to) in raw {
            let mut ok = true;
            for url in [&from, &to] {
                let valid = reqwest::Url::parse(url)
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
                if !valid {
                    self.problem(
                        &format!("{key}.{from}"),
                        format!(
                            "mirrors: '{url}' is not an http(s) URL prefix like http://download.proxmox.com/images/"
                        ),
                    );
                    ok = false;
                }
            }
            if ok && from.ends_with('/') != to.ends_with('/') {
                self.problem(
                    &format!("{key}.{from}"),
                    format!("mirrors: '{from}' → '{to}': end both with '/' or neither, or the paths run together"),
                );
                ok = false;
            }
            if ok {
                out.push((from, to));
            }
        }
        out.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_longest_prefix_wins() {
        let m = vec![
            ("http://download.proxmox.com/images/system/".to_string(), "https://a.lan/sys/".to_string()),
            ("http://download.proxmox.com/images/".to_string(), "https://a.lan/pve/".to_string()),
        ];
        let r = |u: &str| super::super::rewrite_mirror(&m, u);
        assert_eq!(
            r("http://download.proxmox.com/images/system/x.tar.zst").as_deref(),
            Some("https://a.lan/sys/x.tar.zst")
        );
        assert_eq!(
            r("http://download.proxmox.com/images/other/x.tar.zst").as_deref(),
            Some("https://a.lan/pve/other/x.tar.zst")
        );
        assert_eq!(r("https://releases.turnkeylinux.org/x.tar.gz"), None);
    }
}
