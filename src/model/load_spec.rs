//! How a checkpoint is loaded: the weight format to run in and the rules that
//! go with it, in one place for every front end (CLI, Python, HTTP).

use super::{FormatPolicy, T5Model, WeightFormat};
use crate::weights::LoadOptions;
use crate::{Error, Result};
use std::path::Path;

/// What to load a checkpoint as. `LoadSpec::default()` runs the checkpoint as
/// it is stored: a Hugging Face checkpoint in its dtype (f32, or f16 / bf16
/// weights used straight from the mapped file, widened in registers), a
/// directory written by `t5edge quantize` in its own formats.
///
/// ```no_run
/// use t5edge::model::{LoadSpec, WeightFormat};
/// let spec = LoadSpec { dtype: Some(WeightFormat::Int8), ..Default::default() };
/// let model = t5edge::T5Model::load_spec("t5-small".as_ref(), &spec)?;
/// # Ok::<(), t5edge::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadSpec {
    /// The weight format to run in; `None` keeps the stored one (f32, f16 or
    /// bf16 for a Hugging Face checkpoint). A quantized directory carries its
    /// own format: asking for another is an error.
    pub dtype: Option<WeightFormat>,
    /// With `dtype` int8: the body stays in full precision and the LM head
    /// becomes the certified int8 head, whose every greedy pick is proven
    /// equal to the full-precision argmax (docs/EXACT.md).
    pub exact: bool,
    /// With `dtype` int8: the FFN output projections with int8 activations
    /// too, instead of 16-bit ones (docs/QUANTIZATION.md).
    pub int8_ffn_out: bool,
    /// How the files are opened (mapped or read).
    pub files: LoadOptions,
}

/// How a front end spells an option of [`LoadSpec`] in its errors: the
/// field name as is (Rust, Python), or `--int8-ffn-out` (the CLI).
pub type OptionNames<'a> = &'a dyn Fn(&str) -> String;

/// The field names themselves.
pub fn field_names(name: &str) -> String {
    name.to_string()
}

impl LoadSpec {
    /// Refuses combinations that cannot hold whatever the checkpoint is.
    pub fn validate(&self) -> Result<()> {
        self.validate_named(&field_names)
    }

    /// [`LoadSpec::validate`], naming the options as `names` spells them.
    pub fn validate_named(&self, names: OptionNames<'_>) -> Result<()> {
        let int8 = self.dtype == Some(WeightFormat::Int8);
        let (exact, dtype) = (names("exact"), names("dtype"));
        if self.exact && !int8 {
            return Err(Error::Request(format!("{exact} goes with {dtype} int8")));
        }
        // Without a dtype, int8_ffn_out is judged once the checkpoint is
        // open: a quantized directory has its own word for it.
        let other_dtype = self.dtype.is_some() && !int8;
        if self.int8_ffn_out && (other_dtype || self.exact) {
            return Err(ffn_out_error(names));
        }
        Ok(())
    }
}

fn ffn_out_error(names: OptionNames<'_>) -> Error {
    Error::Request(format!(
        "{} goes with {} int8 (without {})",
        names("int8_ffn_out"),
        names("dtype"),
        names("exact")
    ))
}

impl T5Model {
    /// Loads the checkpoint in `dir` as `spec` says: opens it, then converts
    /// it to the weight format asked for, or checks that a quantized
    /// directory already is in it.
    pub fn load_spec(dir: &Path, spec: &LoadSpec) -> Result<T5Model> {
        Self::load_spec_named(dir, spec, &field_names)
    }

    /// [`T5Model::load_spec`], naming the options in errors as `names` spells them.
    pub fn load_spec_named(dir: &Path, spec: &LoadSpec, names: OptionNames<'_>) -> Result<T5Model> {
        let mut model = Self::open_as(dir, spec, names)?;
        model.gather_weights();
        Ok(model)
    }

    /// The model in the formats `spec` asks for, not yet gathered.
    fn open_as(dir: &Path, spec: &LoadSpec, names: OptionNames<'_>) -> Result<T5Model> {
        spec.validate_named(names)?;
        let (exact, ffn, dtype) = (names("exact"), names("int8_ffn_out"), names("dtype"));
        let (mut model, quantized) = T5Model::open(dir, spec.files)?;
        if quantized {
            // The head's format names the directory's (the embedding's, for
            // an encoder-only one: quantize gives it the head's format).
            let stored = match &model.lm_head {
                Some(h) => h.linear.format(),
                None => model.embed.format(),
            };
            // A quantized directory: its formats were chosen at quantize time.
            if spec.exact {
                return Err(Error::Request(format!(
                    "{}: {exact} needs the full-precision checkpoint, not a quantized one",
                    dir.display()
                )));
            }
            if spec.int8_ffn_out {
                return Err(Error::Request(format!(
                    "{}: a quantized directory keeps the formats it was written with; pass {ffn} to `t5edge quantize` instead",
                    dir.display()
                )));
            }
            if let Some(asked) = spec.dtype.filter(|&d| d != stored) {
                return Err(Error::Request(format!(
                    "{} holds {} weights (a quantized directory), not {}: drop {dtype} or ask for {dtype} {}",
                    dir.display(),
                    stored.name(),
                    asked.name(),
                    stored.name()
                )));
            }
            return Ok(model);
        }
        // A Hugging Face checkpoint: its linear layers are in the dtype the
        // file stores (views of the map for f16 and bf16).
        match spec.dtype {
            None | Some(WeightFormat::F32) if spec.int8_ffn_out => {
                return Err(ffn_out_error(names))
            }
            None => {}
            Some(WeightFormat::Int8) if spec.exact => {
                // "Full precision" is the checkpoint's values in f32 (exact
                // for f16/bf16 weights): the certified head re-scores in f32.
                let policy = FormatPolicy::all(WeightFormat::F32);
                model.check_convert_fits(dir, policy)?;
                model.convert(policy)?;
                model.enable_certified_head(0)?
            }
            Some(fmt) => {
                let mut policy = FormatPolicy::for_dtype(fmt);
                if spec.int8_ffn_out {
                    policy.ffn_out = WeightFormat::Int8;
                }
                model.check_convert_fits(dir, policy)?;
                model.convert(policy)?;
            }
        }
        Ok(model)
    }
}
