//! Personal data in logs: user names and IP addresses are redacted unless the
//! operator opts in (`magpie-server --log-pii`), as str0m does with its `pii` module.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

static SHOW: AtomicBool = AtomicBool::new(false);

/// Whether logs show user names and addresses (process-wide; off by default).
pub fn set_log_pii(show: bool) {
    SHOW.store(show, Ordering::Relaxed);
}

/// Displays its value only when [`set_log_pii`] allowed it.
pub struct Pii<T>(pub T);

impl<T: fmt::Display> fmt::Display for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if SHOW.load(Ordering::Relaxed) {
            self.0.fmt(f)
        } else {
            f.write_str("<redacted>")
        }
    }
}

impl<T: fmt::Display> fmt::Debug for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
