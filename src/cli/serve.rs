//! `t5edge serve`: the HTTP server (the library's `serve` module) over one
//! model loaded as `generate` loads it.

use super::common::{ModelArgs, WeightArgs};
use crate::generate::{GenerateOptions, Limits};
use crate::serve::ServeConfig;
use crate::{Error, Result, Tokenizer};
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    weights: WeightArgs,
    /// With --dtype int8: the certified int8 head for greedy requests (docs/EXACT.md).
    #[arg(long)]
    exact: bool,
    /// Address to listen on (loopback by default: put a proxy in front to expose it).
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port to listen on; 0 picks a free one (the bound address is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Rows decoded together at most (continuous batching).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    max_batch: u32,
    /// Generation requests waiting for a slot at most; beyond, 429 with Retry-After.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    max_queue: u32,
    /// Refuse prompts longer than this many tokens (400).
    #[arg(long, default_value_t = Limits::default().max_input_tokens)]
    max_input_tokens: usize,
    /// Requests of the encoder endpoints (embeddings, encode, score, rerank)
    /// computing at once; the others wait their turn, within the timeout.
    /// Default: twice the cores.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    compute_slots: Option<u32>,
    /// Seconds before an unanswered request gets 504 and leaves its batch slot.
    #[arg(long, default_value_t = 60.0)]
    request_timeout: f64,
    /// Request bodies above this many bytes get 413.
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Honour the x-t5edge-fault header (panic-prefill), for fault-injection tests.
    #[arg(long, hide = true)]
    inject_faults: bool,
}

pub fn run(a: Args) -> Result<()> {
    if !(a.request_timeout > 0.0 && a.request_timeout.is_finite()) {
        return Err(Error::Request(format!(
            "--request-timeout {} must be a positive number of seconds",
            a.request_timeout
        )));
    }
    let limits = Limits {
        max_input_tokens: a.max_input_tokens,
        ..Limits::default()
    };
    let options = GenerateOptions::default().limits(limits).exact(a.exact);
    let (model, dir) = a.model.load(a.weights.spec(a.exact))?;
    let tok = Tokenizer::from_dir(&dir, model.config.vocab_size).ok();
    if tok.is_none() {
        eprintln!(
            "note: {} has no usable tokenizer.json: requests must give input_ids",
            dir.display()
        );
    }
    let model_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "t5".into());
    let cfg = ServeConfig {
        max_batch: a.max_batch as usize,
        max_queue: a.max_queue as usize,
        request_timeout: Duration::from_secs_f64(a.request_timeout),
        max_body_bytes: a.max_body_bytes,
        compute_slots: a
            .compute_slots
            .map_or_else(crate::serve::default_compute_slots, |n| n as usize),
        options,
        model_name,
        inject_faults: a.inject_faults,
    };
    crate::serve::run(model, tok, cfg, (a.host, a.port).into(), |addr| {
        // One line on stdout a script can read the port from.
        let _ = out!("listening on http://{addr}");
    })
}
