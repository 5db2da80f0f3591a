//! Credentials in the configuration: the token secret (a file or an environment variable) and how the
//! server's certificate is verified (pins, a CA file, or insecure). Files are read bounded; secrets never
//! appear in a message.

use std::path::Path;

use super::{Secret, TlsMode, Validator, model};
use crate::names::parse_fingerprint;

impl Validator {
    pub(super) fn secret(
        &mut self,
        at: &str,
        auth: &model::RawAuth,
        base_dir: &Path,
        warnings: &mut Vec<String>,
    ) -> Option<Secret> {
        match (&auth.secret_file, &auth.secret_env) {
            (Some(_), Some(_)) | (None, None) => {
                self.problem(&format!("{at}.auth"), "auth: give exactly one of secret_file or secret_env");
                None
            }
            (Some(file), None) => self.secret_file(&format!("{at}.auth.secret_file"), &base_dir.join(file), warnings),
            (None, Some(var)) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Some(Secret::new(v.trim().to_string())),
                _ => {
                    self.problem(
                        &format!("{at}.auth.secret_env"),
                        format!("environment variable {var} is not set or empty; export the token secret in it"),
                    );
                    None
                }
            },
        }
    }

    /// Reads a one-word secret from a regular file, warning when others may read it.
    pub(super) fn secret_file(&mut self, key: &str, path: &Path, warnings: &mut Vec<String>) -> Option<Secret> {
        match crate::files::read_bounded_text(path, crate::files::SECRET_LIMIT) {
            Ok(text) if text.trim().is_empty() => {
                self.problem(key, format!("secret file {} is empty; put the secret (one word) in it", path.display()));
                None
            }
            Ok(text) if text.trim().chars().any(|c| c.is_control() || c.is_whitespace() || !c.is_ascii()) => {
                self.problem(
                    key,
                    format!(
                        "secret file {} holds more than one word or characters a secret never has (a token secret is a UUID); put only the secret in it",
                        path.display()
                    ),
                );
                None
            }
            Ok(text) => {
                if let Some(w) = loose_permissions(path) {
                    warnings.push(w);
                }
                Some(Secret::new(text.trim().to_string()))
            }
            Err(e) => {
                self.problem(
                    key,
                    format!("cannot read secret file {}: {e} (create it, readable by vztmpld only)", path.display()),
                );
                None
            }
        }
    }

    pub(super) fn tls(&mut self, at: &str, raw: model::RawTls, base_dir: &Path) -> Option<TlsMode> {
        let given = usize::from(raw.fingerprint.is_some())
            + usize::from(raw.fingerprints.is_some())
            + usize::from(raw.ca_file.is_some())
            + usize::from(raw.insecure == Some(true));
        if given != 1 {
            self.problem(
                &format!("{at}.tls"),
                "tls: give exactly one of fingerprint (SHA-256 from the Proxmox GUI), fingerprints (one per node), ca_file (the cluster's /etc/pve/pve-root-ca.pem), or insecure: true",
            );
            return None;
        }
        let pins: Option<Vec<(String, String)>> = match (raw.fingerprint, raw.fingerprints) {
            (Some(fp), _) => Some(vec![(format!("{at}.tls.fingerprint"), fp)]),
            (None, Some(list)) if list.is_empty() => {
                self.problem(&format!("{at}.tls.fingerprints"), "tls.fingerprints: give at least one");
                return None;
            }
            (None, Some(list)) => {
                Some(list.into_iter().enumerate().map(|(i, fp)| (format!("{at}.tls.fingerprints[{i}]"), fp)).collect())
            }
            (None, None) => None,
        };
        if let Some(pins) = pins {
            let mut parsed = Vec::new();
            for (key, fp) in pins {
                match parse_fingerprint(&fp) {
                    Some(bytes) => parsed.push(bytes),
                    None => self.problem(
                        &key,
                        format!("fingerprint '{fp}' is not a SHA-256 fingerprint: expected 32 hex pairs like AA:BB:...:FF (Datacenter → node → System → Certificates)"),
                    ),
                }
            }
            return Some(TlsMode::Pinned(parsed));
        }
        if let Some(file) = raw.ca_file {
            let path = base_dir.join(file);
            return match crate::files::read_bounded(&path, crate::files::CA_LIMIT) {
                Ok(pem) if String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") => {
                    Some(TlsMode::CaFile { path, pem })
                }
                Ok(_) => {
                    self.problem(&format!("{at}.tls.ca_file"), format!("{} holds no PEM certificate", path.display()));
                    None
                }
                Err(e) => {
                    self.problem(&format!("{at}.tls.ca_file"), format!("cannot read CA file {}: {e}", path.display()));
                    None
                }
            };
        }
        Some(TlsMode::Insecure)
    }
}

#[cfg(unix)]
pub(super) fn loose_permissions(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    // Group-readable is how deploy/ shares the secret with the service (0640 root:vztmpld); others never.
    (mode & 0o027 != 0).then(|| {
        format!(
            "secret file {} is {} (mode {:o}); run: chmod 640 {} (owner root, group vztmpld) or chmod 600",
            path.display(),
            if mode & 0o007 != 0 { "readable or writable by others" } else { "writable by its group" },
            mode & 0o777,
            path.display()
        )
    })
}

#[cfg(not(unix))]
pub(super) fn loose_permissions(_path: &Path) -> Option<String> {
    None
}
