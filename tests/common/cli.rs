//! How the tests start the built `t5edge` binary.

use std::process::Command;

/// A command for the built `t5edge`, prefixed by `T5EDGE_TEST_RUNNER` when set
/// (whitespace-separated, e.g. `qemu-aarch64 -cpu max`): the cross-built
/// aarch64 binary then runs under emulation without a binfmt_misc entry
/// (tools/cross-aarch64.sh sets it).
pub fn t5edge_command() -> Command {
    let exe = env!("CARGO_BIN_EXE_t5edge");
    let runner = std::env::var("T5EDGE_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(prog) => {
            let mut c = Command::new(prog);
            c.args(words).arg(exe);
            c
        }
        None => Command::new(exe),
    }
}
