//! `t5edge quantize` and quantized inference: files that map with no
//! repacking and compute what in-memory conversion computes, accuracy within
//! the stated budgets, certified greedy, and refusal of bad or foreign files.

mod support;

use std::collections::BTreeMap;
use support::*;
use t5edge::model::{FormatPolicy, WeightFormat};
use t5edge::quantize::{quantize, QuantizeOptions};
use t5edge::weights::writer::serialize;
use t5edge::{GenerateOptions, T5Model};

/// Relative to the largest |logit|: what int8 weights and activations cost on
/// these random-weight models is ~1-3% (docs/QUANTIZATION.md); f16 storage ~1e-4.
const INT8_LOGIT_REL: f32 = 0.06;
const F16_LOGIT_REL: f32 = 1e-3;

fn logits(m: &T5Model) -> Vec<f32> {
    m.forward(&[17, 42, 99, 3, 1], &[0, 5, 77, 300, 12])
        .unwrap()
}

fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn quantized_dir(dtype: WeightFormat, group: usize, tag: &str) -> TempDir {
    let out = TempDir::new(tag);
    let dir = out.join("q");
    quantize(
        base_checkpoint(),
        &dir,
        QuantizeOptions::new(dtype, group),
        false,
        |_, _, _| {},
    )
    .unwrap();
    out
}

#[test]
fn quantized_files_compute_what_conversion_computes() {
    let src = T5Model::load(base_checkpoint()).unwrap();
    let reference = logits(&src);
    for (dtype, group, budget) in [
        (WeightFormat::Int8, 0, INT8_LOGIT_REL),
        (WeightFormat::Int8, 16, INT8_LOGIT_REL),
        (WeightFormat::F16, 0, F16_LOGIT_REL),
    ] {
        let out = quantized_dir(dtype, group, "qsame");
        let q = T5Model::load(&out.join("q")).unwrap();
        assert_eq!(q.lm_head.as_ref().unwrap().linear.format(), dtype);
        // The mapped file and in-memory conversion run the same kernels on the
        // same packed bytes: bit-identical logits (the embedding lookup differs:
        // the file keeps it quantized, so compare with that too).
        let mut conv = src.clone();
        let mut policy = FormatPolicy::for_dtype(dtype);
        policy.group_size = group;
        conv.convert(policy).unwrap();
        conv.embed = q.embed.clone();
        assert_eq!(
            logits(&q),
            logits(&conv),
            "{dtype:?}/{group}: mapped vs converted"
        );
        let e = rel_err(&logits(&q), &reference);
        assert!(
            e <= budget,
            "{dtype:?}/{group}: rel logit err {e} over budget {budget}"
        );
        assert!(e > 0.0, "{dtype:?}: quantization changed nothing?");
        // The copied tokenizer and config came along.
        assert!(out.join("q/tokenizer.json").is_file() && out.join("q/config.json").is_file());
    }
}

/// Conversion at load gathers each stack's int8 matrices into one buffer,
/// in the order a pass reads them and each on a cache line, so that a decode
/// step streams one run of huge pages as a quantized file's; they are the
/// engine's copies, not a file's. (Their values: the test above.)
#[test]
fn conversion_gathers_each_stacks_int8_matrices_into_one_buffer() {
    use t5edge::model::LinearWeight;
    use t5edge::weights::{Int8Data, W8A16Data};
    let mut m = T5Model::load(base_checkpoint()).unwrap();
    m.convert(FormatPolicy::for_dtype(WeightFormat::Int8))
        .unwrap();
    let gathered = |l: &t5edge::model::Linear| match &l.weight {
        LinearWeight::Int8(Int8Data::Mapped(g))
        | LinearWeight::Int8A16(W8A16Data {
            w: Int8Data::Mapped(g),
            ..
        }) => g.clone(),
        _ => panic!("an int8 matrix left on its own allocation"),
    };
    let enc: Vec<_> = m
        .encoder
        .blocks
        .iter()
        .flat_map(|b| {
            [
                &b.attn.q, &b.attn.k, &b.attn.v, &b.attn.o, &b.ffn.wi, &b.ffn.wo,
            ]
        })
        .collect();
    let dec: Vec<_> = m
        .decoder
        .as_ref()
        .unwrap()
        .blocks
        .iter()
        .flat_map(|b| {
            let (s, c) = (&b.self_attn, &b.cross_attn);
            [
                &s.q, &s.k, &s.v, &s.o, &c.q, &c.k, &c.v, &c.o, &b.ffn.wi, &b.ffn.wo,
            ]
        })
        .collect();
    let mut buffers = Vec::new();
    for (what, stack) in [("encoder", enc), ("decoder", dec)] {
        let g: Vec<_> = stack.iter().map(|l| gathered(l)).collect();
        assert!(
            g.iter()
                .all(|x| std::sync::Arc::ptr_eq(&x.backing, &g[0].backing)),
            "{what}: more than one buffer"
        );
        assert!(
            stack.iter().all(|l| !l.is_mapped()),
            "{what}: a copy called a file's view"
        );
        for (a, b) in g.iter().zip(&g[1..]) {
            assert!(a.err_norms.end <= b.data.start, "{what}: not in pass order");
        }
        let base = g[0].backing.bytes().as_ptr() as usize;
        for x in &g {
            for r in [&x.data, &x.scales, &x.row_sums, &x.err_norms] {
                assert_eq!((base + r.start) % 64, 0, "{what}: a part off a cache line");
            }
        }
        buffers.push(g[0].backing.clone());
    }
    assert!(!std::sync::Arc::ptr_eq(&buffers[0], &buffers[1]));
}

/// A load gathers what a pass streams onto huge pages: an f32
/// checkpoint's matrices, both stacks; a quantized file's int8 matrices
/// stay mapped. The same bits as the model built from the same files
/// without gathering.
#[test]
fn loads_gather_what_a_pass_streams_with_the_same_bits() {
    use t5edge::model::LinearWeight;
    use t5edge::weights::{F32Data, Int8Data, LoadOptions, WeightStore};
    let ungathered = |dir: &std::path::Path| {
        let cfg = t5edge::T5Config::from_file(&dir.join("config.json")).unwrap();
        let store = WeightStore::open_dir(dir, LoadOptions::default()).unwrap();
        T5Model::from_store(cfg, &store).unwrap()
    };
    let in_file = |l: &t5edge::model::Linear| match &l.weight {
        LinearWeight::F32(F32Data::Mapped { backing, .. }) => backing.is_file(),
        LinearWeight::Int8(Int8Data::Mapped(m)) => m.backing.is_file(),
        LinearWeight::Int8A16(w) => matches!(&w.w, Int8Data::Mapped(m) if m.backing.is_file()),
        _ => panic!("a layer owned"),
    };
    // A few of each stack's matrices, attention and feed-forward.
    let some = |m: &T5Model| {
        let (e, b) = (&m.encoder.blocks[0], &m.decoder.as_ref().unwrap().blocks[0]);
        [
            &e.attn.q,
            &e.ffn.wo,
            &b.self_attn.k,
            &b.cross_attn.o,
            &b.ffn.wi,
        ]
        .map(in_file)
    };
    let f32 = T5Model::load(base_checkpoint()).unwrap();
    assert!(
        some(&f32).iter().all(|&f| !f),
        "an f32 matrix left in the file"
    );
    assert_eq!(logits(&f32), logits(&ungathered(base_checkpoint())));

    let out = quantized_dir(WeightFormat::Int8, 0, "qgather");
    let q = T5Model::load(&out.join("q")).unwrap();
    assert!(
        some(&q).iter().all(|&f| f),
        "a quantized file's matrix copied"
    );
    assert_eq!(logits(&q), logits(&ungathered(&out.join("q"))));
}

/// The quantized layers an inference reads, embedding aside.
fn int8_linears(m: &T5Model) -> Vec<&t5edge::model::Linear> {
    let mut v = vec![&m.lm_head.as_ref().unwrap().linear];
    for b in &m.encoder.blocks {
        v.extend([
            &b.attn.q, &b.attn.k, &b.attn.v, &b.attn.o, &b.ffn.wi, &b.ffn.wo,
        ]);
    }
    for b in &m.decoder.as_ref().unwrap().blocks {
        v.extend([&b.self_attn.q, &b.cross_attn.v, &b.ffn.wi, &b.ffn.wo]);
    }
    v
}

/// The writer starts the data section on a cache line, so (every tensor
/// being whole lines long at these shapes, as at every real T5 shape) each
/// int8 matrix is mapped on one. A file written before, its data 8 bytes
/// off a line as that writer's could be, is used in place all the same,
/// with the same bits, and says so.
#[test]
fn int8_matrices_map_on_cache_lines_and_older_files_still_load() {
    let out = quantized_dir(WeightFormat::Int8, 0, "qalign");
    let file = out.join("q/model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!((8 + n) % 64, 0, "data section at {}", 8 + n);
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut int8 = 0;
    for (name, t) in header.as_object().unwrap() {
        if t["dtype"] == "I8" {
            let at = 8 + n + t["data_offsets"][0].as_u64().unwrap() as usize;
            assert_eq!(at % 64, 0, "{name} at byte {at}");
            int8 += 1;
        }
    }
    assert!(int8 >= 8, "{int8} int8 tensors");
    let off_lines = |path: &std::path::Path| {
        let f = t5edge::weights::TensorFile::open(path, true).unwrap();
        t5edge::weights::quantized::int8_off_lines(&f)
    };
    assert_eq!(off_lines(&file), (0, int8));
    let q = T5Model::load(&out.join("q")).unwrap();
    for l in int8_linears(&q) {
        assert!(l.is_mapped(), "an int8 matrix copied");
        assert_eq!(l.int8_on_lines(), Some(true));
    }

    // The same file with 8 more spaces of header: every tensor 8 bytes
    // further on, off its line.
    let old = TempDir::new("qalign-old");
    let dir = old.join("q");
    std::fs::create_dir(&dir).unwrap();
    for f in std::fs::read_dir(out.join("q")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    let mut shifted = ((n + 8) as u64).to_le_bytes().to_vec();
    shifted.extend_from_slice(&bytes[8..8 + n]);
    shifted.extend_from_slice(b"        ");
    shifted.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(dir.join("model.safetensors"), &shifted).unwrap();
    assert_eq!(off_lines(&dir.join("model.safetensors")), (int8, int8));
    let o = T5Model::load(&dir).unwrap();
    for l in int8_linears(&o) {
        assert!(l.is_mapped(), "an int8 matrix copied");
        assert_eq!(l.int8_on_lines(), Some(false));
    }
    assert_eq!(logits(&o), logits(&q), "off lines vs on lines");
}

#[test]
fn int8_file_is_small_and_self_describing() {
    // The size target is for real shapes: t5-efficient-tiny-nl2's.
    let src_dir = TempDir::new("qsize-src");
    let cfg = t5edge::synth::preset("t5-efficient-tiny-nl2").unwrap();
    t5edge::synth::write_checkpoint(
        src_dir.path(),
        &cfg,
        &t5edge::synth::SynthOptions::default(),
        true,
    )
    .unwrap();
    let out = TempDir::new("qsize");
    quantize(
        src_dir.path(),
        &out.join("q"),
        QuantizeOptions::new(WeightFormat::Int8, 0),
        false,
        |_, _, _| {},
    )
    .unwrap();
    let src = std::fs::metadata(src_dir.join("model.safetensors"))
        .unwrap()
        .len();
    let q = std::fs::metadata(out.join("q/model.safetensors"))
        .unwrap()
        .len();
    assert!(
        (q as f64) < 0.30 * src as f64,
        "int8 file {q} bytes vs fp32 {src}"
    );
    let f = t5edge::weights::TensorFile::open(&out.join("q/model.safetensors"), true).unwrap();
    let info = t5edge::weights::quantized::info(&f).unwrap().unwrap();
    assert_eq!(
        (
            info.version,
            info.dtype.as_str(),
            info.group_size,
            info.ffn_out_a16
        ),
        (2, "int8", 0, true)
    );
    assert_eq!(info.source_sha256.len(), 64);
    assert!(info.tool_version.starts_with("t5edge "));
}

#[test]
fn refuses_to_clobber_and_replaces_with_force() {
    let out = TempDir::new("qclobber");
    let dir = out.join("q");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("precious.txt"), b"mine").unwrap();
    let opts = QuantizeOptions::new(WeightFormat::Int8, 0);
    let e = quantize(base_checkpoint(), &dir, opts, false, |_, _, _| {})
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--force"), "{e}");
    assert_eq!(std::fs::read(dir.join("precious.txt")).unwrap(), b"mine");
    quantize(base_checkpoint(), &dir, opts, true, |_, _, _| {}).unwrap();
    assert!(dir.join("model.safetensors").is_file() && !dir.join("precious.txt").exists());
    // Nothing temporary left beside it.
    let left: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("q")]);
}

#[test]
fn failed_quantize_leaves_no_output_and_source_untouched() {
    let src = checkpoint_copy("qnan");
    edit_tensors(src.path(), |t| {
        let w = t
            .iter_mut()
            .find(|t| t.name.ends_with("layer.0.SelfAttention.k.weight"))
            .unwrap();
        w.data[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    let before = std::fs::read(src.join("model.safetensors")).unwrap();
    let out = TempDir::new("qnan-out");
    let e = quantize(
        src.path(),
        &out.join("q"),
        QuantizeOptions::new(WeightFormat::Int8, 0),
        false,
        |_, _, _| {},
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("SelfAttention.k.weight") && e.contains("NaN"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "partial output left behind"
    );
    assert_eq!(
        std::fs::read(src.join("model.safetensors")).unwrap(),
        before
    );
}

/// Rewrites a quantized file through `edit` on its tensors and metadata.
fn corrupt(
    tag: &str,
    edit: impl FnOnce(&mut Vec<t5edge::weights::writer::OutTensor>, &mut BTreeMap<String, String>),
) -> String {
    let out = quantized_dir(WeightFormat::Int8, 0, tag);
    let p = out.join("q/model.safetensors");
    let (mut t, mut meta) = tensors_of(&std::fs::read(&p).unwrap());
    edit(&mut t, &mut meta);
    std::fs::write(&p, serialize(&t, &meta)).unwrap();
    match T5Model::load(&out.join("q")) {
        Ok(_) => panic!("{tag}: corrupted file loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_quantized_files_are_refused_clearly() {
    let e = corrupt("qver", |_, m| {
        m.insert("t5edge.format_version".into(), "3".into());
    });
    assert!(
        e.contains("version 3") && e.contains("versions 1 and 2"),
        "{e}"
    );
    let e = corrupt("qffnkey", |_, m| {
        m.insert("t5edge.ffn_out".into(), "w4a4".into());
    });
    assert!(e.contains("t5edge.ffn_out") && e.contains("w4a4"), "{e}");
    let e = corrupt("qinmiss", |t, _| {
        t.retain(|t| {
            !t.name
                .ends_with("block.0.layer.1.DenseReluDense.wo.weight.in_scales")
        })
    });
    assert!(
        e.contains("DenseReluDense.wo.weight.in_scales") && e.contains("missing"),
        "{e}"
    );
    let e = corrupt("qinval", |t, _| {
        let s = t
            .iter_mut()
            .find(|t| {
                t.name
                    .ends_with("block.1.layer.1.DenseReluDense.wo.weight.in_scales")
            })
            .unwrap();
        s.data[8..12].copy_from_slice(&3.0f32.to_le_bytes());
    });
    assert!(
        e.contains("DenseReluDense.wo.weight.in_scales") && e.contains("input scale 2 is 3"),
        "{e}"
    );
    let e = corrupt("qscales", |t, _| {
        t.retain(|t| !t.name.ends_with("layer.0.SelfAttention.q.weight.scales"))
    });
    assert!(
        e.contains("SelfAttention.q.weight.scales") && e.contains("missing"),
        "{e}"
    );
    let e = corrupt("qsums", |t, _| {
        let s = t
            .iter_mut()
            .find(|t| {
                t.name
                    .ends_with("block.1.layer.1.DenseReluDense.wi.weight.row_sums")
            })
            .unwrap();
        s.data[0] ^= 1;
    });
    assert!(
        e.contains("DenseReluDense.wi") && e.contains("row_sums"),
        "{e}"
    );
    let e = corrupt("qshape", |t, _| {
        let s = t
            .iter_mut()
            .find(|t| t.name.ends_with("layer.0.SelfAttention.v.weight.i8"))
            .unwrap();
        s.shape = vec![s.shape[0] / 2, 2];
    });
    assert!(
        e.contains("SelfAttention.v.weight.i8") && e.contains("shape"),
        "{e}"
    );
    let e = corrupt("qmin", |t, _| {
        let s = t
            .iter_mut()
            .find(|t| t.name.ends_with("layer.0.SelfAttention.o.weight.i8"))
            .unwrap();
        s.data[0] = 0x80;
    });
    assert!(e.contains("-128"), "{e}");
    let e = corrupt("qscale", |t, _| {
        let s = t
            .iter_mut()
            .find(|t| t.name.ends_with("layer.0.SelfAttention.o.weight.scales"))
            .unwrap();
        s.data[0..4].copy_from_slice(&f32::INFINITY.to_le_bytes());
    });
    assert!(e.contains("scale"), "{e}");
    // Truncated: the file no longer ends where its header says.
    let out = quantized_dir(WeightFormat::Int8, 0, "qtrunc");
    let p = out.join("q/model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let e = T5Model::load(&out.join("q")).err().unwrap().to_string();
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn certified_greedy_needs_full_precision_and_matches_f32() {
    let mut src = T5Model::load(base_checkpoint()).unwrap();
    let opts = GenerateOptions::default()
        .max_new_tokens(12)
        .min_new_tokens(12);
    let prompt: &[u32] = &[33, 7, 400, 1];
    let f32_ids = t5edge::generate::greedy(&src, &[prompt], &opts).unwrap();
    src.enable_certified_head(0).unwrap();
    let exact = t5edge::generate::greedy(&src, &[prompt], &opts.clone().exact(true)).unwrap();
    assert_eq!(exact, f32_ids);
    let out = quantized_dir(WeightFormat::Int8, 0, "qexact");
    let mut q = T5Model::load(&out.join("q")).unwrap();
    assert!(q
        .enable_certified_head(0)
        .unwrap_err()
        .to_string()
        .contains("full-precision"));
}

/// `--int8-ffn-out` puts every FFN output projection in int8 with int8
/// activations (the default gives them 16-bit ones), through `quantize` and
/// through conversion at load alike, and is refused where it cannot apply.
#[test]
fn int8_ffn_out_quantizes_wo_too() {
    let out = TempDir::new("qffnout");
    let dir = out.join("q");
    let base = base_checkpoint().to_str().unwrap();
    let q_dir = dir.to_str().unwrap();
    let ok = run_cli(
        &[
            "quantize",
            "--model",
            base,
            "--dtype",
            "int8",
            "--int8-ffn-out",
            "--out",
            q_dir,
            "--no-check",
        ],
        None,
        &[],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let q = T5Model::load(&dir).unwrap();
    let wo = |m: &T5Model| -> Vec<WeightFormat> {
        let enc = m.encoder.blocks.iter().map(|b| b.ffn.wo.format());
        enc.chain(
            m.decoder
                .as_ref()
                .unwrap()
                .blocks
                .iter()
                .map(|b| b.ffn.wo.format()),
        )
        .collect()
    };
    assert!(
        wo(&q).iter().all(|&f| f == WeightFormat::Int8),
        "{:?}",
        wo(&q)
    );
    // The default runs the same int8 weights with 16-bit activations, from
    // the file as from conversion at load, and nothing else gets them.
    let plain = quantized_dir(WeightFormat::Int8, 0, "qffnplain");
    let p = T5Model::load(&plain.join("q")).unwrap();
    assert!(
        wo(&p).iter().all(|&f| f == WeightFormat::Int8A16),
        "{:?}",
        wo(&p)
    );
    let blocks = p.encoder.blocks.iter().map(|b| (&b.attn.q, &b.ffn.wi));
    assert!(blocks
        .clone()
        .all(|(a, b)| a.format() == WeightFormat::Int8 && b.format() == WeightFormat::Int8));
    let mut conv16 = T5Model::load(base_checkpoint()).unwrap();
    conv16
        .convert(FormatPolicy::for_dtype(WeightFormat::Int8))
        .unwrap();
    conv16.embed = p.embed.clone();
    assert_eq!(logits(&p), logits(&conv16));
    // A file of format version 1 (before `t5edge.ffn_out`) with int8 `wo`
    // matrices was written by `--int8-ffn-out`: they keep int8 activations.
    let v1 = TempDir::new("qffnv1");
    for f in std::fs::read_dir(&dir).unwrap() {
        let f = f.unwrap().path();
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        std::fs::copy(&f, v1.join(&name)).unwrap();
    }
    let (t, mut meta) = tensors_of(&std::fs::read(dir.join("model.safetensors")).unwrap());
    assert_eq!(meta.get("t5edge.ffn_out").map(String::as_str), Some("int8"));
    meta.insert("t5edge.format_version".into(), "1".into());
    meta.remove("t5edge.ffn_out");
    std::fs::write(v1.join("model.safetensors"), serialize(&t, &meta)).unwrap();
    let old = T5Model::load(&v1.join("")).unwrap();
    assert!(wo(&old).iter().all(|&f| f == WeightFormat::Int8));
    assert_eq!(logits(&old), logits(&q));
    // The file computes what the same policy computes in memory.
    let mut conv = T5Model::load(base_checkpoint()).unwrap();
    let mut policy = FormatPolicy::for_dtype(WeightFormat::Int8);
    policy.ffn_out = WeightFormat::Int8;
    conv.convert(policy).unwrap();
    conv.embed = q.embed.clone();
    assert_eq!(logits(&q), logits(&conv));
    let reference = logits(&T5Model::load(base_checkpoint()).unwrap());
    let e = rel_err(&logits(&q), &reference);
    assert!(e <= INT8_LOGIT_REL, "rel logit err {e}");

    for (args, needles) in [
        (
            vec![
                "generate",
                "--model",
                base,
                "--dtype",
                "f16",
                "--int8-ffn-out",
                "--input-ids",
                "5,6,1",
            ],
            vec!["--int8-ffn-out", "--dtype int8"],
        ),
        (
            vec![
                "generate",
                "--model",
                q_dir,
                "--int8-ffn-out",
                "--input-ids",
                "5,6,1",
            ],
            vec!["t5edge quantize"],
        ),
        (
            // Asking for f32 does not silently run the int8 weights.
            vec![
                "generate",
                "--model",
                q_dir,
                "--dtype",
                "f32",
                "--input-ids",
                "5,6,1",
            ],
            vec!["holds int8 weights", "not f32", "--dtype"],
        ),
        (
            vec![
                "quantize",
                "--model",
                base,
                "--dtype",
                "f16",
                "--int8-ffn-out",
                "--out",
                "unused",
            ],
            vec!["--int8-ffn-out"],
        ),
    ] {
        let o = run_cli(&args, None, &[]);
        assert_one_line_error(&args.join(" "), &o, &needles);
    }
    let o = run_cli(
        &[
            "generate",
            "--model",
            base,
            "--dtype",
            "int8",
            "--int8-ffn-out",
            "--input-ids",
            "5,6,1",
            "--max-new-tokens",
            "3",
        ],
        None,
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Trained T5 checkpoints' FFN outlier channels, planted in the synthetic
/// checkpoint with compensating `wo` columns, so that the f32 logits keep
/// their bits: the default policy's W8A16 `wo` divides its columns by powers
/// of two at or above their largest weight, which undoes the planting
/// exactly, and computes bit for bit what it computes without them; int8
/// activations (`--int8-ffn-out`) lose accuracy to the outliers.
#[test]
fn default_ffn_out_is_indifferent_to_outlier_channels() {
    let base = T5Model::load(base_checkpoint()).unwrap();
    let mut planted = base.clone();
    t5edge::synth::plant_ffn_outliers(&mut planted, 16, 6, true).unwrap();
    let reference = logits(&base);
    assert_eq!(logits(&planted), reference);
    let conv = |m: &T5Model, p: FormatPolicy| {
        let mut m = m.clone();
        m.convert(p).unwrap();
        logits(&m)
    };
    let default = FormatPolicy::for_dtype(WeightFormat::Int8);
    assert_eq!(default.ffn_out, WeightFormat::Int8A16);
    let (d_base, d_planted) = (conv(&base, default), conv(&planted, default));
    assert_eq!(d_planted, d_base);
    assert!(rel_err(&d_base, &reference) <= INT8_LOGIT_REL);
    let a8 = FormatPolicy {
        ffn_out: WeightFormat::Int8,
        ..default
    };
    let (e_base, e_planted) = (
        rel_err(&conv(&base, a8), &reference),
        rel_err(&conv(&planted, a8), &reference),
    );
    eprintln!("int8 activations: {e_base:e} -> {e_planted:e} with outliers");
    assert!(e_planted > 3.0 * e_base, "{e_base:e} -> {e_planted:e}");
}

/// The resident bytes (kB) of this process's map that holds `p`, from
/// `/proc/self/smaps`: a map's own line, so other tests' files running
/// beside this one do not count.
#[cfg(target_os = "linux")]
fn resident_kb_of_map_holding(p: *const u8) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                inside = (a..b).contains(&(p as usize));
                continue;
            }
        }
        if inside {
            if let Some(kb) = line.strip_prefix("Rss:") {
                return kb.trim().trim_end_matches("kB").trim().parse().unwrap();
            }
        }
    }
    panic!("no map holds {p:?}");
}

/// A checkpoint converted at load keeps what it converted to, not what it
/// converted from: the file's pages are dropped behind the conversion
/// (whole 2 MB pieces, since one touch maps a file's whole folio back on
/// Linux 6.18), the norms it still reads copied out first. Before, the
/// whole f32 file stayed resident beside the int8 copies (a large model:
/// 3.75 GB peak for 0.74 GB of int8). The values are the conversion's all
/// the same.
#[cfg(target_os = "linux")]
#[test]
fn a_conversion_at_load_leaves_its_source_unmapped() {
    use t5edge::model::{LinearWeight, LoadSpec};
    use t5edge::synth::{preset, with_overrides, write_checkpoint, SynthOptions};
    use t5edge::weights::F32Data;
    // Tensors of 256 KB to 4 MB (18 MB in all), so that many share a 2 MB
    // piece with a neighbour.
    let cfg = with_overrides(
        &preset("t5-efficient-tiny-nl2").unwrap(),
        &[
            "vocab_size=4096".into(),
            "num_layers=3".into(),
            "num_decoder_layers=3".into(),
        ],
    )
    .unwrap();
    let dir = TempDir::new("release");
    write_checkpoint(dir.path(), &cfg, &SynthOptions::default(), false).unwrap();
    let file_kb = std::fs::metadata(dir.join("model.safetensors"))
        .unwrap()
        .len()
        / 1024;
    for dtype in [WeightFormat::Int8, WeightFormat::F16] {
        let spec = LoadSpec {
            dtype: Some(dtype),
            ..Default::default()
        };
        let m = T5Model::load_spec(dir.path(), &spec).unwrap();
        let LinearWeight::F32(F32Data::Mapped { backing, .. }) = &m.embed.weight else {
            panic!("the embedding is no longer a view of the file");
        };
        let resident = resident_kb_of_map_holding(backing.bytes().as_ptr());
        assert!(
            resident * 8 < file_kb,
            "{dtype:?}: {resident} of the file's {file_kb} kB still resident after converting"
        );
        // Dropped pages come back from the file with the same bytes.
        let mut again = T5Model::load(dir.path()).unwrap();
        again.convert(FormatPolicy::for_dtype(dtype)).unwrap();
        assert_eq!(logits(&m), logits(&again), "{dtype:?}");
    }
}

/// A checkpoint read into memory (`--no-mmap`) and converted: once no layer
/// reads that copy, the embedding's table is copied out of it too, so the
/// whole file's copy is freed; under `--exact`, whose f32 layers still read
/// it, the table stays a view (a copy would only add to it). The logits
/// are those of the mapped load.
#[test]
fn a_converted_read_file_is_let_go() {
    use t5edge::model::{Linear, LinearWeight, LoadSpec};
    use t5edge::weights::{Backing, F32Data, LoadOptions};
    let views_the_read_file = |l: &Linear| {
        matches!(&l.weight, LinearWeight::F32(F32Data::Mapped { backing, .. })
            if matches!(**backing, Backing::Heap(_)))
    };
    let read = LoadOptions { mmap: false };
    for (dtype, exact) in [(WeightFormat::Int8, false), (WeightFormat::Int8, true)] {
        let spec = LoadSpec {
            dtype: Some(dtype),
            exact,
            files: read,
            ..Default::default()
        };
        let m = T5Model::load_spec(base_checkpoint(), &spec).unwrap();
        assert_eq!(views_the_read_file(&m.embed), exact, "exact={exact}");
        let mapped = T5Model::load_spec(
            base_checkpoint(),
            &LoadSpec {
                files: LoadOptions::default(),
                ..spec
            },
        )
        .unwrap();
        assert_eq!(logits(&m), logits(&mapped), "exact={exact}");
    }
}
