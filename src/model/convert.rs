//! Converting a loaded model's linear layers to another weight format, per a
//! policy that says which layers may go to int8.

use super::gather;
use super::linear::LinearWeight;
use super::linear::{Linear, WeightFormat};
use super::T5Model;
use crate::error::{Error, Result};
use crate::weights::gather::Int8Arena;
use crate::weights::{Backing, F32Data, W8A16Data};
use std::ops::Range;
use std::sync::Arc;
use t5edge_kernels::aligned::HUGE_PAGE;
use t5edge_kernels::int8::{part_lens, PackedInt8};

/// Which format each kind of layer gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FormatPolicy {
    /// Attention projections and the FFN input projections.
    pub body: WeightFormat,
    /// The FFN output projection `wo`, the layer T5 is known to be fragile in
    /// (its inputs are large and spiky; HF keeps it in fp32 under fp16).
    pub ffn_out: WeightFormat,
    pub lm_head: WeightFormat,
    /// int8 scale group along K (0 = one scale per output row).
    pub group_size: usize,
}

impl FormatPolicy {
    /// What `--dtype NAME` means.
    pub fn for_dtype(f: WeightFormat) -> FormatPolicy {
        let ffn_out = match f {
            // `wo`'s inputs carry outliers an int8 row scale flattens
            // (docs/QUANTIZATION.md): int8 weights, 16-bit activations.
            WeightFormat::Int8 => WeightFormat::Int8A16,
            other => other,
        };
        FormatPolicy {
            body: f,
            ffn_out,
            lm_head: f,
            group_size: 0,
        }
    }

    pub fn all(f: WeightFormat) -> FormatPolicy {
        FormatPolicy {
            body: f,
            ffn_out: f,
            lm_head: f,
            group_size: 0,
        }
    }
}

/// Bytes a layer of `n x k` weights takes in `f` (int8: data, scales, sums).
fn layer_bytes(l: &Linear, f: WeightFormat) -> u64 {
    let w = (l.n * l.k) as u64;
    match f {
        WeightFormat::Int8 | WeightFormat::Int8A16 => w + 12 * l.n as u64,
        other => w * other.bytes_per_weight() as u64,
    }
}

/// The mapped bytes a block's layers were converted from, dropped from
/// memory together once the block is done ([`Sources::flush`]), or kept
/// (`release` false: `--exact`'s draft, whose sources the full-precision
/// decoder goes on reading).
///
/// Why drop them: nothing reads them again but a tied embedding's lookups
/// (faulted back from the page cache), so a checkpoint converted at load
/// keeps the converted weights resident instead of both (kernels/BENCH.md,
/// "A conversion at load drops what it converted"). Why a block at a time:
/// a release drops whole 2 MB pieces ([`Backing::release_around`]), and a
/// release per layer made the next layer in the same piece fault it all
/// back (tiny-nl2 load +3 ms).
struct Sources {
    release: bool,
    ranges: Vec<(Arc<Backing>, Range<usize>)>,
}

impl Sources {
    fn new(release: bool) -> Sources {
        Sources {
            release,
            ranges: Vec::new(),
        }
    }

    /// Notes what `l` is a view of, before it is replaced by its conversion.
    fn note(&mut self, l: &Linear) {
        if let (true, Some((backing, range))) = (self.release, l.file_bytes()) {
            self.ranges.push((backing.clone(), range));
        }
    }

    /// Releases what was noted, ranges of one file within 2 MB of each
    /// other merged into one call.
    fn flush(&mut self) {
        let mut rs = std::mem::take(&mut self.ranges);
        rs.sort_by_key(|(b, r)| (Arc::as_ptr(b) as usize, r.start));
        let mut it = rs.into_iter();
        let Some(mut cur) = it.next() else { return };
        for (b, r) in it {
            if Arc::ptr_eq(&b, &cur.0) && r.start <= cur.1.end + HUGE_PAGE {
                cur.1.end = cur.1.end.max(r.end);
            } else {
                let (done, range) = std::mem::replace(&mut cur, (b, r));
                done.release_around(range);
            }
        }
        cur.0.release_around(cur.1);
    }
}

/// Converts `l` to `to`, noting in `sources` what it was a view of.
fn conv(
    l: &mut Linear,
    to: WeightFormat,
    group: usize,
    what: &str,
    sources: &mut Sources,
) -> Result<()> {
    if l.format() == to {
        return Ok(());
    }
    let converted = l
        .convert(to, group)
        .map_err(|e| Error::Other(format!("{what}: {e}")))?;
    sources.note(l);
    *l = converted;
    Ok(())
}

/// Hands the heap's free pages back to the system: a conversion's working
/// copies (f16 and bf16 widened, the float matrices [`gather`] moved) are
/// freed into the middle of
/// glibc's heap, which the CLI keeps (`main` raises its trim threshold, so
/// that prefill reuses its buffers), and which no later call of a converted
/// model grows back into.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the allocator's own
    // to the system; it is thread-safe and touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Copies a mapped norm or bias table into memory of its own, so that the
/// 2 MB pieces a conversion drops around it are not mapped back by the
/// first pass that reads it (a few KB a block).
fn own(t: &mut F32Data) {
    if t.is_mapped() {
        *t = t.as_slice().to_vec().into();
    }
}

/// [`own`] for a stack's final norm and bias tables, and each block's norms
/// (`norms` lists a block's).
fn own_stack<B>(s: &mut super::Stack<B>, norms: impl Fn(&mut B) -> Vec<&mut F32Data>) {
    own(&mut s.final_norm);
    s.rel_bias.iter_mut().for_each(own);
    for b in &mut s.blocks {
        norms(b).into_iter().for_each(own);
    }
}

impl T5Model {
    /// Every linear layer with the format `policy` gives it, and its name.
    fn layers_with_formats(&self, policy: FormatPolicy) -> Vec<(&Linear, WeightFormat)> {
        let mut out = Vec::new();
        for b in &self.encoder.blocks {
            for l in [&b.attn.q, &b.attn.k, &b.attn.v, &b.attn.o, &b.ffn.wi] {
                out.push((l, policy.body));
            }
            if let Some(up) = &b.ffn.wi_up {
                out.push((up, policy.body));
            }
            out.push((&b.ffn.wo, policy.ffn_out));
        }
        for b in self.decoder.iter().flat_map(|d| &d.blocks) {
            for a in [&b.self_attn, &b.cross_attn] {
                for l in [&a.q, &a.k, &a.v, &a.o] {
                    out.push((l, policy.body));
                }
            }
            out.push((&b.ffn.wi, policy.body));
            if let Some(up) = &b.ffn.wi_up {
                out.push((up, policy.body));
            }
            out.push((&b.ffn.wo, policy.ffn_out));
        }
        if let Some(head) = &self.lm_head {
            out.push((&head.linear, policy.lm_head));
        }
        out
    }

    /// Refuses a conversion the machine has no memory for, before any of it
    /// runs: the converted layers are new allocations (the mapped originals
    /// are page cache, which the kernel can reclaim), plus the widest layer's
    /// f32 copy that a conversion passes through. Says what it needs.
    pub fn check_convert_fits(&self, dir: &std::path::Path, policy: FormatPolicy) -> Result<()> {
        let mut needed = 0u64;
        let mut widest = 0u64;
        for (l, f) in self.layers_with_formats(policy) {
            if l.format() != f {
                needed += layer_bytes(l, f);
                widest = widest.max((l.n * l.k * 4) as u64);
            }
        }
        if needed == 0 {
            return Ok(());
        }
        crate::memory::check_fits(
            dir,
            &format!(
                "converting the weights to {} at load ({} converted, {} working copy)",
                policy.body.name(),
                crate::memory::gb(needed),
                crate::memory::gb(widest)
            ),
            needed + widest,
            "run it in the stored format (no --dtype), or convert it once with `t5edge quantize` (streams one tensor at a time) and load the result",
        )
    }

    /// Converts every linear layer as `policy` says (in place, from the current
    /// weights; the embedding lookup keeps its table). A stack's int8
    /// matrices below a huge page are quantized into one buffer
    /// (`convert_stack`), its float ones gathered (`gather`).
    /// The bytes converted from are released behind the conversion, a
    /// block at a time (`Sources`).
    pub fn convert(&mut self, policy: FormatPolicy) -> Result<()> {
        let g = policy.group_size;
        own_stack(&mut self.encoder, |b| {
            vec![&mut b.attn_norm, &mut b.ffn_norm]
        });
        convert_stack(encoder_jobs(&mut self.encoder, policy), g, true)?;
        gather::encoder(&mut self.encoder);
        if let Some(d) = &mut self.decoder {
            own_stack(d, |b| {
                vec![&mut b.self_norm, &mut b.cross_norm, &mut b.ffn_norm]
            });
            convert_stack(decoder_jobs(d, policy, true), g, true)?;
            gather::decoder(d);
        }
        let mut sources = Sources::new(true);
        if let Some(head) = &mut self.lm_head {
            conv(&mut head.linear, policy.lm_head, g, "lm_head", &mut sources)?;
            sources.flush();
            // The screen (built lazily) belongs to the old weights.
            head.screen = Default::default();
        }
        self.let_a_read_file_go(policy);
        trim_heap();
        Ok(())
    }

    /// With the file read into memory (`--no-mmap`), once no layer is a
    /// view of that copy the embedding's table is its last user (the norms
    /// were copied out before the conversion): copied out too, it lets the
    /// whole file's copy go (2.95 GB of f32 for a large model converted to
    /// int8). Left alone while any layer still reads the copy (`--exact`,
    /// a format the checkpoint already has), where copying the table would
    /// only add to it.
    fn let_a_read_file_go(&mut self, policy: FormatPolicy) {
        let read = |l: &Linear| matches!(l.file_view(), Some(b) if matches!(b, Backing::Heap(_)));
        if self
            .layers_with_formats(policy)
            .iter()
            .any(|(l, _)| read(l))
        {
            return;
        }
        if read(&self.embed) {
            self.embed.own();
        }
    }
}

/// [`convert_stack`] of a decoder for `--exact`'s int8 draft
/// ([`super::T5Model::draft`], made by
/// [`super::T5Model::enable_certified_head`]), which takes its
/// cross-attention keys and values from the full-precision decoder's cache:
/// its cross-attention K and V projections never run, so they stay the
/// shared full-precision ones rather than being quantized for nothing. The
/// full-precision decoder goes on reading what the draft is converted from:
/// nothing is released.
pub(super) fn convert_draft(decoder: &mut super::Decoder, policy: FormatPolicy) -> Result<()> {
    convert_stack(
        decoder_jobs(decoder, policy, false),
        policy.group_size,
        false,
    )?;
    gather::decoder(decoder);
    Ok(())
}

/// A layer to convert: the format it gets, and its name in errors.
struct Job<'a> {
    l: &'a mut Linear,
    to: WeightFormat,
    what: String,
}

/// An encoder's layers to convert, a block at a time, in the order a pass
/// reads them.
fn encoder_jobs(e: &mut super::Encoder, policy: FormatPolicy) -> Vec<Vec<Job<'_>>> {
    let blocks = e.blocks.iter_mut().enumerate();
    blocks
        .map(|(i, b)| {
            let mut jobs = attention_jobs(
                &mut b.attn,
                policy,
                &format!("encoder block {i} attention"),
                true,
            );
            jobs.extend(ffn_jobs(&mut b.ffn, policy, &format!("encoder block {i}")));
            jobs
        })
        .collect()
}

/// A decoder's layers to convert (cross-attention K and V only with
/// `cross_kv`), a block at a time, in the order a step reads them.
fn decoder_jobs(d: &mut super::Decoder, policy: FormatPolicy, cross_kv: bool) -> Vec<Vec<Job<'_>>> {
    let blocks = d.blocks.iter_mut().enumerate();
    blocks
        .map(|(i, b)| {
            let what = format!("decoder block {i} attention");
            let mut jobs = attention_jobs(&mut b.self_attn, policy, &what, true);
            let what = format!("decoder block {i} cross-attention");
            jobs.extend(attention_jobs(&mut b.cross_attn, policy, &what, cross_kv));
            jobs.extend(ffn_jobs(&mut b.ffn, policy, &format!("decoder block {i}")));
            jobs
        })
        .collect()
}

/// An attention layer's projections, to `policy.body` (K and V only with
/// `kv`), named after `what`.
fn attention_jobs<'a>(
    a: &'a mut super::attention::AttentionWeights,
    policy: FormatPolicy,
    what: &str,
    kv: bool,
) -> Vec<Job<'a>> {
    [
        ("q", &mut a.q),
        ("k", &mut a.k),
        ("v", &mut a.v),
        ("o", &mut a.o),
    ]
    .into_iter()
    .filter(|(name, _)| kv || !matches!(*name, "k" | "v"))
    .map(|(name, l)| Job {
        l,
        to: policy.body,
        what: format!("{what} {name}"),
    })
    .collect()
}

/// A feed-forward block's layers (`wo` to `policy.ffn_out`), named after
/// `block`.
fn ffn_jobs<'a>(
    ffn: &'a mut super::ffn::FeedForward,
    policy: FormatPolicy,
    block: &str,
) -> Vec<Job<'a>> {
    let mut jobs = vec![Job {
        l: &mut ffn.wi,
        to: policy.body,
        what: format!("{block} wi"),
    }];
    if let Some(up) = &mut ffn.wi_up {
        jobs.push(Job {
            l: up,
            to: policy.body,
            what: format!("{block} wi_1"),
        });
    }
    jobs.push(Job {
        l: &mut ffn.wo,
        to: policy.ffn_out,
        what: format!("{block} wo"),
    });
    jobs
}

/// Whether `j` is quantized into its stack's buffer: converted to int8 and
/// smaller than a huge page (a larger one is on huge pages of its own).
fn into_arena(j: &Job<'_>, group: usize) -> bool {
    matches!(j.to, WeightFormat::Int8 | WeightFormat::Int8A16)
        && j.l.format() != j.to
        && part_lens(j.l.n, j.l.k, group)[0] < HUGE_PAGE
}

/// Converts a stack's layers, `blocks` in pass order. The int8 matrices
/// below a huge page are quantized straight into one buffer
/// ([`Int8Arena`]): each is written once, where quantizing it into memory
/// of its own and copying it over zeroed fresh pages twice
/// (kernels/BENCH.md). The others convert on
/// their own ([`conv`]). Each block's sources are released behind it with
/// `release` ([`Sources`]).
fn convert_stack(blocks: Vec<Vec<Job<'_>>>, group: usize, release: bool) -> Result<()> {
    let shapes: Vec<(usize, usize, usize)> = blocks
        .iter()
        .flatten()
        .filter(|j| into_arena(j, group))
        .map(|j| (j.l.n, j.l.k, group))
        .collect();
    // As `gather`: one alone gains nothing from a buffer of its own.
    let mut arena = (shapes.len() >= 2).then(|| Int8Arena::new(shapes));
    let mut sources = Sources::new(release);
    // The layers quantized into the buffer, with W8A16's input scales;
    // they become views of it once it is complete.
    let mut placed: Vec<(&mut Linear, Option<Vec<f32>>)> = Vec::new();
    for block in blocks {
        for j in block {
            let Some(a) = arena.as_mut().filter(|_| into_arena(&j, group)) else {
                conv(j.l, j.to, group, &j.what, &mut sources)?;
                continue;
            };
            let (n, k) = (j.l.n, j.l.k);
            let parts = a.parts_mut(placed.len());
            let t =
                j.l.with_source(|w| match j.to {
                    WeightFormat::Int8A16 => {
                        PackedInt8::quantize_a16_into(w, n, k, group, parts).map(Some)
                    }
                    _ => PackedInt8::quantize_into(w, n, k, group, parts).map(|()| None),
                })
                .map_err(|e| Error::Other(format!("{}: {e}", j.what)))?;
            sources.note(j.l);
            placed.push((j.l, t));
        }
        sources.flush();
    }
    if let Some(a) = arena {
        for ((l, t), w) in placed.into_iter().zip(a.finish()) {
            l.weight = match t {
                None => LinearWeight::Int8(w),
                Some(t) => LinearWeight::Int8A16(W8A16Data {
                    w,
                    in_scales: t.into(),
                }),
            };
        }
    }
    Ok(())
}
