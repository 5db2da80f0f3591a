//! The configuration in force and how it is replaced: read and validate off the loop ([`ConfigSource::read`]
//! runs on a blocking thread), compare a hash of the file's bytes (file events are only hints), and only then
//! swap the clusters and their clients ([`Active::apply`]). A bad edit never replaces a good configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::shared::Shared;
use super::{DaemonError, systemd};
use crate::config::{self, Config};
use crate::pve::ClientOptions;
use crate::reconcile::Fleet;

/// Where the configuration comes from: a file, re-read on every reload.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    path: PathBuf,
    client_options: ClientOptions,
    state_dir: super::persist::StateDirChoice,
}

impl ConfigSource {
    /// The YAML file at `path`; clients are built with `client_options`.
    pub fn file(path: impl Into<PathBuf>, client_options: ClientOptions) -> Self {
        Self { path: path.into(), client_options, state_dir: Default::default() }
    }

    /// Where the state directory is when the configuration names none, and when `--state-dir` overrides it.
    pub fn with_state_dir(mut self, choice: super::persist::StateDirChoice) -> Self {
        self.state_dir = choice;
        self
    }

    /// The state directory for a configuration: `--state-dir`, else its `state_dir`, else `$STATE_DIRECTORY`.
    pub fn state_dir(&self, config: &Config) -> Option<PathBuf> {
        self.state_dir.resolve(config.state_dir.as_deref())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file once (bounded, regular UTF-8 files only), with the SHA-256 of its bytes.
    fn read_text(&self) -> std::io::Result<(String, [u8; 32])> {
        let text = crate::files::read_bounded_text(&self.path, crate::files::CONFIG_LIMIT)?;
        let hash = Sha256::digest(text.as_bytes()).into();
        Ok((text, hash))
    }

    /// Validates the text; logs its warnings.
    fn validate(&self, text: &str) -> Result<Config, config::ConfigError> {
        let cfg = config::parse(text, &self.path)?;
        for w in &cfg.warnings {
            tracing::warn!("{w}");
        }
        Ok(cfg)
    }

    /// Reads and validates the file.
    pub(super) fn load(&self) -> Result<(Config, [u8; 32]), config::ConfigError> {
        let (text, hash) =
            self.read_text().map_err(|source| config::ConfigError::Read { path: self.path.clone(), source })?;
        Ok((self.validate(&text)?, hash))
    }

    /// Reads the file once, and validates it unless its bytes are the `known` ones (`force` validates anyway:
    /// SIGHUP re-reads the secrets). Blocking: run it off the loop.
    pub(super) fn read(&self, known: Option<[u8; 32]>, force: bool) -> Reading {
        match self.read_text() {
            Err(e) => Reading::Unreadable(format!("{}: cannot read the configuration: {e}", self.path.display())),
            Ok((_, hash)) if !force && known == Some(hash) => Reading::Unchanged,
            Ok((text, hash)) => Reading::Loaded { hash, result: self.validate(&text).map(Box::new) },
        }
    }
}

/// What a read of the configuration file found.
#[derive(Debug)]
pub(super) enum Reading {
    /// It cannot be read (deleted, a directory, too large, not text); the message names the file.
    Unreadable(String),
    /// The same bytes as the configuration in force.
    Unchanged,
    /// New bytes (or a forced read), validated.
    Loaded { hash: [u8; 32], result: Result<Box<Config>, config::ConfigError> },
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
    /// Takes the first configuration (read by [`ConfigSource::load`]) in.
    pub(super) fn first(
        config: Config,
        hash: [u8; 32],
        source: &ConfigSource,
        shared: &Arc<Shared>,
    ) -> Result<Self, DaemonError> {
        let active = Self::activate(config, hash, 1, source, shared)?;
        shared.metrics().record_initial_config();
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
        // A pinned cluster keeps the node fingerprints learned under the same anchors (see `pve::pins`).
        let fleet = Fleet::with_pins(config, source.client_options, shared.pins())?;
        let pinned: Vec<&str> = fleet
            .clusters
            .iter()
            .filter(|c| matches!(c.config.tls, crate::config::TlsMode::Pinned(_)))
            .map(|c| c.config.name.as_str())
            .collect();
        shared.pins().retain(&pinned);
        for cluster in &fleet.clusters {
            cluster.client.set_observer(Arc::new(shared.metrics().api_observer(&cluster.config.name)));
        }
        shared.catalog().set_fleet(fleet.clone());
        Ok(Self { fleet, hash, generation, unreadable: None })
    }

    /// The hash of the bytes in force (or last rejected), for [`ConfigSource::read`].
    pub(super) fn hash(&self) -> [u8; 32] {
        self.hash
    }

    /// Takes a [`Reading`] into account; returns whether a new configuration took effect.
    pub(super) fn apply(&mut self, reading: Reading, source: &ConfigSource, shared: &Arc<Shared>, force: bool) -> bool {
        let (hash, result) = match reading {
            Reading::Unreadable(error) => {
                if force || self.unreadable.as_deref() != Some(error.as_str()) {
                    tracing::error!(generation = self.generation, "{error}; keeping the running one");
                    shared.update(|s| s.config_unreadable(error.clone(), SystemTime::now()));
                }
                self.unreadable = Some(error);
                return false;
            }
            Reading::Unchanged => {
                self.readable_again(source, shared);
                return false;
            }
            Reading::Loaded { hash, result } => (hash, result),
        };
        self.readable_again(source, shared);
        systemd::reloading();
        let loaded = result
            .map_err(DaemonError::from)
            .and_then(|cfg| Self::activate(*cfg, hash, self.generation + 1, source, shared));
        let applied = match loaded {
            Ok(new) => {
                let kept: std::collections::HashSet<&str> =
                    new.fleet.clusters.iter().map(|c| c.config.name.as_str()).collect();
                for gone in self.fleet.clusters.iter().filter(|c| !kept.contains(c.config.name.as_str())) {
                    tracing::info!(cluster = %gone.config.name, "cluster removed from the configuration; its running downloads are left to finish on Proxmox");
                }
                *self = new;
                tracing::info!(generation = self.generation, "configuration reloaded");
                shared.metrics().record_reload(Some(self.generation));
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
                shared.metrics().record_reload(None);
                shared.update(|s| s.reload_rejected(error));
                false
            }
        };
        systemd::ready();
        applied
    }

    fn readable_again(&mut self, source: &ConfigSource, shared: &Arc<Shared>) {
        if self.unreadable.take().is_some() {
            tracing::info!(config = %source.path().display(), "the configuration file is readable again");
            shared.update(|s| s.config_readable(SystemTime::now()));
        }
    }
}
