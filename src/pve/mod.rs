//! The Proxmox VE client: typed requests for exactly the endpoints vztmpld uses.
//!
//! **Only this module talks HTTP to Proxmox**, and it shares no types with the simulator (the `pve-sim` crate).

pub mod client;
mod connection;
pub mod error;
pub mod exit;
pub mod pins;
pub mod tls;
mod transport;
pub mod types;

pub use client::{AnswerObserver, ApiAnswer, Client, ClientOptions, encode_segment, upid_node};
pub use connection::{Connection, Trust};
pub use error::{Cause, PveError};
pub use exit::{TaskExit, TaskFailure, TaskFailureKind};
pub use pins::{PinBook, Pins, SavedPins};
