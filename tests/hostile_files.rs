//! Hostile checkpoint files: every corruption is refused with one line naming
//! the file and the tensor or field at fault, never a panic or an out-of-bounds
//! read. Each test corrupts a private copy of a tiny synthetic checkpoint.

mod support;

use std::path::Path;
use support::*;
use t5edge::weights::{DType, LoadOptions, TensorFile, WeightStore};
use t5edge::T5Model;

fn load(dir: &Path) -> t5edge::Result<T5Model> {
    T5Model::load(dir)
}

/// Loads with both backings (mapped and read into the heap): both must refuse.
fn load_both(dir: &Path) -> [t5edge::Result<T5Model>; 2] {
    [
        T5Model::load_with(dir, LoadOptions { mmap: true }),
        T5Model::load_with(dir, LoadOptions { mmap: false }),
    ]
}

fn write_weights(dir: &Path, bytes: &[u8]) {
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
}

#[test]
fn pristine_checkpoint_loads() {
    // The control: everything below fails only because of its corruption.
    let m = load(base_checkpoint()).unwrap();
    assert_eq!(m.config, tiny_config());
}

#[test]
fn header_length_past_end_of_file() {
    let d = checkpoint_copy("hdr-past-end");
    let mut b = base_weights();
    let len = b.len() as u64;
    b[..8].copy_from_slice(&(len + 100).to_le_bytes());
    write_weights(d.path(), &b);
    for r in load_both(d.path()) {
        err_contains("header past end", r, &["model.safetensors", "past the end"]);
    }
}

#[test]
fn header_length_u64_max() {
    let d = checkpoint_copy("hdr-max");
    let mut b = base_weights();
    b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    write_weights(d.path(), &b);
    for r in load_both(d.path()) {
        err_contains(
            "header u64::MAX",
            r,
            &["model.safetensors", "header length"],
        );
    }
}

#[test]
fn file_shorter_than_8_bytes_and_empty() {
    for (tag, bytes) in [("short", &b"\x10\0\0\0\0"[..]), ("empty", &b""[..])] {
        let d = checkpoint_copy(tag);
        write_weights(d.path(), bytes);
        for r in load_both(d.path()) {
            err_contains(tag, r, &["model.safetensors", "8-byte"]);
        }
    }
}

#[test]
fn header_is_not_json() {
    let d = checkpoint_copy("hdr-json");
    write_weights(d.path(), &join_raw(b"{\"a\": [1, 2", &[]));
    for r in load_both(d.path()) {
        err_contains("bad json", r, &["model.safetensors", "JSON"]);
    }
}

#[test]
fn header_is_not_utf8() {
    let d = checkpoint_copy("hdr-utf8");
    write_weights(d.path(), &join_raw(b"{\"\xff\xfe\": 1}  ", &[]));
    for r in load_both(d.path()) {
        err_contains("non-utf8", r, &["model.safetensors", "UTF-8"]);
    }
}

#[test]
fn data_offsets_past_end_of_file() {
    // The file is cut short: the last tensor's offsets run past its end.
    let d = checkpoint_copy("truncated");
    let b = base_weights();
    let (header, _) = split(&b);
    let last = header
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .max_by_key(|(_, v)| v["data_offsets"][1].as_u64().unwrap())
        .map(|(k, _)| k.clone())
        .unwrap();
    write_weights(d.path(), &b[..b.len() - 10]);
    for r in load_both(d.path()) {
        err_contains("truncated", r, &["model.safetensors", &last, "truncated"]);
    }
}

#[test]
fn trailing_bytes_after_the_data() {
    let d = checkpoint_copy("trailing");
    let mut b = base_weights();
    b.extend_from_slice(&[0; 12]);
    write_weights(d.path(), &b);
    err_contains(
        "trailing",
        load(d.path()),
        &["model.safetensors", "12 trailing"],
    );
}

/// Two-tensor files with hand-written offsets.
fn two_tensors(a: [u64; 2], b: [u64; 2], data_len: usize) -> Vec<u8> {
    let h = serde_json::json!({
        "a": {"dtype": "F32", "shape": [4], "data_offsets": a},
        "b": {"dtype": "F32", "shape": [4], "data_offsets": b},
    });
    join(h.as_object().unwrap(), &vec![0u8; data_len])
}

#[test]
fn overlapping_offsets_and_gaps_name_a_tensor() {
    for (what, bytes) in [
        ("overlap", two_tensors([0, 16], [8, 24], 24)),
        ("gap", two_tensors([0, 16], [20, 36], 36)),
        ("past end", two_tensors([0, 16], [16, 32], 16)),
        ("reversed", two_tensors([16, 0], [16, 32], 32)),
    ] {
        let e = err_contains(
            what,
            TensorFile::from_bytes(Path::new("x.safetensors"), &bytes),
            &["x.safetensors"],
        );
        assert!(
            e.contains("\"a\"") || e.contains("\"b\""),
            "{what}: names no tensor: {e}"
        );
    }
}

#[test]
fn misaligned_f32_tensors_load_through_the_copy_path() {
    // One extra header byte puts every tensor at an odd file offset: no zero-copy
    // view is possible, so the loader must copy, and compute the same thing.
    let d = checkpoint_copy("misaligned");
    let b = base_weights();
    let (header, data) = split(&b);
    let mut h = serde_json::to_vec(&header).unwrap();
    while h.len() % 8 != 1 {
        h.push(b' ');
    }
    let odd = join_raw(&h, &data);
    write_weights(d.path(), &odd);
    let f = TensorFile::open(&d.join("model.safetensors"), true).unwrap();
    assert!(f.tensors.values().all(|t| t.start % 2 == 1));
    let store = WeightStore::from_files(vec![f]).unwrap();
    let w = store.f32("shared.weight", &[512, 64]).unwrap();
    assert!(
        !w.is_mapped(),
        "an odd offset cannot be a zero-copy f32 view"
    );

    let good = load(base_checkpoint()).unwrap();
    for opts in [LoadOptions { mmap: true }, LoadOptions { mmap: false }] {
        let bad = T5Model::load_with(d.path(), opts).unwrap();
        let (a, b) = (
            good.forward(&[5, 6, 7, 1], &[0, 9]).unwrap(),
            bad.forward(&[5, 6, 7, 1], &[0, 9]).unwrap(),
        );
        assert_eq!(
            a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn dtype_times_shape_mismatch_names_the_tensor() {
    let d = checkpoint_copy("size");
    let (mut header, data) = split(&base_weights());
    let name = "decoder.block.1.layer.2.DenseReluDense.wo.weight";
    header[name]["shape"] = serde_json::json!([64, 127]);
    write_weights(d.path(), &join(&header, &data));
    for r in load_both(d.path()) {
        err_contains("size", r, &["model.safetensors", name, "dtype x shape"]);
    }
}

#[test]
fn unknown_dtypes_are_refused() {
    // Q7 is no safetensors dtype at all.
    let d = checkpoint_copy("q7");
    let (mut header, data) = split(&base_weights());
    header["shared.weight"]["dtype"] = "Q7".into();
    write_weights(d.path(), &join(&header, &data));
    err_contains("Q7", load(d.path()), &["model.safetensors", "Q7"]);

    // F64 and C64 are safetensors dtypes t5edge does not read.
    let name = "encoder.final_layer_norm.weight";
    for dt in ["F64", "C64"] {
        let d = checkpoint_copy("f64");
        let (mut header, data) = split(&base_weights());
        header[name]["dtype"] = dt.into();
        header[name]["shape"] = serde_json::json!([32]); // same 256 bytes
        write_weights(d.path(), &join(&header, &data));
        err_contains(dt, load(d.path()), &["model.safetensors", name, dt]);
        // And with the size no longer matching, the size error names it too.
        let (mut header, data) = split(&base_weights());
        header[name]["dtype"] = dt.into();
        write_weights(d.path(), &join(&header, &data));
        err_contains(
            dt,
            load(d.path()),
            &["model.safetensors", name, "dtype x shape"],
        );
    }
}

#[test]
fn integer_tensor_where_floats_belong() {
    let d = checkpoint_copy("i32");
    let name = "decoder.final_layer_norm.weight";
    let (mut header, data) = split(&base_weights());
    header[name]["dtype"] = "I32".into();
    write_weights(d.path(), &join(&header, &data));
    err_contains("I32", load(d.path()), &[name, "I32", "F32"]);
}

#[test]
fn missing_tensor_is_named() {
    let d = checkpoint_copy("missing");
    let name = "decoder.block.1.layer.1.EncDecAttention.v.weight";
    edit_tensors(d.path(), |t| t.retain(|t| t.name != name));
    err_contains(
        "missing",
        load(d.path()),
        &["model.safetensors", name, "missing"],
    );
}

#[test]
fn shape_that_does_not_fit_the_config_is_named() {
    let d = checkpoint_copy("shape");
    let name = "encoder.block.1.layer.0.SelfAttention.q.weight";
    edit_tensors(d.path(), |ts| {
        let t = ts.iter_mut().find(|t| t.name == name).unwrap();
        t.shape = vec![32, 64];
        t.data.truncate(32 * 64 * 4);
    });
    err_contains(
        "shape",
        load(d.path()),
        &["model.safetensors", name, "[64, 64]", "[32, 64]"],
    );
}

#[test]
fn nan_and_inf_weights_are_reported_by_inspect_and_do_not_crash_generation() {
    let d = checkpoint_copy("nan");
    let name = "decoder.block.0.layer.0.layer_norm.weight";
    edit_tensors(d.path(), |ts| {
        let t = ts.iter_mut().find(|t| t.name == name).unwrap();
        t.data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
        t.data[4..8].copy_from_slice(&f32::INFINITY.to_le_bytes());
    });
    let dir = d.path().to_str().unwrap();
    let out = run_cli(&["inspect", "--model", dir], None, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}", out);
    assert!(
        stdout.contains("NaN/Inf in:") && stdout.contains(&format!("{name} (2 NaN/Inf values)")),
        "{stdout}"
    );
    let clean = run_cli(
        &["inspect", "--model", base_checkpoint().to_str().unwrap()],
        None,
        &[],
    );
    assert!(String::from_utf8_lossy(&clean.stdout).contains("all finite"));

    // NaN logits: generation still ends and returns ids (argmax picks something).
    let m = load(d.path()).unwrap();
    let opts = t5edge::GenerateOptions::default().max_new_tokens(4);
    let ids = t5edge::generate::greedy(&m, &[&[5, 6, 1]], &opts).unwrap();
    assert!(ids[0].len() <= 4 && ids[0].iter().all(|&i| i < 512));
}

#[test]
fn bad_configs_name_the_field() {
    type Edit = fn(&mut serde_json::Map<String, serde_json::Value>);
    let cases: [(&str, Edit); 12] = [
        ("d_model", |c| {
            c.insert("d_model".into(), 0.into());
        }),
        ("num_heads", |c| {
            c.insert("num_heads".into(), (-4).into());
        }),
        ("d_ff", |c| {
            c.insert("d_ff".into(), 128.5.into());
        }),
        ("d_kv", |c| {
            c.insert("d_kv".into(), serde_json::json!(18446744073709551615u64));
        }),
        ("vocab_size", |c| {
            c.insert("vocab_size".into(), "512".into());
        }),
        ("eos_token_id", |c| {
            c.insert("eos_token_id".into(), 512.into());
        }),
        ("decoder_start_token_id", |c| {
            c.insert("decoder_start_token_id".into(), (-1).into());
        }),
        ("num_heads x d_kv", |c| {
            c.insert("num_heads".into(), 65536.into());
            c.insert("d_kv".into(), 65536.into());
        }),
        ("relative_attention_num_buckets", |c| {
            c.insert("relative_attention_num_buckets".into(), 2.into());
        }),
        ("relative_attention_max_distance", |c| {
            c.insert("relative_attention_max_distance".into(), 8.into());
        }),
        ("layer_norm_epsilon", |c| {
            c.insert("layer_norm_epsilon".into(), 1e-60.into());
        }),
        ("feed_forward_proj", |c| {
            c.insert("feed_forward_proj".into(), "gated-gated-relu".into());
        }),
    ];
    for (field, edit) in cases {
        let d = checkpoint_copy("cfg");
        edit_config(d.path(), edit);
        err_contains(field, load(d.path()), &["config.json", field]);
    }
}

#[test]
fn non_json_and_missing_config() {
    let d = checkpoint_copy("cfg-garbage");
    std::fs::write(d.join("config.json"), b"\x00\x01 not json at all").unwrap();
    err_contains("garbage", load(d.path()), &["config.json", "JSON"]);
    std::fs::remove_file(d.join("config.json")).unwrap();
    err_contains("missing", load(d.path()), &["config.json", "No such file"]);
}

#[test]
fn missing_weights() {
    let d = checkpoint_copy("no-weights");
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    err_contains("no weights", load(d.path()), &["model.safetensors"]);
}

fn tokenizer_json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("tokenizer.json")).unwrap()).unwrap()
}

#[test]
fn tokenizer_that_does_not_fit_the_model() {
    // More pieces than the model has rows.
    let d = checkpoint_copy("tok-big");
    let mut t = tokenizer_json(d.path());
    let vocab = t["model"]["vocab"].as_array_mut().unwrap();
    for i in 0..600 {
        vocab.push(serde_json::json!([format!("piece{i}"), -20.0]));
    }
    std::fs::write(d.join("tokenizer.json"), t.to_string()).unwrap();
    let r = t5edge::Tokenizer::from_dir(d.path(), 512);
    err_contains("tok big", r, &["tokenizer.json", "512"]);
    let out = run_cli(
        &["generate", "--model", d.path().to_str().unwrap(), "hello"],
        None,
        &[],
    );
    assert_one_line_error("tok big cli", &out, &["tokenizer.json"]);
}

#[test]
fn tokenizer_with_an_id_beyond_the_embedding() {
    // Few tokens, but one id past the model's rows (WordLevel ids may be sparse).
    let d = checkpoint_copy("tok-sparse");
    let t = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"<unk>": 0, "hello": 600}, "unk_token": "<unk>"}
    });
    std::fs::write(d.join("tokenizer.json"), t.to_string()).unwrap();
    let r = t5edge::Tokenizer::from_dir(d.path(), 512);
    err_contains("tok sparse", r, &["tokenizer.json", "\"hello\"", "600"]);
}

#[test]
fn tokenizer_that_is_garbage() {
    let d = checkpoint_copy("tok-garbage");
    for bytes in [
        &b"not json"[..],
        b"{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}",
        b"\xff\xfe",
    ] {
        std::fs::write(d.join("tokenizer.json"), bytes).unwrap();
        let r = t5edge::Tokenizer::from_dir(d.path(), 512);
        err_contains("tok garbage", r, &["tokenizer.json"]);
        let out = run_cli(
            &["generate", "--model", d.path().to_str().unwrap(), "hi"],
            None,
            &[],
        );
        assert_one_line_error("tok garbage cli", &out, &["tokenizer.json"]);
    }
}

/// Splits the base checkpoint into two shards plus an index in a new dir.
fn sharded(tag: &str) -> TempDir {
    let d = TempDir::new(tag);
    std::fs::copy(base_checkpoint().join("config.json"), d.join("config.json")).unwrap();
    let (t, meta) = tensors_of(&base_weights());
    let (a, b): (Vec<_>, Vec<_>) = t.into_iter().partition(|t| t.name.starts_with("encoder"));
    let mut map = serde_json::Map::new();
    for (file, ts) in [
        ("model-00001-of-00002.safetensors", &a),
        ("model-00002-of-00002.safetensors", &b),
    ] {
        for t in ts.iter() {
            map.insert(t.name.clone(), file.into());
        }
        std::fs::write(d.join(file), t5edge::weights::writer::serialize(ts, &meta)).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(d.join("model.safetensors.index.json"), index.to_string()).unwrap();
    d
}

fn edit_index(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let p = dir.join("model.safetensors.index.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(v["weight_map"].as_object_mut().unwrap());
    std::fs::write(&p, v.to_string()).unwrap();
}

#[test]
fn sharded_checkpoint_loads_and_its_corruptions_are_named() {
    let d = sharded("shards-ok");
    let m = load(d.path()).unwrap();
    let good = load(base_checkpoint()).unwrap();
    assert_eq!(
        m.forward(&[3, 4, 1], &[0]).unwrap(),
        good.forward(&[3, 4, 1], &[0]).unwrap()
    );

    // A shard that does not exist.
    let d = sharded("shards-missing");
    std::fs::remove_file(d.join("model-00002-of-00002.safetensors")).unwrap();
    err_contains(
        "missing shard",
        load(d.path()),
        &["model-00002-of-00002.safetensors"],
    );

    // Paths that leave the directory.
    for evil in [
        "../model.safetensors",
        "/etc/passwd",
        "..",
        "sub/x.safetensors",
        "",
    ] {
        let d = sharded("shards-evil");
        edit_index(d.path(), |m| {
            m.insert("shared.weight".into(), evil.into());
        });
        err_contains(
            evil,
            load(d.path()),
            &["index.json", "shared.weight", "plain file name"],
        );
    }

    // The same tensor in both shards.
    let d = sharded("shards-dup");
    let p = d.join("model-00002-of-00002.safetensors");
    let (mut t, meta) = tensors_of(&std::fs::read(&p).unwrap());
    let (enc, _) = tensors_of(&std::fs::read(d.join("model-00001-of-00002.safetensors")).unwrap());
    let dup = enc
        .into_iter()
        .find(|t| t.name == "encoder.final_layer_norm.weight")
        .unwrap();
    t.push(dup);
    std::fs::write(&p, t5edge::weights::writer::serialize(&t, &meta)).unwrap();
    err_contains(
        "dup",
        load(d.path()),
        &["encoder.final_layer_norm.weight", "also appears in"],
    );

    // The index names a tensor no shard holds: the index is what is wrong.
    let d = sharded("shards-phantom");
    edit_index(d.path(), |m| {
        m.insert(
            "encoder.phantom".into(),
            "model-00001-of-00002.safetensors".into(),
        );
    });
    err_contains("phantom", load(d.path()), &["encoder.phantom"]);

    // An empty weight map: the missing embedding is reported against the index.
    let d = sharded("shards-empty");
    edit_index(d.path(), |m| m.clear());
    err_contains(
        "empty map",
        load(d.path()),
        &["index.json", "shared.weight"],
    );

    // A shard that is a directory.
    let d = sharded("shards-dir");
    let s = d.join("model-00002-of-00002.safetensors");
    std::fs::remove_file(&s).unwrap();
    std::fs::create_dir(&s).unwrap();
    err_contains(
        "dir shard",
        load(d.path()),
        &["model-00002-of-00002.safetensors", "regular file"],
    );

    // An index that is not JSON.
    let d = sharded("shards-garbage");
    std::fs::write(d.join("model.safetensors.index.json"), b"[1, 2").unwrap();
    err_contains("bad index", load(d.path()), &["index.json", "JSON"]);
}

#[test]
fn every_dtype_the_loader_accepts_has_a_size() {
    // A file with one tensor of each readable dtype opens and reports it.
    let mut header = serde_json::Map::new();
    let mut off = 0u64;
    for (name, dt, size) in [
        ("a", "F32", 4),
        ("b", "F16", 2),
        ("c", "BF16", 2),
        ("d", "I8", 1),
        ("e", "I64", 8),
    ] {
        header.insert(
            name.into(),
            serde_json::json!({"dtype": dt, "shape": [3], "data_offsets": [off, off + 3 * size]}),
        );
        off += 3 * size;
    }
    let f = TensorFile::from_bytes(Path::new("m"), &join(&header, &vec![0; off as usize])).unwrap();
    for (name, t) in &f.tensors {
        assert_eq!(t.end - t.start, 3 * t.dtype.size(), "{name}");
    }
    assert_eq!(f.tensors["c"].dtype, DType::BF16);
}
