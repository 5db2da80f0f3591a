//! The checks of one `clusters[]` entry that stand on their own: endpoints, the token id, node and storage
//! selectors. (Secrets and TLS are `credentials.rs`; mirrors are `mirrors.rs`.)

use super::{NodeSelector, StorageSelector, Validator};

impl Validator {
    /// `endpoints`: https URLs, port 8006 when none is given (with a warning naming `cluster`).
    pub(super) fn endpoints(
        &mut self,
        at: &str,
        endpoints: &[String],
        cluster: &str,
        warnings: &mut Vec<String>,
    ) -> Vec<url::Url> {
        let mut out = Vec::new();
        for (j, e) in endpoints.iter().enumerate() {
            match url::Url::parse(e) {
                Ok(mut u) if u.scheme() == "https" && u.host_str().is_some() => {
                    let authority = e.trim_start_matches("https://").split('/').next().unwrap_or_default();
                    let has_port = authority.rsplit_once(']').map_or(authority, |(_, after)| after).contains(':');
                    if !has_port && u.set_port(Some(8006)).is_ok() {
                        warnings.push(format!(
                            "{}: endpoint '{e}' has no port: using 8006, Proxmox's API port (write :443 explicitly if a proxy serves it there)",
                            cluster
                        ));
                    }
                    out.push(u)
                }
                Ok(_) => self.problem(
                    &format!("{at}.endpoints[{j}]"),
                    format!("endpoint '{e}' must be an https:// URL (Proxmox serves its API over HTTPS on port 8006)"),
                ),
                Err(err) => {
                    self.problem(&format!("{at}.endpoints[{j}]"), format!("endpoint '{e}' is not a URL: {err}"))
                }
            }
        }
        out
    }

    /// `auth.token_id`: `USER@REALM!TOKENID`, and never the header form with the secret appended.
    pub(super) fn token_id(&mut self, at: &str, token_id: &str) {
        if token_id.contains('=') {
            // The header form people paste (`USER@REALM!TOKENID=SECRET`): never echo the part after '='.
            self.problem(
                &format!("{at}.auth.token_id"),
                "token_id must not contain '=' — it looks like the header form with the secret appended; put only USER@REALM!TOKENID here and the secret in secret_file",
            );
        } else if !crate::names::valid_token_id(token_id) {
            self.problem(
                &format!("{at}.auth.token_id"),
                format!("token_id '{}' must look like USER@REALM!TOKENID, e.g. vztmpld@pve!cache", token_id),
            );
        }
    }

    /// `nodes`: `all` or a non-empty list of node names.
    pub(super) fn node_selector(&mut self, at: &str, nodes: Option<yaml_serde::Value>) -> NodeSelector {
        match nodes {
            None => NodeSelector::All,
            Some(yaml_serde::Value::String(s)) if s == "all" => NodeSelector::All,
            Some(yaml_serde::Value::Sequence(items)) => {
                let names: Vec<String> = items.iter().filter_map(|v| v.as_str().map(String::from)).collect();
                if names.len() != items.len() || names.is_empty() {
                    self.problem(&format!("{at}.nodes"), "nodes: must be `all` or a non-empty list of node names");
                }
                for (j, n) in names.iter().enumerate() {
                    if !crate::names::valid_node_name(n) {
                        self.problem(&format!("{at}.nodes[{j}]"), format!("'{n}' is not a valid Proxmox node name"));
                    }
                }
                NodeSelector::Only(names)
            }
            Some(_) => {
                self.problem(&format!("{at}.nodes"), "nodes: must be `all` or a list of node names, e.g. [pve1, pve2]");
                NodeSelector::All
            }
        }
    }

    /// `storage`: `auto` or a storage ID.
    pub(super) fn storage_selector(&mut self, at: &str, storage: Option<&str>) -> StorageSelector {
        match storage {
            None | Some("auto") => StorageSelector::Auto,
            Some(s) if crate::names::valid_storage_id(s) => StorageSelector::Named(s.to_string()),
            Some(s) => {
                self.problem(&format!("{at}.storage"), format!("storage: '{s}' is neither `auto` nor a storage ID"));
                StorageSelector::Auto
            }
        }
    }
}
