//! Hugging Face model ids (`google/t5-efficient-tiny-nl2`) resolved offline in
//! the standard Hugging Face cache layout:
//! `<cache>/models--google--t5-efficient-tiny-nl2/snapshots/<commit>/`, the
//! commit read from `refs/main` (or the ref given as `id@ref`, or a commit hash
//! as `id@<hash>`). Built with the `hub` feature (`cargo build --release
//! --features hub`), a model missing from the cache is downloaded into it with
//! the hf-hub crate first; without it, nothing is downloaded.

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// The hub cache directory, as `huggingface_hub` finds it: `$HF_HUB_CACHE`,
/// else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
/// `~/.cache/huggingface/hub`.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("HF_HUB_CACHE")
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("XDG_CACHE_HOME").map(|h| h.join("huggingface").join("hub")))
        .or_else(|| var("HOME").map(|h| h.join(".cache").join("huggingface").join("hub")))
}

/// Whether `s` looks like a hub model id (`org/name`, optionally `@rev`)
/// rather than a filesystem path.
pub fn looks_like_model_id(s: &str) -> bool {
    let id = s.split('@').next().unwrap_or(s);
    let parts: Vec<&str> = id.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// Finds `model_id` (`org/name[@revision]`) in the cache directory `cache`.
pub fn resolve_in(cache: &Path, model_id: &str) -> Result<PathBuf> {
    let (id, rev) = match model_id.split_once('@') {
        Some((id, rev)) => (id, rev),
        None => (model_id, "main"),
    };
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    let missing = || {
        Error::Other(format!(
            "{model_id} is not in the local Hugging Face cache (looked in {}); \
             download it with `huggingface-cli download {id}`",
            repo.display()
        ))
    };
    let snapshots = repo.join("snapshots");
    let commit = match std::fs::read_to_string(repo.join("refs").join(rev)) {
        Ok(c) => c.trim().to_string(),
        // Not a ref name: maybe a commit hash.
        Err(_) if snapshots.join(rev).is_dir() => rev.to_string(),
        Err(_) => return Err(missing()),
    };
    let dir = snapshots.join(&commit);
    if !dir.join("config.json").is_file() {
        return Err(Error::Other(format!(
            "{model_id}: the cached snapshot {} has no config.json (an incomplete download?); \
             download it with `huggingface-cli download {id}`",
            dir.display()
        )));
    }
    Ok(dir)
}

/// Finds `model_id` in the local Hugging Face cache ([`cache_dir`]),
/// downloading it there first when built with the `hub` feature.
/// What a user names a model by: a checkpoint directory, or failing that a
/// hub id found in the cache ([`resolve`]). Errors say which was expected.
pub fn locate(model: &Path) -> Result<PathBuf> {
    let as_str = model.to_str().unwrap_or("");
    if !model.is_dir() && looks_like_model_id(as_str) {
        return resolve(as_str);
    }
    if !model.exists() {
        return Err(Error::Other(format!(
            "{}: no such directory (expected a T5 checkpoint directory)",
            model.display()
        )));
    }
    if !model.is_dir() {
        return Err(Error::Other(format!(
            "{}: not a directory (expected a T5 checkpoint directory)",
            model.display()
        )));
    }
    Ok(model.to_path_buf())
}

pub fn resolve(model_id: &str) -> Result<PathBuf> {
    let cache = cache_dir().ok_or_else(|| {
        Error::Other(format!(
            "{model_id}: no Hugging Face cache directory (set HF_HOME or HOME)"
        ))
    })?;
    match resolve_in(&cache, model_id) {
        Ok(dir) => Ok(dir),
        #[cfg(feature = "hub")]
        Err(offline) => {
            download(&cache, model_id)
                .map_err(|e| Error::Other(format!("{offline}; downloading it failed too: {e}")))?;
            resolve_in(&cache, model_id)
        }
        #[cfg(not(feature = "hub"))]
        Err(e) => Err(e),
    }
}

/// Fetches config, tokenizer and weights (single file or sharded) into the
/// cache with hf-hub, which writes the standard layout `resolve_in` reads.
#[cfg(feature = "hub")]
fn download(cache: &Path, model_id: &str) -> std::result::Result<(), String> {
    let (id, rev) = match model_id.split_once('@') {
        Some((id, rev)) => (id, rev.to_string()),
        None => (model_id, "main".to_string()),
    };
    let api = hf_hub::api::sync::ApiBuilder::new()
        .with_cache_dir(cache.to_path_buf())
        .build()
        .map_err(|e| e.to_string())?;
    let repo = api.repo(hf_hub::Repo::with_revision(
        id.to_string(),
        hf_hub::RepoType::Model,
        rev,
    ));
    repo.get("config.json")
        .map_err(|e| format!("config.json: {e}"))?;
    for optional in ["tokenizer.json", "generation_config.json"] {
        let _ = repo.get(optional);
    }
    if repo.get("model.safetensors").is_ok() {
        return Ok(());
    }
    let index = repo
        .get("model.safetensors.index.json")
        .map_err(|e| format!("no model.safetensors or model.safetensors.index.json: {e}"))?;
    let text = std::fs::read_to_string(&index).map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let mut shards: Vec<&str> = v["weight_map"]
        .as_object()
        .map(|m| m.values().filter_map(|f| f.as_str()).collect())
        .unwrap_or_default();
    shards.sort_unstable();
    shards.dedup();
    for s in shards {
        // The same rule the loader applies: shards sit beside the index.
        if s.contains('/') || s.contains('\\') || s == ".." {
            return Err(format!("shard name {s:?} is not a plain file name"));
        }
        repo.get(s).map_err(|e| format!("{s}: {e}"))?;
    }
    Ok(())
}
