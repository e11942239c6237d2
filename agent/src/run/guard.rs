//! The run's attachments as a guard: an early return, the end of the run and a panic
//! all let go of the interfaces the same way, so no error path has to remember to.
//! (The kernel would drop the links when the process exits anyway; the guard makes
//! the order explicit: nothing stays attached once `run` has returned.)

use std::{
    ops::{Deref, DerefMut},
    sync::{Arc, PoisonError},
};

use super::{Shared, attach::Attachments};

/// [`Attachments`] that detach from every interface when dropped.
pub struct AttachGuard {
    attachments: Attachments,
    shared: Arc<Shared>,
}

impl AttachGuard {
    /// Holds `attachments`, whose links live in `shared`'s kernel programs.
    pub fn new(attachments: Attachments, shared: Arc<Shared>) -> AttachGuard {
        AttachGuard { attachments, shared }
    }

    /// Detaches from every interface now (the shutdown does, so that no event arrives
    /// after its last read of the ring buffer); dropping the guard then has nothing
    /// left to do.
    pub fn detach_all(&mut self) {
        // A panic elsewhere while the kernel was locked must not leave programs
        // attached: the kernel's state is still good for detaching.
        let mut kernel = self.shared.kernel.lock().unwrap_or_else(PoisonError::into_inner);
        self.attachments.detach_all(&mut kernel);
    }
}

impl Deref for AttachGuard {
    type Target = Attachments;

    fn deref(&self) -> &Attachments {
        &self.attachments
    }
}

impl DerefMut for AttachGuard {
    fn deref_mut(&mut self) -> &mut Attachments {
        &mut self.attachments
    }
}

impl Drop for AttachGuard {
    fn drop(&mut self) {
        self.detach_all();
    }
}
