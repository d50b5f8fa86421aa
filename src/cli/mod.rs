//! The command line: one file per subcommand, each a thin layer over the library.
//! Errors print as one line on stderr with a non-zero exit.

mod bench;
mod common;
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
    /// Generate text (greedy decoding) from a prompt.
    Generate(generate::Args),
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
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Generate(a) => generate::run(a),
        Cmd::Forward(a) => forward::run(a),
        Cmd::Inspect(a) => inspect::run(a),
        Cmd::Synth(a) => synth::run(a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::Quantize(a) => quantize::run(a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
