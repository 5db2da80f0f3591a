//! The Proxmox VE client: typed requests for exactly the endpoints vztmpld uses.
//!
//! **Only this module talks HTTP to Proxmox**, and it shares no types with the simulator (`crate::sim`).

pub mod client;
pub mod error;
pub mod tls;
pub mod types;

pub use client::{AnswerObserver, Client, ClientOptions, encode_segment, upid_node};
pub use error::PveError;
