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
//! - [`template`], [`names`], [`suggest`], [`time`]: re-exported from the pure core.
//!
//! The pure parts — the configuration model, the observation model, the planner, the scheduler, template names —
//! are the `vztmpld-core` workspace crate, which cannot do I/O (its manifest has no runtime, HTTP or file-system
//! crate); this crate holds the edges. The Proxmox VE simulator every test runs against is the `pve-sim` crate.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod files;
pub mod ha;
pub mod pve;
pub mod reconcile;
pub mod state;

pub use vztmpld_core::{names, suggest, template, time};
