//! How much memory the machine can still give, so that a model too large for
//! it gets an error saying what it needs instead of the kernel's OOM kill.

use crate::{Error, Result};
use std::path::Path;

/// The kernel's estimate of memory available without swapping
/// (`MemAvailable` in /proc/meminfo: free memory plus reclaimable page
/// cache); `None` where that is not knowable (not Linux, or no such line).
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `n` bytes in GB with one decimal, as the errors print them.
pub fn gb(n: u64) -> String {
    format!("{:.1} GB", n as f64 / 1e9)
}

/// Refuses to allocate `needed` bytes for `what` (of the checkpoint at
/// `path`) when the machine has less available; passes when that cannot be
/// known. `hint` says what to do instead.
pub fn check_fits(path: &Path, what: &str, needed: u64, hint: &str) -> Result<()> {
    match available_bytes() {
        Some(avail) if needed > avail => Err(Error::Other(format!(
            "{}: {what} needs {} of memory but only {} is available; {hint}",
            path.display(),
            gb(needed),
            gb(avail)
        ))),
        _ => Ok(()),
    }
}
