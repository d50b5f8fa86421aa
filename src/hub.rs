//! Hugging Face model ids (`google/t5-efficient-tiny-nl2`) resolved offline in
//! the standard Hugging Face cache layout:
//! `<cache>/models--google--t5-efficient-tiny-nl2/snapshots/<commit>/`, the
//! commit read from `refs/main` (or the ref given as `id@ref`, or a commit hash
//! as `id@<hash>`). Nothing is downloaded.

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

/// Finds `model_id` in the local Hugging Face cache ([`cache_dir`]).
pub fn resolve(model_id: &str) -> Result<PathBuf> {
    let cache = cache_dir().ok_or_else(|| {
        Error::Other(format!(
            "{model_id}: no Hugging Face cache directory (set HF_HOME or HOME)"
        ))
    })?;
    resolve_in(&cache, model_id)
}
