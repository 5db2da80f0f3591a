//! The start gate: asked right before each task starts (not once per pass), it can hold the start back. HA
//! fencing closes it when this daemon's etcd lease may have ended; without HA it is always open. The reconciler
//! owns the [`Fence`] trait; the daemon wires the election into it, so `ha` knows nothing of reconciling.

use std::fmt;
use std::sync::Arc;

/// Why a start was held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Fenced {
    /// The lease was held but not renewed in time: another daemon may lead by now.
    #[error("this daemon's etcd lease was not renewed in time (fenced); the leader starts it")]
    LeaseExpired,
    /// This daemon does not hold the lease.
    #[error("this daemon does not hold the etcd lease (fenced); the leader starts it")]
    NotLeader,
}

/// Something that may forbid starting a task right now.
pub trait Fence: Send + Sync {
    /// `Ok` when a task may start now.
    fn check(&self) -> Result<(), Fenced>;
}

impl<F: Fn() -> Result<(), Fenced> + Send + Sync> Fence for F {
    fn check(&self) -> Result<(), Fenced> {
        self()
    }
}

/// The gate every start asks: open, or a [`Fence`].
#[derive(Clone, Default)]
pub struct StartGate(Option<Arc<dyn Fence>>);

impl StartGate {
    /// A gate that asks `fence`.
    pub fn new(fence: impl Fence + 'static) -> Self {
        Self(Some(Arc::new(fence)))
    }

    /// Whether a task may start now.
    pub fn check(&self) -> Result<(), Fenced> {
        self.0.as_ref().map_or(Ok(()), |fence| fence.check())
    }
}

impl fmt::Debug for StartGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "StartGate(fenced)" } else { "StartGate(open)" })
    }
}
