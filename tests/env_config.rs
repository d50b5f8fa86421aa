//! The environment variables the binary reads at its edge
//! (`t5edge::runtime::configure_from_env`): a bad value is one `error:` line
//! naming the variable, before any work; a good one changes no output.

mod support;

use support::*;

fn generate(env: &[(&str, &str)]) -> std::process::Output {
    let model = base_checkpoint().to_str().unwrap();
    run_cli(
        &[
            "generate",
            "--model",
            model,
            "--input-ids",
            "5,6,1",
            "--max-new-tokens",
            "3",
        ],
        None,
        env,
    )
}

#[test]
fn bad_thread_counts_are_refused_by_name() {
    for bad in ["0", "abc", "-1"] {
        let out = generate(&[("T5EDGE_THREADS", bad)]);
        let line = assert_one_line_error(
            &format!("T5EDGE_THREADS={bad}"),
            &out,
            &["T5EDGE_THREADS", bad, "thread count"],
        );
        assert_eq!(
            line,
            format!(
                "error: T5EDGE_THREADS={bad:?} is not a thread count; use a whole number of at least 1"
            )
        );
    }
}

#[test]
fn good_settings_change_no_output() {
    let plain = generate(&[]);
    assert!(plain.status.success(), "{plain:?}");
    for env in [
        &[("T5EDGE_THREADS", "1")][..],
        &[("T5EDGE_THREADS", " 2 ")],
        &[("T5EDGE_POOL", "rayon"), ("T5EDGE_PAR_MIN_MACS", "0")],
        &[("T5EDGE_ISA", "scalar")],
    ] {
        let out = generate(env);
        assert!(out.status.success(), "{env:?}: {out:?}");
        if env[0].0 != "T5EDGE_ISA" {
            assert_eq!(out.stdout, plain.stdout, "{env:?}");
        }
    }
}
