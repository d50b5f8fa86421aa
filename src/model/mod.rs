//! The T5 model: weights arranged into layers, and the forward passes.
//!
//! This is the readable path: each layer is a few calls into `t5edge-kernels`,
//! whose scalar twins (`T5EDGE_ISA=scalar`) make the whole model a plain
//! reference anyone can diff against HF's `modeling_t5.py`.

pub mod attention;
pub mod certified;
pub mod convert;
pub mod decoder;
pub mod encoder;
pub mod ffn;
mod gather;
pub mod kv_cache;
pub mod linear;
mod load;
mod load_spec;
pub mod position_bias;
pub mod scratch;
pub mod screened;

pub use convert::FormatPolicy;
pub use decoder::Decoder;
pub use encoder::Encoder;
pub use kv_cache::SeqCache;
pub use linear::{Linear, LinearWeight, Rows, WeightFormat};
pub use load_spec::{field_names, LoadSpec, OptionNames};
pub use scratch::DecodeScratch;

use crate::config::T5Config;
use crate::error::{Error, Result};
use crate::weights::F32Data;
use position_bias::PositionBias;
use std::path::PathBuf;

/// Token rows a task looks up when a prefill's embedding runs on the pool.
const EMBED_TASK_ROWS: usize = 16;

/// A stack of blocks (encoder or decoder) and what they share.
#[derive(Clone)]
pub struct Stack<B> {
    pub blocks: Vec<B>,
    pub final_norm: F32Data,
    /// The `[num_buckets, heads]` relative-attention-bias tables of the
    /// self-attention layers: one, layer 0's, whose bias every layer reuses
    /// (T5, mT5), or one per layer (umT5).
    pub rel_bias: Vec<F32Data>,
    pub heads: usize,
    pub num_buckets: usize,
    pub max_distance: usize,
    pub d_model: usize,
    pub eps: f32,
}

impl<B> Stack<B> {
    /// The table layer `layer` computes its bias from, or `None` when it
    /// reuses the bias of the layer before (every layer but 0 of a T5 stack).
    fn bias_table(&self, layer: usize) -> Option<&[f32]> {
        match self.rel_bias.len() {
            1 if layer > 0 => None,
            1 => Some(self.rel_bias[0].as_slice()),
            _ => self.rel_bias.get(layer).map(|t| t.as_slice()),
        }
    }

    /// Fills `b` with the bias `table` gives `tq` queries from absolute
    /// position `past` against `tk` keys.
    #[allow(clippy::too_many_arguments)]
    fn fill_bias(
        &self,
        b: &mut PositionBias,
        table: &[f32],
        bidirectional: bool,
        tq: usize,
        tk: usize,
        past: usize,
    ) {
        b.fill(
            table,
            self.heads,
            self.num_buckets,
            self.max_distance,
            bidirectional,
            tq,
            tk,
            past,
        );
    }
}

/// The output projection to the vocabulary.
#[derive(Clone)]
pub struct LmHead {
    pub linear: Linear,
    /// `d_model^-0.5` when the head is tied to the embedding, else 1. HF scales
    /// the hidden state (not the logits) before the matmul; so do we.
    pub scale: f32,
    /// Set by [`T5Model::enable_certified_head`]: int8 scoring with exact re-scoring.
    pub certified: Option<std::sync::Arc<certified::CertifiedHead>>,
    /// The 4-bit screen of an int8 head for greedy picks, built on first use
    /// (a new one whenever `linear` changes).
    pub screen: std::sync::Arc<screened::ScreenedHead>,
}

/// A loaded T5 model, ready to encode and decode. `Send + Sync`: one model can
/// serve many threads, each with its own [`SeqCache`]s.
#[derive(Clone)]
pub struct T5Model {
    pub config: T5Config,
    /// `[vocab, d_model]` token embedding shared by encoder and decoder, in any
    /// weight format (rows are looked up, never multiplied).
    pub embed: Linear,
    pub encoder: Encoder,
    /// `None` for an encoder-only checkpoint (HF's `T5EncoderModel`): it has
    /// no decoder tensors, and every decoder path refuses it
    /// ([`T5Model::require_decoder`]).
    pub decoder: Option<Decoder>,
    /// `None` exactly when `decoder` is.
    pub lm_head: Option<LmHead>,
    /// The decoder in int8, set with the certified head
    /// ([`T5Model::enable_certified_head`]): it drafts a certified decode's
    /// tokens several at a time, which the full-precision decoder then
    /// checks in one pass (`generate::drafted`). `None` decodes one step at
    /// a time; the ids are the same either way.
    pub draft: Option<std::sync::Arc<Decoder>>,
    /// The checkpoint as errors name it (its weight file or index).
    pub source: PathBuf,
}

impl T5Model {
    /// Whether the checkpoint has no decoder (HF's `T5EncoderModel` and
    /// kin): `encode` and `embed` work, decoding refuses.
    pub fn is_encoder_only(&self) -> bool {
        self.decoder.is_none()
    }

    /// The decoder and LM head, or the error every decoder path gives an
    /// encoder-only checkpoint.
    pub fn require_decoder(&self) -> Result<(&Decoder, &LmHead)> {
        match (&self.decoder, &self.lm_head) {
            (Some(d), Some(h)) => Ok((d, h)),
            _ => Err(Error::EncoderOnly {
                path: self.source.clone(),
                class: self.config.class_name(true),
            }),
        }
    }

    /// Refuses ids at or above `vocab_size`, naming the first.
    pub fn check_ids(&self, ids: &[u32]) -> Result<()> {
        let v = self.config.vocab_size;
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= v) {
            return Err(Error::Request(format!(
                "token id {bad} is not below vocab_size {v}"
            )));
        }
        Ok(())
    }

    /// Looks the ids up in the embedding table, packed `[ids.len(), d_model]`.
    fn embed_ids(&self, ids: &[u32]) -> Vec<f32> {
        let mut x = Vec::new();
        self.embed_into(ids, &mut x);
        x
    }

    /// [`T5Model::embed_ids`] into `x` (resized, capacity kept).
    fn embed_into(&self, ids: &[u32], x: &mut Vec<f32>) {
        let d = self.config.d_model;
        x.resize(ids.len() * d, 0.0);
        // A prefill's rows on the pool: an int8 row is gathered from 64-byte
        // blocks one packed tile wide, a row's worth of cache misses each.
        let rows = EMBED_TASK_ROWS.min(ids.len()).max(1);
        let parallel = ids.len() >= 2 * EMBED_TASK_ROWS;
        t5edge_kernels::for_chunks_mut(x, rows * d, parallel, |c, part| {
            let ids = &ids[c * rows..];
            self.embed_rows(ids, part)
        });
    }

    /// The embedding rows of `ids` into `x` (`x.len() / d_model` of them).
    fn embed_rows(&self, ids: &[u32], x: &mut [f32]) {
        let d = self.config.d_model;
        for (&id, row) in ids.iter().zip(x.chunks_exact_mut(d)) {
            let r = id as usize * d..(id as usize + 1) * d;
            match &self.embed.weight {
                LinearWeight::F32(w) => row.copy_from_slice(&w.as_slice()[r]),
                LinearWeight::F16(w) => row
                    .iter_mut()
                    .zip(&w.as_slice()[r])
                    .for_each(|(o, v)| *o = v.to_f32()),
                LinearWeight::Bf16(w) => row
                    .iter_mut()
                    .zip(&w.as_slice()[r])
                    .for_each(|(o, v)| *o = v.to_f32()),
                LinearWeight::Int8(w) => w.view().dequantize_row_into(id as usize, row),
                LinearWeight::Int8A16(w) => w.dequantize_row_into(id as usize, row),
            }
        }
    }

    /// Encodes a batch of sequences; returns each one's `[len, d_model]` output.
    pub fn encode_batch(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let d = self.config.d_model;
        let mut x = self.encode_packed(batch)?;
        if batch.len() == 1 {
            // A spare may be up to twice the length; the caller may keep it.
            x.shrink_to_fit();
            return Ok(vec![x]);
        }
        let mut out = Vec::with_capacity(batch.len());
        let mut start = 0;
        for s in batch {
            out.push(x[start * d..(start + s.len()) * d].to_vec());
            start += s.len();
        }
        scratch::give_back(x);
        Ok(out)
    }

    /// The encoder output of a packed batch, `[sum of lengths, d_model]`,
    /// the sequences one after another (checked as [`T5Model::encode_batch`]
    /// checks them), in a spare buffer of this thread's (`scratch::spare`):
    /// a decode loop takes its rows' cross-attention keys and values from it
    /// and gives it back.
    pub(crate) fn encode_packed(&self, batch: &[&[u32]]) -> Result<Vec<f32>> {
        for ids in batch {
            if ids.is_empty() {
                return Err(Error::Request("an encoder input has no tokens".into()));
            }
            self.check_ids(ids)?;
        }
        let lens: Vec<usize> = batch.iter().map(|s| s.len()).collect();
        let all: Vec<u32> = batch.iter().flat_map(|s| s.iter().copied()).collect();
        let mut x = scratch::spare(all.len() * self.config.d_model);
        self.embed_into(&all, &mut x);
        self.encoder.forward(&mut x, &lens, None);
        Ok(x)
    }

    /// Encodes one sequence: `[len, d_model]`.
    pub fn encode(&self, ids: &[u32]) -> Result<Vec<f32>> {
        Ok(self.encode_batch(&[ids])?.remove(0))
    }

    /// Encoder hidden states of every layer as HF's `hidden_states` has them:
    /// the embedding output, each block's output, the last one final-normed.
    pub fn encoder_layer_states(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        if ids.is_empty() {
            return Err(Error::Request("the encoder input has no tokens".into()));
        }
        self.check_ids(ids)?;
        let mut x = self.embed_ids(ids);
        let mut states = Vec::new();
        self.encoder
            .forward(&mut x, &[ids.len()], Some(&mut states));
        Ok(states)
    }

    /// A fresh decoder cache for one sequence whose encoder output is `enc`.
    /// Refuses an encoder-only checkpoint.
    pub fn new_cache(&self, enc: &[f32], capacity: usize) -> Result<SeqCache> {
        let (decoder, _) = self.require_decoder()?;
        let d = self.config.d_model;
        let mut c = SeqCache::new(decoder.blocks.len(), self.config.inner_dim(), capacity);
        decoder.prepare_cross(enc, enc.len() / d, &mut c);
        Ok(c)
    }

    /// Feeds `tokens[s]` (one or more new decoder positions) to each sequence `s`
    /// and returns the final hidden states, packed `[sum, d_model]`.
    pub fn decode_hidden(&self, tokens: &[&[u32]], caches: &mut [SeqCache]) -> Result<Vec<f32>> {
        let (decoder, _) = self.require_decoder()?;
        let mut s = DecodeScratch::new();
        let tqs: Vec<usize> = tokens.iter().map(|t| t.len()).collect();
        let all: Vec<u32> = tokens.iter().flat_map(|t| t.iter().copied()).collect();
        for t in tokens {
            // Zero new positions would leave the position bias with no span.
            if t.is_empty() {
                return Err(Error::Request("a decoder step has no tokens".into()));
            }
        }
        Ok(self
            .decode_packed(decoder, &all, &tqs, caches, &mut s, false)?
            .to_vec())
    }

    /// One decoding step: token `tokens[s]` is the next position of sequence
    /// `s` (cache `caches[s]`). Returns the final hidden states `[rows,
    /// d_model]`, which live in `scratch`. With a scratch reused across steps
    /// this allocates nothing once the first step has sized it.
    pub fn decode_step<'s>(
        &self,
        tokens: &[u32],
        caches: &mut [SeqCache],
        scratch: &'s mut DecodeScratch,
    ) -> Result<&'s [f32]> {
        let (decoder, _) = self.require_decoder()?;
        self.decode_alone(decoder, tokens, caches, scratch, |t| {
            t.resize(tokens.len(), 1)
        })
    }

    /// Feeds `ids` as the next positions of one sequence (cache `cache`),
    /// each getting the bits a [`T5Model::decode_step`] of its own would
    /// give it (`Decoder::forward`'s `alone`), through `decoder`: the
    /// model's, or its draft ([`T5Model::draft`]). Returns the final hidden
    /// states `[ids.len(), d_model]` in `scratch`.
    pub fn decode_positions<'s>(
        &self,
        decoder: &Decoder,
        ids: &[u32],
        cache: &mut SeqCache,
        scratch: &'s mut DecodeScratch,
    ) -> Result<&'s [f32]> {
        if ids.is_empty() {
            return Err(Error::Request("a decoder step has no tokens".into()));
        }
        let caches = std::slice::from_mut(cache);
        self.decode_alone(decoder, ids, caches, scratch, |t| t.push(ids.len()))
    }

    /// `ids` through `decoder` with `alone`, the positions per cache as
    /// `fill` lists them in the scratch's own buffer (no allocation once it
    /// is sized); the final hidden states in `scratch`.
    fn decode_alone<'s>(
        &self,
        decoder: &Decoder,
        ids: &[u32],
        caches: &mut [SeqCache],
        scratch: &'s mut DecodeScratch,
        fill: impl FnOnce(&mut Vec<usize>),
    ) -> Result<&'s [f32]> {
        let mut tqs = std::mem::take(&mut scratch.tqs);
        tqs.clear();
        fill(&mut tqs);
        let step = self
            .decode_packed(decoder, ids, &tqs, caches, scratch, true)
            .map(|_| ());
        // Hand the (now sized) buffer back whether or not the step succeeded.
        scratch.tqs = tqs;
        step?;
        Ok(&scratch.x[..ids.len() * self.config.d_model])
    }

    /// `tqs[s]` positions of sequence `s`, packed in `ids`, through `decoder`
    /// (`alone` as `Decoder::forward` takes it).
    fn decode_packed<'s>(
        &self,
        decoder: &Decoder,
        ids: &[u32],
        tqs: &[usize],
        caches: &mut [SeqCache],
        s: &'s mut DecodeScratch,
        alone: bool,
    ) -> Result<&'s [f32]> {
        if tqs.len() != caches.len() {
            return Err(Error::Request("one token list per cache".into()));
        }
        self.check_ids(ids)?;
        let (layers, inner) = (decoder.blocks.len(), self.config.inner_dim());
        for c in caches.iter() {
            let fits = |v: &Vec<Vec<f32>>, rows: usize| {
                v.len() == layers && v.iter().all(|l| l.len() == rows * inner)
            };
            if !(fits(&c.self_k, c.len)
                && fits(&c.self_v, c.len)
                && fits(&c.cross_k, c.enc_len)
                && fits(&c.cross_v, c.enc_len)
                && c.enc_len > 0)
            {
                return Err(Error::Request(
                    "a decoder cache was not made by this model's new_cache".into(),
                ));
            }
        }
        self.embed_into(ids, &mut s.x);
        if s.biases.len() < tqs.len() {
            s.biases
                .resize_with(tqs.len(), position_bias::PositionBias::empty);
        }
        decoder.forward(tqs, caches, None, s, alone);
        Ok(&s.x[..ids.len() * self.config.d_model])
    }

    /// Switches greedy decoding with `exact` to the certified int8 head: the
    /// full-precision head is kept for re-scoring. Fails if the head is not f32.
    pub fn enable_certified_head(&mut self, group_size: usize) -> Result<()> {
        self.require_decoder()?;
        let Some(lm_head) = self.lm_head.as_mut() else {
            return Ok(());
        };
        if lm_head.linear.format() != WeightFormat::F32 {
            return Err(Error::Request(
                "--exact needs the full-precision checkpoint (the head is already quantized); point --model at the original".into(),
            ));
        }
        let h = certified::CertifiedHead::new(&lm_head.linear, group_size).map_err(Error::Other)?;
        lm_head.certified = Some(std::sync::Arc::new(h));
        if let Some(decoder) = &self.decoder {
            let mut draft = decoder.clone();
            let policy = convert::FormatPolicy {
                group_size,
                ..convert::FormatPolicy::for_dtype(WeightFormat::Int8)
            };
            convert::convert_draft(&mut draft, policy)?;
            self.draft = Some(std::sync::Arc::new(draft));
        }
        Ok(())
    }

    /// Logits `[rows, vocab]` from final decoder hidden states `[rows, d_model]`.
    /// Refuses an encoder-only checkpoint (it has no head).
    pub fn logits(&self, hidden: &[f32]) -> Result<Vec<f32>> {
        let mut s = DecodeScratch::new();
        Ok(self.logits_into(hidden, &mut s)?.to_vec())
    }

    /// [`T5Model::logits`] into `scratch`'s logits buffer (no allocation once
    /// it has been sized).
    pub fn logits_into<'s>(
        &self,
        hidden: &[f32],
        scratch: &'s mut DecodeScratch,
    ) -> Result<&'s mut [f32]> {
        self.head_into(
            hidden,
            &mut scratch.head_in,
            &mut scratch.logits,
            Rows::Free,
        )
    }

    /// Logits of the hidden states the last [`T5Model::decode_step`] left in
    /// `scratch`, `[rows, vocab]`.
    pub fn step_logits<'s>(&self, scratch: &'s mut DecodeScratch) -> Result<&'s mut [f32]> {
        let DecodeScratch {
            x, head_in, logits, ..
        } = scratch;
        self.head_into(x, head_in, logits, Rows::Invariant)
    }

    /// The head over `hidden` into `logits`, `head_in` holding the rescaled
    /// input of a tied head.
    fn head_into<'s>(
        &self,
        hidden: &[f32],
        head_in: &'s mut Vec<f32>,
        logits: &'s mut Vec<f32>,
        mode: Rows,
    ) -> Result<&'s mut [f32]> {
        let (_, head) = self.require_decoder()?;
        let h = scale_for_head(head, hidden, head_in);
        let rows = hidden.len() / self.config.d_model;
        let out = scratch::sized(logits, rows * head.linear.n);
        head.linear.forward_rows(h, rows, out, mode);
        Ok(out)
    }

    /// Both outputs of the head for the last [`T5Model::decode_step`]: the
    /// hidden states as the head multiplies them and, when `logits`, the
    /// `[rows, vocab]` logits. A batch whose rows pick tokens differently (the
    /// certified head for some, the logits for others) needs both at once.
    pub fn step_head<'s>(
        &self,
        scratch: &'s mut DecodeScratch,
        logits: bool,
    ) -> Result<(&'s [f32], Option<&'s mut [f32]>)> {
        let (_, head) = self.require_decoder()?;
        let DecodeScratch {
            x,
            head_in,
            logits: out,
            ..
        } = scratch;
        let h = scale_for_head(head, x, head_in);
        if !logits {
            return Ok((h, None));
        }
        let rows = h.len() / self.config.d_model;
        let out = scratch::sized(out, rows * head.linear.n);
        head.linear.forward_rows(h, rows, out, Rows::Invariant);
        Ok((h, Some(out)))
    }

    /// The hidden states the last [`T5Model::decode_step`] left in `scratch`,
    /// as the head multiplies them.
    pub fn step_head_input<'s>(&self, scratch: &'s mut DecodeScratch) -> Result<&'s [f32]> {
        let (_, head) = self.require_decoder()?;
        let DecodeScratch { x, head_in, .. } = scratch;
        Ok(scale_for_head(head, x, head_in))
    }

    /// Teacher-forced decoder: logits `[dec_ids.len(), vocab]` for the encoder
    /// input `input_ids` and decoder input `dec_ids`.
    pub fn forward(&self, input_ids: &[u32], dec_ids: &[u32]) -> Result<Vec<f32>> {
        if dec_ids.is_empty() {
            return Err(Error::Request("decoder input has no tokens".into()));
        }
        self.require_decoder()?;
        let enc = self.encode(input_ids)?;
        let mut cache = [self.new_cache(&enc, dec_ids.len())?];
        let h = self.decode_hidden(&[dec_ids], &mut cache)?;
        self.logits(&h)
    }

    /// Decoder hidden states of every layer for teacher forcing (HF's
    /// `decoder_hidden_states`).
    pub fn decoder_layer_states(
        &self,
        input_ids: &[u32],
        dec_ids: &[u32],
    ) -> Result<Vec<Vec<f32>>> {
        if dec_ids.is_empty() {
            return Err(Error::Request("decoder input has no tokens".into()));
        }
        let (decoder, _) = self.require_decoder()?;
        let enc = self.encode(input_ids)?;
        self.check_ids(dec_ids)?;
        let mut cache = [self.new_cache(&enc, dec_ids.len())?];
        let mut s = DecodeScratch::new();
        self.embed_into(dec_ids, &mut s.x);
        s.biases.push(position_bias::PositionBias::empty());
        let mut states = Vec::new();
        decoder.forward(
            &[dec_ids.len()],
            &mut cache,
            Some(&mut states),
            &mut s,
            false,
        );
        Ok(states)
    }

    /// The format most of the weights run in: the attention projections'
    /// (a quantized file's or a conversion's body format).
    pub fn body_format(&self) -> WeightFormat {
        self.encoder
            .blocks
            .first()
            .map(|b| b.attn.q.format())
            .or_else(|| {
                let d = self.decoder.as_ref()?;
                d.blocks.first().map(|b| b.self_attn.q.format())
            })
            .or_else(|| self.lm_head.as_ref().map(|h| h.linear.format()))
            .unwrap_or(self.embed.format())
    }

    /// Number of distinct parameters (the tied embedding counted once), as HF's
    /// `num_parameters()` reports it (for an encoder-only checkpoint, as
    /// `T5EncoderModel`'s).
    pub fn num_parameters(&self) -> usize {
        let c = &self.config;
        let (d, inner, ff) = (c.d_model, c.inner_dim(), c.d_ff);
        let attn = 4 * d * inner;
        let ffn = if c.gated { 3 * d * ff } else { 2 * d * ff };
        let table = c.relative_attention_num_buckets * c.num_heads;
        let enc_bias = table * self.encoder.rel_bias.len();
        let enc = c.num_layers * (attn + ffn + 2 * d) + enc_bias + d;
        let dec = match &self.decoder {
            None => 0,
            Some(dec) => {
                let bias = table * dec.rel_bias.len();
                c.num_decoder_layers * (2 * attn + ffn + 3 * d) + bias + d
            }
        };
        let head = if c.tie_word_embeddings || self.lm_head.is_none() {
            0
        } else {
            c.vocab_size * d
        };
        c.vocab_size * d + enc + dec + head
    }
}

/// `hidden` as `head` multiplies it: rescaled into `buf` for a tied head,
/// else `hidden` itself.
fn scale_for_head<'a>(head: &LmHead, hidden: &'a [f32], buf: &'a mut Vec<f32>) -> &'a [f32] {
    if head.scale == 1.0 {
        return hidden;
    }
    let h = scratch::sized(buf, hidden.len());
    h.iter_mut()
        .zip(hidden)
        .for_each(|(o, &v)| *o = v * head.scale);
    h
}
