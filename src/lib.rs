//! vztmpld keeps Proxmox VE container-template caches warm, declaratively, across whole clusters.
//!
//! The library is the whole product; the binary (`src/main.rs`) is a thin edge over [`cli`].
//!
//! - [`config`]: the desired state, validated with `file:line:col` for every problem.
//! - [`pve`]: the Proxmox VE client — the only code that talks HTTP to Proxmox.
//! - [`reconcile`]: one pass — observe, plan (pure), apply.
//! - [`daemon`]: the reconciling daemon, with injected edges (listener, control stream).
//! - [`ha`]: leader election on etcd, so that several daemons on the same clusters never download twice.
//! - [`cli`]: the command line and the exit statuses.
//! - [`template`], [`names`]: template file names and specs; Proxmox's identifier formats.
//!
//! The Proxmox VE simulator every test runs against is the `pve-sim` workspace crate.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod files;
pub mod ha;
pub mod names;
pub mod pve;
pub mod reconcile;
pub mod suggest;
pub mod template;
pub mod time;
