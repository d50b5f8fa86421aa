//! The command line: one file per subcommand, each a thin layer over the library.
//! Errors print as one line on stderr with a non-zero exit.

mod batch;
mod common;
mod embed;
mod forward;
mod generate;
mod inspect;
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
    /// Write a deterministic random-weight checkpoint of a T5-Efficient shape.
    Synth(synth::Args),
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Generate(a) => generate::run(a),
        Cmd::Embed(a) => embed::run(a),
        Cmd::Forward(a) => forward::run(a),
        Cmd::Inspect(a) => inspect::run(a),
        Cmd::Synth(a) => synth::run(a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
