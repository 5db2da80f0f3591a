//! vztmpld's pure core: everything that decides, nothing that does I/O.
//!
//! - [`template`], [`names`]: Proxmox's template file names and specs, node, storage and token formats.
//! - [`config`]: the validated configuration model (loading it is the `vztmpld` crate's).
//! - [`observation`]: what a pass saw of one cluster, plain data.
//! - [`plan`]: desired × observed → a plan, a pure function.
//! - [`scheduler`]: when the next pass runs and why; backoff per node; debounce of config hints.
//! - [`backoff`]: the one retry policy (exponential, capped, seeded jitter) every retry loop uses.
//! - [`suggest`], [`time`]: "did you mean", and wall-clock instants as RFC 3339 on the wire.
//!
//! Its `Cargo.toml` lists no runtime, HTTP or file-system crate: code here cannot wait on anything, so a plan is
//! a function of its inputs by construction, not by convention.

pub mod backoff;
pub mod config;
pub mod names;
pub mod observation;
pub mod plan;
pub mod scheduler;
pub mod suggest;
pub mod template;
pub mod time;
