//! The kernels' process-wide settings, read from the environment here, at the
//! edge: the binary's `main` and [`T5Model::load`](crate::T5Model::load) call
//! [`configure_from_env`]; `t5edge-kernels` itself reads no variable and takes
//! these through its API (`dispatch::force`, `pool::set_backend`,
//! `pool::configure_spin`, `par::set_min_macs`).
//!
//! | variable | effect |
//! |---|---|
//! | `T5EDGE_ISA` | `scalar`, `avx2`, `avx512`, `avx512vnni`, `amx` or `neon`: the kernels' level (a level the CPU lacks is an error); unset: the best the CPU has |
//! | `T5EDGE_POOL` | `spin` (default) or `rayon`: who runs parallel regions |
//! | `T5EDGE_THREADS` | a whole number >= 1: the spin pool's threads (`--threads` wins); unset: `RAYON_NUM_THREADS`, else the number of cores |
//! | `T5EDGE_SPIN_US`, `T5EDGE_SPIN_HOT_US` | microseconds a spin-pool worker polls for work, and of that with `spin_loop` alone |
//! | `T5EDGE_PAR_MIN_MACS` | multiply-adds from which a product is split across threads |
//! | `T5EDGE_KV_BUDGET_MB` | megabytes of decoder caches a whole-batch decode keeps in flight before it lets rows wait their turn (`generate::waves`); `0`: never; unset: half the L3 |
//! | `T5EDGE_SCREEN` | `1`: plain int8 greedy picks through the LM head's int4 screen; `auto`: each head measures which is faster and keeps it; `0`: never, `--exact` and float heads included; unset: `--exact` and greedy over an f32, f16 or bf16 head (one row at a time, certified against the head's own GEMV logits) screen, so do single int8 greedy rows at the VNNI levels (`avx512vnni`, `amx`), and a batch of int8 greedy rows does where the multi-row screen kernel runs (AVX2, AVX-512 without VNNI; `model::screened`). The ids are the same either way |
//! | `T5EDGE_HOME_SHARES` | `1` or unset: each thread of the spin pool first runs its own fixed range of a decode step's rows, which then stay in its L2 (`pool::with_home_shares`); `0`: every task to whichever thread claims it first. The results are the same either way |
//! | `T5EDGE_BF16_DOT` | `1`: bf16 layers run prefill with the activations rounded to bf16, on AMX-BF16 tiles at the `amx` level (whole tiles: `k` a multiple of 32, outputs of 16), else with `vdpbf16ps` where the CPU has AVX-512 BF16 (faster, a T5-XXL encoder 1.8x the default on the Intel Xeon; outputs move by about 2^-9 relative and differ from CPUs without them); `0` or unset: f32 arithmetic on every CPU (at the `amx` level on the AMX-BF16 tiles, each activation split exactly into three bf16) |
//!
//! An empty variable counts as unset.

use crate::error::{Error, Result};
use crate::model::screened::Mode;
use std::sync::OnceLock;
use std::time::Duration;
use t5edge_kernels::dispatch::{self, Isa};
use t5edge_kernels::par;
use t5edge_kernels::pool::{self, Backend, SpinConfig};

/// What the environment asks of the kernels; `None` leaves the kernels' default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvConfig {
    pub isa: Option<Isa>,
    pub pool: Option<Backend>,
    pub threads: Option<usize>,
    pub spin: Option<Duration>,
    pub spin_hot: Option<Duration>,
    pub par_min_macs: Option<usize>,
    pub screen: Option<Mode>,
    pub kv_budget_mb: Option<usize>,
    pub bf16_dot: Option<bool>,
    pub home_shares: Option<bool>,
}

impl EnvConfig {
    /// Reads the variables through `get` (`std::env::var` for the process's
    /// own). A bad `T5EDGE_ISA`, `T5EDGE_POOL` or `T5EDGE_THREADS` is an error
    /// naming the variable; the tuning knobs (`T5EDGE_SPIN_US`,
    /// `T5EDGE_SPIN_HOT_US`, `T5EDGE_PAR_MIN_MACS`, `T5EDGE_KV_BUDGET_MB`, and `RAYON_NUM_THREADS`,
    /// which is rayon's) fall back to the default when unreadable.
    pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<EnvConfig> {
        Self::read(get).map_err(env_error)
    }

    /// Hands the settings to the kernels. The spin pool's size and polling
    /// are fixed when it starts: settings arriving after its first use (or
    /// after an explicit `pool::set_global_threads`) leave it as it is.
    pub fn apply(&self) -> Result<()> {
        self.hand_over().map_err(env_error)
    }

    fn read(get: impl Fn(&str) -> Option<String>) -> Result<EnvConfig, Bad> {
        let var = |name: &str| get(name).filter(|s| !s.trim().is_empty());
        let number = |name: &str| var(name).and_then(|s| s.trim().parse::<u64>().ok());
        let isa = match var("T5EDGE_ISA") {
            Some(s) => Some(dispatch::requested(&s).map_err(|e| ("T5EDGE_ISA", e.to_string()))?),
            None => None,
        };
        let pool = match var("T5EDGE_POOL") {
            Some(s) => Some(Backend::parse(&s).ok_or_else(|| {
                (
                    "T5EDGE_POOL",
                    format!("{s:?} is not a thread pool; use rayon or spin"),
                )
            })?),
            None => None,
        };
        let threads = match var("T5EDGE_THREADS") {
            Some(s) => Some(parse_threads(&s).ok_or_else(|| {
                (
                    "T5EDGE_THREADS",
                    format!("{s:?} is not a thread count; use a whole number of at least 1"),
                )
            })?),
            None => var("RAYON_NUM_THREADS").and_then(|s| parse_threads(&s)),
        };
        let screen = match var("T5EDGE_SCREEN").as_deref().map(str::trim) {
            Some("1") => Some(Mode::On),
            Some("0") => Some(Mode::Off),
            Some("auto") => Some(Mode::Measure),
            Some(s) => {
                return Err((
                    "T5EDGE_SCREEN",
                    format!("{s:?} is not a choice; use 1 (always), 0 (never) or auto (measure)"),
                ))
            }
            None => None,
        };
        // A switch: 1 or 0, anything else refused with what each means.
        let switch =
            |name: &'static str, on: &str, off: &str| match var(name).as_deref().map(str::trim) {
                Some("1") => Ok(Some(true)),
                Some("0") => Ok(Some(false)),
                Some(s) => Err((
                    name,
                    format!("{s:?} is not a choice; use 1 ({on}) or 0 ({off})"),
                )),
                None => Ok(None),
            };
        let bf16_dot = switch(
            "T5EDGE_BF16_DOT",
            "vdpbf16ps prefill where the CPU has it",
            "f32",
        )?;
        let home_shares = switch(
            "T5EDGE_HOME_SHARES",
            "each thread its own rows of a decode step first",
            "first come, first served",
        )?;
        Ok(EnvConfig {
            isa,
            home_shares,
            bf16_dot,
            screen,
            pool,
            threads,
            spin: number("T5EDGE_SPIN_US").map(Duration::from_micros),
            spin_hot: number("T5EDGE_SPIN_HOT_US").map(Duration::from_micros),
            par_min_macs: number("T5EDGE_PAR_MIN_MACS").and_then(|n| usize::try_from(n).ok()),
            kv_budget_mb: number("T5EDGE_KV_BUDGET_MB").and_then(|n| usize::try_from(n).ok()),
        })
    }

    fn hand_over(&self) -> Result<(), Bad> {
        if let Some(isa) = self.isa {
            dispatch::force(isa).map_err(|e| ("T5EDGE_ISA", e.to_string()))?;
        }
        if let Some(b) = self.pool {
            pool::set_backend(b);
        }
        let defaults = SpinConfig::default();
        pool::configure_spin(SpinConfig {
            threads: self.threads.or(defaults.threads),
            hot: self.spin_hot.unwrap_or(defaults.hot),
            spin: self.spin.unwrap_or(defaults.spin),
        });
        if let Some(n) = self.par_min_macs {
            par::set_min_macs(n);
        }
        if let Some(mode) = self.screen {
            crate::model::screened::set_choice(mode);
        }
        if let Some(on) = self.home_shares {
            pool::set_home_shares(on);
        }
        if let Some(on) = self.bf16_dot {
            crate::model::linear::set_bf16_dot(on);
        }
        if let Some(mb) = self.kv_budget_mb {
            crate::generate::waves::set_budget(mb.saturating_mul(1 << 20));
        }
        Ok(())
    }
}

/// A refused variable: its name and what is wrong with its value.
type Bad = (&'static str, String);

fn env_error((var, msg): Bad) -> Error {
    Error::Env { var, msg }
}

/// A thread count: a whole number of at least 1 (surrounding spaces allowed).
fn parse_threads(s: &str) -> Option<usize> {
    s.trim().parse::<usize>().ok().filter(|&n| n > 0)
}

/// Reads the kernels' settings from the process environment and applies
/// them (the variables are listed above), once per process: later calls
/// return the first call's outcome. The error names the variable and value.
pub fn configure_from_env() -> Result<()> {
    static DONE: OnceLock<Result<(), Bad>> = OnceLock::new();
    DONE.get_or_init(|| EnvConfig::read(|name| std::env::var(name).ok())?.hand_over())
        .clone()
        .map_err(env_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<EnvConfig> {
        EnvConfig::parse(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    fn err(vars: &[(&str, &str)]) -> String {
        parse(vars).unwrap_err().to_string()
    }

    #[test]
    fn unset_and_empty_mean_the_defaults() {
        assert_eq!(parse(&[]).unwrap(), EnvConfig::default());
        let empty = parse(&[
            ("T5EDGE_ISA", ""),
            ("T5EDGE_POOL", " "),
            ("T5EDGE_THREADS", ""),
        ]);
        assert_eq!(empty.unwrap(), EnvConfig::default());
    }

    #[test]
    fn thread_counts_must_be_whole_and_positive() {
        let ok = parse(&[("T5EDGE_THREADS", " 3 ")]).unwrap();
        assert_eq!(ok.threads, Some(3));
        for bad in ["0", "abc", "-2", "1.5"] {
            assert_eq!(
                err(&[("T5EDGE_THREADS", bad)]),
                format!("T5EDGE_THREADS={bad:?} is not a thread count; use a whole number of at least 1")
            );
        }
        // T5EDGE_THREADS wins over RAYON_NUM_THREADS, which stays lenient (rayon's own).
        let both = parse(&[("T5EDGE_THREADS", "2"), ("RAYON_NUM_THREADS", "5")]).unwrap();
        assert_eq!(both.threads, Some(2));
        assert_eq!(
            parse(&[("RAYON_NUM_THREADS", "5")]).unwrap().threads,
            Some(5)
        );
        assert_eq!(parse(&[("RAYON_NUM_THREADS", "x")]).unwrap().threads, None);
    }

    #[test]
    fn the_screen_choice_is_one_zero_or_auto() {
        assert_eq!(
            parse(&[("T5EDGE_SCREEN", "1")]).unwrap().screen,
            Some(Mode::On)
        );
        assert_eq!(
            parse(&[("T5EDGE_SCREEN", " 0 ")]).unwrap().screen,
            Some(Mode::Off)
        );
        assert_eq!(
            parse(&[("T5EDGE_SCREEN", "auto")]).unwrap().screen,
            Some(Mode::Measure)
        );
        assert_eq!(parse(&[("T5EDGE_SCREEN", "")]).unwrap().screen, None);
        assert_eq!(
            err(&[("T5EDGE_SCREEN", "yes")]),
            "T5EDGE_SCREEN=\"yes\" is not a choice; use 1 (always), 0 (never) or auto (measure)"
        );
    }

    #[test]
    fn switches_are_one_or_zero() {
        type Field = fn(&EnvConfig) -> Option<bool>;
        let cases: [(&str, Field, &str); 2] = [
            (
                "T5EDGE_BF16_DOT",
                |c| c.bf16_dot,
                "use 1 (vdpbf16ps prefill where the CPU has it) or 0 (f32)",
            ),
            (
                "T5EDGE_HOME_SHARES",
                |c| c.home_shares,
                "use 1 (each thread its own rows of a decode step first) or 0 (first come, first served)",
            ),
        ];
        for (var, field, help) in cases {
            assert_eq!(field(&parse(&[(var, "1")]).unwrap()), Some(true), "{var}");
            assert_eq!(field(&parse(&[(var, " 0")]).unwrap()), Some(false), "{var}");
            assert_eq!(field(&parse(&[]).unwrap()), None, "{var}");
            assert_eq!(
                err(&[(var, "on")]),
                format!("{var}=\"on\" is not a choice; {help}")
            );
        }
    }

    #[test]
    fn bad_levels_and_pools_name_the_variable() {
        assert_eq!(
            err(&[("T5EDGE_ISA", "bogus")]),
            "T5EDGE_ISA=\"bogus\" is not a level; use one of scalar, avx2, avx512, avx512vnni, amx, neon"
        );
        assert_eq!(
            err(&[("T5EDGE_POOL", "openmp")]),
            "T5EDGE_POOL=\"openmp\" is not a thread pool; use rayon or spin"
        );
        if let Some(missing) = Isa::ALL.into_iter().find(|i| !i.supported()) {
            let e = err(&[("T5EDGE_ISA", missing.name())]);
            assert!(
                e.starts_with(&format!(
                    "T5EDGE_ISA={missing} was requested but this CPU lacks it"
                )),
                "{e}"
            );
        }
        let c = parse(&[("T5EDGE_ISA", " Scalar "), ("T5EDGE_POOL", "rayon")]).unwrap();
        assert_eq!((c.isa, c.pool), (Some(Isa::Scalar), Some(Backend::Rayon)));
    }

    #[test]
    fn tuning_knobs_are_read_leniently() {
        let c = parse(&[
            ("T5EDGE_SPIN_US", "50"),
            ("T5EDGE_SPIN_HOT_US", "x"),
            ("T5EDGE_PAR_MIN_MACS", "4096"),
        ])
        .unwrap();
        assert_eq!(c.spin, Some(Duration::from_micros(50)));
        assert_eq!(c.spin_hot, None);
        assert_eq!(c.par_min_macs, Some(4096));
    }
}
