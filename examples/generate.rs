//! Generate with greedy search, beam search and sampling, and stream tokens.
//!
//! `cargo run --release --example generate -- [MODEL_DIR_OR_HUB_ID] [TEXT]`
//! Without a model, a tiny random-weight T5 is synthesized in a temp dir (its
//! output is gibberish by construction).

use std::ops::ControlFlow;
use t5edge::{generate, generate_stream, GenerateOptions, T5Model, Tokenizer};

fn tiny_model(dir: &std::path::Path) -> t5edge::Result<()> {
    let cfg = t5edge::synth::preset("t5-efficient-tiny-nl2").map_err(t5edge::Error::Other)?;
    let cfg = t5edge::synth::with_overrides(
        &cfg,
        &[
            "d_model=64".into(),
            "d_ff=128".into(),
            "num_heads=2".into(),
            "d_kv=16".into(),
            "vocab_size=1000".into(),
        ],
    )
    .map_err(t5edge::Error::Other)?;
    t5edge::synth::write_checkpoint(
        dir,
        &cfg,
        &t5edge::synth::SynthOptions {
            seed: 1,
            norm_jitter: 0.2,
            // A random tied model otherwise repeats <pad>, which shows no text.
            zero_pad_row: true,
            ..Default::default()
        },
        true,
    )
}

fn main() -> t5edge::Result<()> {
    let mut args = std::env::args().skip(1);
    run(args.next(), args.next())
}

/// Generates with the model `model` (a directory or hub id, or a synthesized
/// one) from `text`.
fn run(model: Option<String>, text: Option<String>) -> t5edge::Result<()> {
    let tmp = tempfile::tempdir().map_err(|e| t5edge::Error::Other(e.to_string()))?;
    let dir = match model {
        Some(m) => t5edge::hub::locate(m.as_ref())?,
        None => {
            eprintln!(
                "no model given: a tiny random-weight T5, so the text below is gibberish.\n\
                 For real text: huggingface-cli download google/flan-t5-small --local-dir flan-t5-small\n\
                 then: cargo run --release --example generate -- flan-t5-small \"translate English to German: hello\""
            );
            tiny_model(tmp.path())?;
            tmp.path().to_path_buf()
        }
    };
    let text = text.unwrap_or_else(|| "translate English to German: hello world".into());
    let model = T5Model::load(&dir)?;
    let tok = Tokenizer::from_dir(&dir, model.config.vocab_size)?;
    let ids = tok.encode(&text)?;

    let greedy = GenerateOptions::default().max_new_tokens(16);
    let out = generate(&model, &[&ids], &greedy)?;
    println!("greedy:  {}", tok.decode(out[0].best())?);

    let beams = greedy
        .clone()
        .num_beams(4)
        .num_return_sequences(2)
        .no_repeat_ngram_size(3);
    for (seq, score) in generate(&model, &[&ids], &beams)?[0].sequences.iter().zip(
        generate(&model, &[&ids], &beams)?[0]
            .scores
            .clone()
            .unwrap_or_default(),
    ) {
        println!("beam:    {score:8.4}  {}", tok.decode(seq)?);
    }

    let sampling = greedy
        .clone()
        .do_sample(true)
        .temperature(0.8)
        .top_p(0.9)
        .seed(42);
    println!(
        "sampled: {}",
        tok.decode(generate(&model, &[&ids], &sampling)?[0].best())?
    );

    print!("stream (token ids as they come): ");
    let ids_out = generate_stream(&model, &ids, &greedy, |id| {
        print!("{id} ");
        ControlFlow::Continue(())
    })?;
    println!();
    assert_eq!(ids_out, out[0].best());
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn example_runs() {
        super::run(None, None).unwrap();
    }
}
