//! Wires the HA election into the reconciler's start gate: `ha` knows nothing of reconciling and
//! `reconcile` nothing of etcd; this is where the two meet.

use crate::ha::{Ha, LeaseLost};
use crate::reconcile::{Fenced, StartGate};

/// A start gate open only while `ha`'s lease is surely alive.
pub fn gate(ha: &Ha) -> StartGate {
    let lease = ha.lease();
    StartGate::new(move || {
        lease.check().map_err(|lost| match lost {
            LeaseLost::Expired => Fenced::LeaseExpired,
            LeaseLost::NotHeld => Fenced::NotLeader,
        })
    })
}
