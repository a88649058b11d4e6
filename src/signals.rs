//! Waiting for SIGINT or SIGTERM, for `serve_forever` and the CLI. SIGHUP meanwhile
//! re-reads the CURVE allow-lists (they are also re-read whenever their file changes).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;

/// How often the waiting thread looks at the flag the signal handler sets.
const POLL: Duration = Duration::from_millis(50);

/// Blocks until the process gets SIGINT or SIGTERM, or `stopped` returns true. A SIGHUP
/// meanwhile makes the allow-lists be read again at the next handshake (instead of
/// ending the process, SIGHUP's default).
///
/// # Errors
/// [`Error::Config`] when the handlers cannot be installed.
pub fn wait_for_shutdown_signal(mut stopped: impl FnMut() -> bool) -> Result<(), Error> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while the first is being handled ends the process at once.
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&flag))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&flag)))
            .map_err(|e| Error::Config(format!("cannot install a signal handler: {e}")))?;
    }
    let hangup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hangup))
        .map_err(|e| Error::Config(format!("cannot install a signal handler: {e}")))?;
    while !flag.load(Ordering::Relaxed) && !stopped() {
        if hangup.swap(false, Ordering::Relaxed) {
            tracing::info!("SIGHUP: re-reading the allow-lists");
            crate::auth::request_reload();
        }
        std::thread::sleep(POLL);
    }
    if flag.load(Ordering::Relaxed) {
        tracing::info!("shutdown signal received");
    }
    Ok(())
}
