//! Arranging a checkpoint's tensors (HF names) into the model, checking every
//! shape against the config.

use super::attention::AttentionWeights;
use super::decoder::{Decoder, DecoderBlock};
use super::encoder::{Encoder, EncoderBlock};
use super::ffn::FeedForward;
use super::linear::Linear;
use super::linear::LinearWeight;
use super::{LmHead, Stack, T5Model};
use crate::config::T5Config;
use crate::error::{Error, Result};
use crate::weights::quantized::{self, QuantizedInfo};
use crate::weights::{Bf16Data, DType, F16Data, LoadOptions, WeightStore};
use std::path::Path;

struct Loader<'a> {
    store: &'a WeightStore,
    cfg: &'a T5Config,
    quantized: Option<QuantizedInfo>,
}

impl Loader<'_> {
    /// A linear layer `name` (HF name without `.weight`): packed int8 or f16
    /// straight from a quantized file's map; else as stored: f32, f16 or bf16,
    /// each a view of the mapped bytes (a copy only where they are misaligned).
    fn linear(&self, name: &str, n: usize, k: usize) -> Result<Linear> {
        if let Some(q) = &self.quantized {
            if q.ffn_out_a16 && quantized::is_ffn_out(name) {
                if let Some(w) = quantized::w8a16(self.store, name, n, k, q.group_size)? {
                    let weight = LinearWeight::Int8A16(w);
                    return Ok(Linear { n, k, weight });
                }
            } else if let Some(w) = quantized::int8(self.store, name, n, k, q.group_size)? {
                let weight = LinearWeight::Int8(w);
                return Ok(Linear { n, k, weight });
            }
        }
        let wname = format!("{name}.weight");
        let (f, info) = self.store.info(&wname, &[n, k])?;
        let weight = match info.dtype {
            DType::F16 => LinearWeight::F16(F16Data::mapped_or_copied(
                &f.backing,
                info.start,
                f.tensor_bytes(info),
            )),
            DType::BF16 => LinearWeight::Bf16(Bf16Data::mapped_or_copied(
                &f.backing,
                info.start,
                f.tensor_bytes(info),
            )),
            _ => LinearWeight::F32(self.store.f32(&wname, &[n, k])?),
        };
        Ok(Linear { n, k, weight })
    }

    fn attention(&self, prefix: &str) -> Result<AttentionWeights> {
        let (d, inner) = (self.cfg.d_model, self.cfg.inner_dim());
        Ok(AttentionWeights {
            q: self.linear(&format!("{prefix}.q"), inner, d)?,
            k: self.linear(&format!("{prefix}.k"), inner, d)?,
            v: self.linear(&format!("{prefix}.v"), inner, d)?,
            o: self.linear(&format!("{prefix}.o"), d, inner)?,
            heads: self.cfg.num_heads,
            d_kv: self.cfg.d_kv,
        })
    }

    fn ffn(&self, prefix: &str) -> Result<FeedForward> {
        let (d, ff) = (self.cfg.d_model, self.cfg.d_ff);
        let p = format!("{prefix}.DenseReluDense");
        let (wi, wi_up) = if self.cfg.gated {
            (
                self.linear(&format!("{p}.wi_0"), ff, d)?,
                Some(self.linear(&format!("{p}.wi_1"), ff, d)?),
            )
        } else {
            (self.linear(&format!("{p}.wi"), ff, d)?, None)
        };
        Ok(FeedForward {
            wi,
            wi_up,
            wo: self.linear(&format!("{p}.wo"), d, ff)?,
            act: self.cfg.activation,
        })
    }

    fn norm(&self, name: &str) -> Result<crate::weights::F32Data> {
        self.store
            .f32(&format!("{name}.weight"), &[self.cfg.d_model])
    }

    fn stack<B>(&self, which: &str, blocks: Vec<B>) -> Result<Stack<B>> {
        let c = self.cfg;
        // T5 and mT5 keep one table, in layer 0; umT5 one in every layer.
        let tables = if c.model_type.per_layer_bias() {
            blocks.len()
        } else {
            1
        };
        let rel_bias = (0..tables)
            .map(|i| {
                self.store.f32(
                    &format!(
                        "{which}.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight"
                    ),
                    &[c.relative_attention_num_buckets, c.num_heads],
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Stack {
            blocks,
            final_norm: self.norm(&format!("{which}.final_layer_norm"))?,
            rel_bias,
            heads: c.num_heads,
            num_buckets: c.relative_attention_num_buckets,
            max_distance: c.relative_attention_max_distance,
            d_model: c.d_model,
            eps: c.layer_norm_epsilon,
        })
    }
}

impl T5Model {
    /// Loads a Hugging Face T5 checkpoint directory (`config.json` and
    /// `model.safetensors` or a sharded index).
    pub fn load(dir: &Path) -> Result<T5Model> {
        Self::load_with(dir, LoadOptions::default())
    }

    /// [`T5Model::load`] with options; the small matrices a pass streams
    /// are gathered onto huge pages (model/gather.rs).
    pub fn load_with(dir: &Path, opts: LoadOptions) -> Result<T5Model> {
        let mut m = Self::open(dir, opts)?.0;
        m.gather_weights();
        Ok(m)
    }

    /// [`T5Model::load_with`], and whether the directory is a t5edge
    /// quantized checkpoint (whose formats are fixed).
    pub(crate) fn open(dir: &Path, opts: LoadOptions) -> Result<(T5Model, bool)> {
        crate::runtime::configure_from_env()?;
        let config = T5Config::from_file(&dir.join("config.json"))?;
        let store = WeightStore::open_dir(dir, opts)?;
        let quantized = match store.files.first() {
            Some(f) => quantized::info(f)?.is_some(),
            None => false,
        };
        Ok((Self::from_store(config, &store)?, quantized))
    }

    /// Builds the model from an opened store, checking every tensor's shape.
    pub fn from_store(config: T5Config, store: &WeightStore) -> Result<T5Model> {
        // A config built in code skipped `from_json`'s checks; the layers index
        // with these numbers, so they are checked here too.
        config.validate().map_err(|msg| Error::Config {
            path: store.path(),
            msg,
        })?;
        let quantized = match store.files.first() {
            Some(f) => quantized::info(f)?,
            None => None,
        };
        let l = Loader {
            store,
            cfg: &config,
            quantized,
        };
        let (d, v) = (config.d_model, config.vocab_size);
        // HF names the table `shared`; some exports only keep the per-stack copies.
        let embed_name = [
            "shared.weight",
            "encoder.embed_tokens.weight",
            "decoder.embed_tokens.weight",
        ]
        .into_iter()
        .find(|n| store.contains(n) || store.contains(&format!("{n}.i8")))
        .ok_or_else(|| Error::MissingTensor {
            path: store.path(),
            name: "shared.weight".into(),
        })?;
        let embed = l.linear(embed_name.trim_end_matches(".weight"), v, d)?;

        let mut enc_blocks = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let p = format!("encoder.block.{i}.layer");
            enc_blocks.push(EncoderBlock {
                attn_norm: l.norm(&format!("{p}.0.layer_norm"))?,
                attn: l.attention(&format!("{p}.0.SelfAttention"))?,
                ffn_norm: l.norm(&format!("{p}.1.layer_norm"))?,
                ffn: l.ffn(&format!("{p}.1"))?,
            });
        }
        let encoder: Encoder = l.stack("encoder", enc_blocks)?;
        // HF's T5EncoderModel saves no decoder tensor (and no head): such a
        // checkpoint encodes, and the decoder paths refuse it.
        if !store.names().any(|n| n.starts_with("decoder.")) {
            return Ok(T5Model {
                config,
                embed,
                encoder,
                decoder: None,
                lm_head: None,
                draft: None,
                source: store.path(),
            });
        }
        let mut dec_blocks = Vec::with_capacity(config.num_decoder_layers);
        for i in 0..config.num_decoder_layers {
            let p = format!("decoder.block.{i}.layer");
            dec_blocks.push(DecoderBlock {
                self_norm: l.norm(&format!("{p}.0.layer_norm"))?,
                self_attn: l.attention(&format!("{p}.0.SelfAttention"))?,
                cross_norm: l.norm(&format!("{p}.1.layer_norm"))?,
                cross_attn: l.attention(&format!("{p}.1.EncDecAttention"))?,
                ffn_norm: l.norm(&format!("{p}.2.layer_norm"))?,
                ffn: l.ffn(&format!("{p}.2"))?,
            });
        }
        let decoder: Decoder = l.stack("decoder", dec_blocks)?;
        let lm_head = if config.tie_word_embeddings {
            LmHead {
                linear: embed.clone(),
                scale: (d as f64).powf(-0.5) as f32,
                certified: None,
                screen: Default::default(),
            }
        } else {
            LmHead {
                linear: l.linear("lm_head", v, d)?,
                scale: 1.0,
                certified: None,
                screen: Default::default(),
            }
        };
        Ok(T5Model {
            config,
            embed,
            encoder,
            decoder: Some(decoder),
            lm_head: Some(lm_head),
            draft: None,
            source: store.path(),
        })
    }
}
