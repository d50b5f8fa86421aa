//! The command line: one file per subcommand, each a thin layer over the library.
//! Our own errors print as one line on stderr (exit 1); mistakes in the
//! arguments get clap's whole message (what is wrong, the usage, a suggestion
//! for a typo; exit 2); bare `t5edge` prints the help.

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
mod encode;
mod forward;
mod generate;
mod inspect;
mod quantize;
mod rerank;
mod score;
mod serve;
mod synth;

use clap::{Parser, Subcommand};
use std::io::Write as _;

#[derive(Parser)]
#[command(
    name = "t5edge",
    version,
    about = "Fast CPU inference for the T5 encoder-decoder family",
    arg_required_else_help = true
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
    /// The encoder's last hidden states, one row per input token, for one input or a batch (JSON, .safetensors, .npy).
    Encode(encode::Args),
    /// Teacher-forced decoder logits: the top-k ids and values at each position.
    Forward(forward::Args),
    /// log p(target | source) per target token and summed (teacher forcing), one pair or a JSONL file.
    Score(score::Args),
    /// Documents sorted by a monoT5-style model's p(true) for a query.
    Rerank(rerank::Args),
    /// Print a checkpoint's config, parameter count, tensors and the CPU features in use.
    Inspect(inspect::Args),
    /// Quantize an HF checkpoint to an int8 or f16 directory that maps with no repacking.
    Quantize(quantize::Args),
    /// Time the fixed workloads (w1 latency, w2 throughput, w3 encoder).
    Bench(bench::Args),
    /// Serve the model over HTTP with continuous batching (docs/SERVE.md).
    Serve(serve::Args),
    /// Write a deterministic random-weight checkpoint of a T5-Efficient shape.
    Synth(synth::Args),
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            // Help asked for (or bare `t5edge`) goes to stdout and succeeds;
            // a mistake keeps clap's message whole: it names the argument,
            // suggests the flag meant and shows the usage.
            let asked = matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            );
            if asked {
                let _ = write!(std::io::stdout(), "{}", e.render());
                return 0;
            }
            let _ = e.print();
            return 2;
        }
    };
    let result = match cli.cmd {
        Cmd::Generate(a) => generate::run(a),
        Cmd::Embed(a) => embed::run(a),
        Cmd::Encode(a) => encode::run(a),
        Cmd::Forward(a) => forward::run(a),
        Cmd::Inspect(a) => inspect::run(a),
        Cmd::Score(a) => score::run(a),
        Cmd::Rerank(a) => rerank::run(a),
        Cmd::Serve(a) => serve::run(a),
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
