//! The command line: one file per subcommand, each a thin layer over the library.
//! Errors print as one line on stderr with a non-zero exit.

/// `println!` that returns an error instead of panicking when stdout is gone
/// (`t5edge inspect | head -1` closes the pipe early).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($t)*).map_err(|e| $crate::Error::io("<stdout>", e))
    }};
}

mod batch;
mod bench;
mod common;
mod embed;
mod forward;
mod generate;
mod inspect;
mod quantize;
mod synth;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "t5edge",
    version,
    about = "Fast CPU inference for the T5 encoder-decoder family"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate text (greedy, beam search or sampling) from a prompt or a JSONL file.
    Generate(generate::Args),
    /// Mean-pooled encoder embedding of a prompt.
    Embed(embed::Args),
    /// Teacher-forced decoder logits: the top-k ids and values at each position.
    Forward(forward::Args),
    /// Print a checkpoint's config, parameter count, tensors and the CPU features in use.
    Inspect(inspect::Args),
    /// Quantize an HF checkpoint to an int8 or f16 directory that maps with no repacking.
    Quantize(quantize::Args),
    /// Time the fixed workloads (w1 latency, w2 throughput, w3 encoder).
    Bench(bench::Args),
    /// Write a deterministic random-weight checkpoint of a T5-Efficient shape.
    Synth(synth::Args),
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return 0;
            }
            // clap's message is several lines (usage, a tip); keep the first,
            // which says what is wrong, so every failure is one line.
            let msg = e.to_string();
            let first = msg
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("error: {first} (see t5edge --help)");
            return 2;
        }
    };
    let result = match cli.cmd {
        Cmd::Generate(a) => generate::run(a),
        Cmd::Embed(a) => embed::run(a),
        Cmd::Forward(a) => forward::run(a),
        Cmd::Inspect(a) => inspect::run(a),
        Cmd::Synth(a) => synth::run(a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::Quantize(a) => quantize::run(a),
    };
    match result {
        Ok(()) => 0,
        // The reader went away (`| head`): nothing left to tell anyone. 141 is
        // what a shell reports for a process killed by SIGPIPE.
        Err(crate::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            141
        }
        Err(e) => {
            eprintln!("error: {}", one_line(&e.to_string()));
            1
        }
    }
}

/// Messages from dependencies (tokenizers, serde) may span lines; the CLI
/// promises one.
fn one_line(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}
