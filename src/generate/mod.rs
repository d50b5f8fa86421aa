//! Decoding: from encoder output to generated token ids.

mod greedy;

pub use greedy::greedy;

/// Bounds that keep a request from exhausting memory or time: a prompt longer
/// than `max_input_tokens` or a `max_new_tokens` above `max_new_tokens_limit` is
/// refused with a clear error instead of running out of memory.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_input_tokens: usize,
    pub max_new_tokens_limit: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input_tokens: 8192,
            max_new_tokens_limit: 8192,
        }
    }
}

/// What to generate. Names follow HF's `GenerationConfig`.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// EOS is suppressed until this many tokens exist, as HF's
    /// `MinNewTokensLengthLogitsProcessor` does.
    pub min_new_tokens: usize,
    pub limits: Limits,
    /// Greedy only: pick each token with the certified int8 head when the
    /// model has one ([`crate::T5Model::enable_certified_head`]).
    pub exact: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 32,
            min_new_tokens: 0,
            limits: Limits::default(),
            exact: false,
        }
    }
}

impl GenerateOptions {
    pub fn max_new_tokens(mut self, n: usize) -> Self {
        self.max_new_tokens = n;
        self
    }

    pub fn exact(mut self, on: bool) -> Self {
        self.exact = on;
        self
    }

    pub fn min_new_tokens(mut self, n: usize) -> Self {
        self.min_new_tokens = n;
        self
    }

    pub(crate) fn check(&self, prompts: &[&[u32]]) -> crate::Result<()> {
        use crate::Error;
        if self.max_new_tokens > self.limits.max_new_tokens_limit {
            return Err(Error::Request(format!(
                "max_new_tokens {} is above the limit of {}",
                self.max_new_tokens, self.limits.max_new_tokens_limit
            )));
        }
        if self.min_new_tokens > self.max_new_tokens {
            return Err(Error::Request(format!(
                "min_new_tokens {} is above max_new_tokens {}",
                self.min_new_tokens, self.max_new_tokens
            )));
        }
        for p in prompts {
            if p.len() > self.limits.max_input_tokens {
                return Err(Error::Request(format!(
                    "the prompt has {} tokens, above the limit of {}",
                    p.len(),
                    self.limits.max_input_tokens
                )));
            }
        }
        Ok(())
    }
}
