//! The configuration in force and how it is replaced: validate first, compare a hash of the file's bytes
//! (file events are only hints), and only then swap the clusters and their clients. A bad edit never
//! replaces a good configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::server::Shared;
use super::{DaemonError, systemd};
use crate::config::{self, Config};
use crate::pve::{ApiAnswer, ClientOptions};
use crate::reconcile::Fleet;

/// Where the configuration comes from: a file, re-read on every reload.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    path: PathBuf,
    client_options: ClientOptions,
}

impl ConfigSource {
    /// The YAML file at `path`; clients are built with `client_options`.
    pub fn file(path: impl Into<PathBuf>, client_options: ClientOptions) -> Self {
        Self { path: path.into(), client_options }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SHA-256 of the file's bytes (bounded, regular files only).
    fn hash(&self) -> std::io::Result<[u8; 32]> {
        crate::files::read_bounded(&self.path, crate::files::CONFIG_LIMIT).map(|bytes| Sha256::digest(bytes).into())
    }

    /// Reads and validates the file; logs its warnings.
    fn load(&self) -> Result<(Config, [u8; 32]), config::ConfigError> {
        let cfg = config::load(&self.path)?;
        for w in &cfg.warnings {
            tracing::warn!("{w}");
        }
        Ok((cfg, self.hash().unwrap_or_default()))
    }
}

/// The configuration in force, with its clusters' clients.
#[derive(Debug)]
pub(super) struct Active {
    pub(super) fleet: Fleet,
    hash: [u8; 32],
    pub(super) generation: u64,
    /// Why the file cannot be read now (deleted, replaced by a directory), reported once until it comes back.
    unreadable: Option<String>,
}

impl Active {
    /// Loads the first configuration.
    pub(super) fn load(source: &ConfigSource, shared: &Arc<Shared>) -> Result<Self, DaemonError> {
        let (config, hash) = source.load()?;
        let active = Self::activate(config, hash, 1, source, shared)?;
        shared.metrics.record_initial_config();
        shared.update(|s| s.config_loaded(1, SystemTime::now()));
        Ok(active)
    }

    /// The configuration in force.
    pub(super) fn config(&self) -> &Config {
        &self.fleet.config
    }

    fn activate(
        config: Config,
        hash: [u8; 32],
        generation: u64,
        source: &ConfigSource,
        shared: &Arc<Shared>,
    ) -> Result<Self, DaemonError> {
        let fleet = Fleet::new(config, source.client_options)?;
        for cluster in &fleet.clusters {
            let shared = Arc::clone(shared);
            let name = cluster.config.name.clone();
            cluster
                .client
                .set_observer(Arc::new(move |answer: ApiAnswer<'_>| shared.metrics.record_api(&name, answer)));
        }
        Ok(Self { fleet, hash, generation, unreadable: None })
    }

    /// Re-reads the configuration; `force` reloads even when the bytes did not change (SIGHUP re-reads secrets).
    /// Returns whether a new configuration took effect.
    pub(super) fn reload(&mut self, source: &ConfigSource, force: bool, shared: &Arc<Shared>) -> bool {
        let hash = match source.hash() {
            Ok(hash) => hash,
            Err(e) => {
                let error = format!("{}: cannot read the configuration: {e}", source.path().display());
                if force || self.unreadable.as_deref() != Some(error.as_str()) {
                    tracing::error!(generation = self.generation, "{error}; keeping the running one");
                    shared.update(|s| s.config_unreadable(error.clone(), SystemTime::now()));
                }
                self.unreadable = Some(error);
                return false;
            }
        };
        if self.unreadable.take().is_some() {
            tracing::info!(config = %source.path().display(), "the configuration file is readable again");
            shared.update(|s| s.config_readable(SystemTime::now()));
        }
        if !force && hash == self.hash {
            return false;
        }
        systemd::reloading();
        let loaded = source
            .load()
            .map_err(DaemonError::from)
            .and_then(|(cfg, hash)| Self::activate(cfg, hash, self.generation + 1, source, shared));
        let applied = match loaded {
            Ok(new) => {
                for gone in self
                    .fleet
                    .clusters
                    .iter()
                    .filter(|c| !new.fleet.clusters.iter().any(|n| n.config.name == c.config.name))
                {
                    tracing::info!(cluster = %gone.config.name, "cluster removed from the configuration; its running downloads are left to finish on Proxmox");
                }
                *self = new;
                tracing::info!(generation = self.generation, "configuration reloaded");
                shared.metrics.record_reload(Some(self.generation));
                shared.update(|s| s.config_loaded(self.generation, SystemTime::now()));
                true
            }
            Err(e) => {
                // Remember the rejected bytes so the same bad file is not re-reported on every event.
                self.hash = hash;
                let error = e.to_string();
                tracing::error!(
                    generation = self.generation,
                    "configuration rejected, keeping the running one:\n{error}"
                );
                shared.metrics.record_reload(None);
                shared.update(|s| s.reload_rejected(error));
                false
            }
        };
        systemd::ready();
        applied
    }
}
