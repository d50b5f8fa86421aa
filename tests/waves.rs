//! A whole-batch decode that keeps only some rows in flight (its caches over
//! the budget: `generate::waves`) returns what each prompt gets alone, as the
//! whole batch does, for greedy and sampling rows (two per prompt, each its
//! own random stream) that finish at different steps. One test in its own
//! binary: the budget is process-wide.

mod common;

use common::{decode_synth_model, varied_prompts};
use std::collections::HashMap;
use t5edge::generate::{generate, waves};
use t5edge::GenerateOptions;

fn run(model: &t5edge::T5Model, ps: &[&[u32]], o: &GenerateOptions) -> Vec<Vec<Vec<u32>>> {
    generate(model, ps, o)
        .unwrap()
        .into_iter()
        .map(|h| h.sequences)
        .collect()
}

/// Each prompt on its own (a batch of one never splits).
fn alone(model: &t5edge::T5Model, ps: &[&[u32]], o: &GenerateOptions) -> Vec<Vec<Vec<u32>>> {
    ps.iter().flat_map(|p| run(model, &[p], o)).collect()
}

#[test]
fn rows_in_flight_do_not_change_any_row() {
    let (_dir, model) = decode_synth_model();
    let owned = varied_prompts(40);
    let ps: Vec<&[u32]> = owned.iter().map(|p| p.as_slice()).collect();
    let base = GenerateOptions::default().max_new_tokens(12);

    waves::set_budget(0);
    assert_eq!(waves::rows_in_flight(&model, &ps, 12), 40);
    // An end id the rows actually produce, so they finish at different steps
    // and waiting prompts join mid-flight: the most common third token.
    let plain = run(&model, &ps, &base);
    let mut count: HashMap<u32, usize> = HashMap::new();
    for ids in &plain {
        *count.entry(ids[0][2]).or_default() += 1;
    }
    let eos = count.into_iter().max_by_key(|&(id, c)| (c, id)).unwrap().0;
    let greedy = base.clone().eos_token_id(Some(eos));
    let sampled = greedy
        .clone()
        .do_sample(true)
        .seed(7)
        .temperature(1.5)
        .top_k(0)
        .num_return_sequences(2);
    let whole_g = run(&model, &ps, &greedy);
    let whole_s = run(&model, &ps, &sampled);
    assert!(
        whole_s.iter().filter(|s| s[0] != s[1]).count() >= 10,
        "a prompt's two samples should mostly differ"
    );
    assert_eq!(alone(&model, &ps, &greedy), whole_g);
    assert_eq!(alone(&model, &ps, &sampled), whole_s);
    let lens: Vec<usize> = whole_g.iter().map(|s| s[0].len()).collect();
    assert!(
        lens.iter().min() < lens.iter().max(),
        "rows should finish at different steps: {lens:?}"
    );

    // A budget that holds 17 rows' caches: 40 rows in 3 waves of 14.
    let c = &model.config;
    let mean_len = ps.iter().map(|p| p.len() + 12).sum::<usize>().div_ceil(40);
    let row_bytes = mean_len * c.inner_dim() * 2 * c.num_decoder_layers * 4;
    waves::set_budget(row_bytes * 17);
    let cap = waves::rows_in_flight(&model, &ps, 12);
    assert_eq!(cap, 14);
    assert_eq!(run(&model, &ps, &greedy), whole_g, "greedy in waves");
    assert_eq!(run(&model, &ps, &sampled), whole_s, "sampling in waves");
    assert_ne!(whole_s, whole_g, "sampling should differ from greedy");
    waves::set_budget(0);
}
