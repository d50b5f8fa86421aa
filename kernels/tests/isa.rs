//! What the dispatcher detects. Under emulation (tools/cross-aarch64.sh) the
//! expected CPU features are known and passed in `T5EDGE_EXPECT_FEATURES`, so
//! a run on `-cpu max` proves the `sdot` kernel (dotprod) really ran and a
//! run on `-cpu cortex-a53` proves the fallbacks did.

use t5edge_kernels::dispatch;
use t5edge_kernels::Isa;

#[test]
fn detected_features_are_the_expected_ones() {
    let f = dispatch::features();
    eprintln!(
        "detected CPU features: [{}]; best level {}",
        f.names().join(", "),
        dispatch::best()
    );
    if cfg!(target_arch = "aarch64") {
        assert!(f.neon, "NEON is baseline on aarch64");
        assert_eq!(dispatch::best(), Isa::Neon);
    } else {
        assert!(!Isa::Neon.supported(), "NEON detected off aarch64");
    }
    match std::env::var("T5EDGE_EXPECT_FEATURES") {
        Ok(want) => {
            let want: Vec<&str> = want
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            assert_eq!(f.names(), want, "T5EDGE_EXPECT_FEATURES");
        }
        Err(_) => eprintln!("T5EDGE_EXPECT_FEATURES unset: not comparing the feature list"),
    }
}
