//! Ctrl-C and SIGTERM during a lab run: the handler only sets a flag, which every
//! step checks, so the run unwinds through its guards (agent, daemons, namespaces,
//! temp dir) instead of dying with the lab half built.

use std::{
    io,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the SIGINT/SIGTERM handler (for `pathwatch lab`; library users such as
/// the tests keep their own handling and simply never see the flag set).
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: all zeroes is a valid sigaction (no flags, an empty mask, SIG_DFL);
        // sigemptyset and sigaction get pointers to that live local and a null old
        // action, which sigaction allows. The handler is an `extern "C" fn(c_int)`, as
        // sa_sigaction without SA_SIGINFO expects, and only stores to an atomic, which
        // is async-signal-safe. SA_RESTART keeps blocking calls going.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Whether Ctrl-C or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// An `Interrupted` error once the flag is set.
pub fn check() -> io::Result<()> {
    if interrupted() {
        Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted (Ctrl-C / SIGTERM)"))
    } else {
        Ok(())
    }
}

/// Sleeps `d`, waking early (with an error) when interrupted.
pub fn sleep(d: Duration) -> io::Result<()> {
    let end = Instant::now() + d;
    loop {
        check()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Sleeps until `at` (a schedule keeps its period however long each step took).
pub fn sleep_until(at: Instant) -> io::Result<()> {
    sleep(at.saturating_duration_since(Instant::now()))
}
