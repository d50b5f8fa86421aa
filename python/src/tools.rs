//! Module-level functions: quantize, synth, the ISA level, the panic hook.

use crate::errors::{guarded, Failure, Kind};
use pyo3::prelude::*;
use std::path::PathBuf;
use t5edge::model::WeightFormat;
use t5edge::quantize::QuantizeOptions;

/// Quantizes the checkpoint `model` into the directory `out` (the library's
/// `quantize`, as `t5edge quantize`): dtype "int8" or "f16"; `group_size`
/// (int8: 0 for one scale per row, else a multiple of 4); `int8_ffn_out`
/// gives the FFN output projections int8 activations too, instead of
/// 16-bit ones. The directory is written
/// under a temporary name and renamed into place when complete; an existing
/// `out` is refused (`t5edge.ExistsError`) unless `force=True`. Returns a dict
/// with `out`, `source_bytes`, `out_bytes` and `tensors`.
#[pyfunction]
#[pyo3(signature = (model, out, *, dtype="int8", group_size=0, int8_ffn_out=false, force=false))]
pub fn quantize(
    py: Python<'_>,
    model: PathBuf,
    out: PathBuf,
    dtype: &str,
    group_size: usize,
    int8_ffn_out: bool,
    force: bool,
) -> PyResult<Py<PyAny>> {
    let w = py.detach(|| {
        guarded(|| {
            let dtype = match WeightFormat::parse(dtype) {
                Some(f) if f != WeightFormat::F32 => f,
                _ => {
                    return Err(Failure::request(format!(
                        "dtype {dtype:?}: quantize writes \"int8\" or \"f16\""
                    )))
                }
            };
            let mut opts = QuantizeOptions::new(dtype, group_size);
            if int8_ffn_out {
                if dtype != WeightFormat::Int8 {
                    return Err(Failure::request("int8_ffn_out goes with dtype \"int8\""));
                }
                opts.policy.ffn_out = WeightFormat::Int8;
            }
            // The library's own check says --force; say it in Python's words.
            if out.exists() && !force {
                return Err(Failure::new(
                    Kind::Exists,
                    format!("{} exists; pass force=True to replace it", out.display()),
                ));
            }
            let src = t5edge::hub::locate(&model).map_err(|e| {
                let kind = if model.exists() {
                    Kind::File
                } else {
                    Kind::NotFound
                };
                Failure::new(kind, e.to_string())
            })?;
            Ok(t5edge::quantize::quantize(
                &src,
                &out,
                opts,
                force,
                |_, _, _| {},
            )?)
        })
    })?;
    crate::convert::from_json(
        py,
        &serde_json::json!({
            "out": w.out,
            "source_bytes": w.source_bytes,
            "out_bytes": w.out_bytes,
            "tensors": w.tensors,
        }),
    )
}

/// Writes a deterministic random-weight Hugging Face checkpoint (as
/// `t5edge synth`): `preset` a T5-Efficient shape such as
/// "t5-efficient-tiny-nl2" (or "t5-v1_1-gated-tiny"), `set` a list of
/// "key=value" config overrides, `norm_jitter` the spread of the layer-norm
/// weights around 1, `zero_pad_row` zeroes the `<pad>` embedding row (as the
/// default model has it, so greedy text shows words rather than padding),
/// `encoder_only` leaves out the decoder and head (as HF's `T5EncoderModel`
/// saves), `dtype` stores the weights in "f32", "f16" or "bf16". Existing files are refused unless `force=True`.
/// Returns `out`.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(
    signature = (out, *, preset=t5edge::synth::DEFAULT_PRESET, seed=0, norm_jitter=0.0, set=Vec::new(), zero_pad_row=false, encoder_only=false, dtype=None, force=false),
    text_signature = "(out, *, preset=\"t5-efficient-tiny-nl2\", seed=0, norm_jitter=0.0, set=(), zero_pad_row=False, encoder_only=False, dtype=None, force=False)"
)]
pub fn synth(
    py: Python<'_>,
    out: PathBuf,
    preset: &str,
    seed: u64,
    norm_jitter: f32,
    set: Vec<String>,
    zero_pad_row: bool,
    encoder_only: bool,
    dtype: Option<String>,
    force: bool,
) -> PyResult<PathBuf> {
    py.detach(|| {
        guarded(|| {
            let cfg = t5edge::synth::preset(preset).map_err(Failure::request)?;
            let cfg = t5edge::synth::with_overrides(&cfg, &set).map_err(Failure::request)?;
            let dtype = match dtype.as_deref() {
                None => None,
                Some(d) => Some(t5edge::model::WeightFormat::parse(d).ok_or_else(|| {
                    Failure::request(format!("dtype {d:?} is not f32, f16 or bf16"))
                })?),
            };
            let opts = t5edge::synth::SynthOptions {
                seed,
                norm_jitter,
                zero_pad_row,
                encoder_only,
                dtype,
            };
            t5edge::synth::write_checkpoint(&out, &cfg, &opts, force)?;
            Ok(out.clone())
        })
    })
    .map_err(Into::into)
}

/// The kernels' instruction-set level in use ("avx2", "avx512", ...;
/// `T5EDGE_ISA` forces one).
#[pyfunction]
pub fn isa() -> PyResult<&'static str> {
    t5edge::runtime::configure_from_env().map_err(Failure::from)?;
    Ok(t5edge_kernels::dispatch::active().name())
}

/// Test hook: panics inside the same guard every call runs in, so the test
/// suite can check that a Rust panic becomes `t5edge.InternalError` and the
/// interpreter lives.
#[pyfunction]
#[pyo3(name = "_panic_for_test")]
pub fn panic_for_test(py: Python<'_>) -> PyResult<()> {
    py.detach(|| guarded(|| -> Result<(), Failure> { panic!("the test hook's panic") }))
        .map_err(Into::into)
}
