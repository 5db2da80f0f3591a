//! vztmpld keeps Proxmox VE container-template caches warm, declaratively, across whole clusters.
//!
//! Modules:
//! - [`sim`]: a Proxmox VE API simulator (`vztmpld sim`), the world every test runs against.
//! - [`cli`]: the command line (clap) and the commands it dispatches to.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod metrics;
pub mod names;
pub mod pve;
pub mod reconcile;
pub mod report;
pub mod server;
pub mod sim;
pub mod status;
pub mod status_cmd;
pub mod template;
