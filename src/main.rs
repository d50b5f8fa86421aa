//! The `t5edge` command line: a thin layer over the library.

fn main() {
    // The kernels' settings from the environment, before anything uses them.
    if let Err(e) = t5edge::runtime::configure_from_env() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    if std::env::var_os("T5EDGE_NO_MALLOPT").is_none() {
        tune_allocator();
    }
    std::process::exit(t5edge::cli::main());
}

/// glibc serves allocations above 128 KiB with a fresh mmap and unmaps them on
/// free, so every prefill's layer buffers were faulted in anew, page by page:
/// measured, 187K page faults over 400 W3 runs and a 30% slower encoder than
/// in a process whose earlier large frees had raised the threshold (glibc
/// raises it dynamically). Fixing the threshold and keeping freed memory for
/// reuse makes the fast case the only case; peak RSS does not change, as the
/// same buffers are reused rather than added to.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator tunables; it is called
        // before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
        }
    }
}
