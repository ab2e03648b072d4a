//! Choosing the next token from logits: greedy, temperature, top-k, top-p,
//! repetition penalty; seedable and reproducible.
//!
//! The steps run in llama.cpp's order: repetition penalty on the raw
//! logits, then top-k, temperature, softmax, top-p, and a draw. With
//! `temperature == 0` the draw is an argmax (greedy), so the other filters
//! (which never remove the maximum) do not matter.

use crate::llama::LlmError;

/// Sampling parameters.
///
/// Exists so a generation is fully described by data: the same config and
/// seed over the same logits always give the same tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingConfig {
    /// Softmax temperature; `0` means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; `0` disables.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p`;
    /// `1.0` disables.
    pub top_p: f32,
    /// Divide positive (multiply negative) logits of recently seen tokens
    /// by this; `1.0` disables.
    pub repetition_penalty: f32,
    /// How many of the most recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    /// Never generate a token that would repeat an n-gram of this many
    /// tokens already generated in this answer (the prompt is not
    /// counted, so copying from it stays free); `0` disables. Greedy
    /// decoding stays deterministic, and cannot loop on a line.
    pub no_repeat_ngram: usize,
    /// Seed of the random generator.
    pub seed: u64,
}

/// Sampling settings a model's file recommends (`general.sampling.*`,
/// the keys llama.cpp reads), each `None` when the file says nothing.
///
/// Exists so a model's authors, not memkern, choose its temperature and
/// repetition penalty; [`Self::apply`] lays them over a caller's config
/// where the caller left the default.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SamplingDefaults {
    /// `general.sampling.temp`.
    pub temperature: Option<f32>,
    /// `general.sampling.top_k`.
    pub top_k: Option<usize>,
    /// `general.sampling.top_p`.
    pub top_p: Option<f32>,
    /// `general.sampling.penalty_repeat`.
    pub repetition_penalty: Option<f32>,
    /// `general.sampling.penalty_last_n`.
    pub repeat_last_n: Option<usize>,
}

impl SamplingDefaults {
    /// Reads `general.sampling.*`; a key of the wrong type or an
    /// out-of-range value is ignored (the file's advice is optional).
    pub fn from_gguf(gguf: &crate::gguf::Gguf) -> Self {
        let f = |k: &str| {
            gguf.get(k)
                .and_then(|_| gguf.get_f64(k).ok())
                .map(|v| v as f32)
                .filter(|v| v.is_finite() && *v >= 0.0)
        };
        let n = |k: &str| {
            gguf.get(k)
                .and_then(|_| gguf.get_u32(k).ok())
                .and_then(|v| usize::try_from(v).ok())
        };
        Self {
            temperature: f("general.sampling.temp"),
            top_k: n("general.sampling.top_k"),
            top_p: f("general.sampling.top_p").filter(|p| *p <= 1.0),
            repetition_penalty: f("general.sampling.penalty_repeat").filter(|p| *p > 0.0),
            repeat_last_n: n("general.sampling.penalty_last_n"),
        }
    }

    /// The repetition penalty and window to use when the caller set none:
    /// the file's, else llama.cpp's defaults (penalty 1.0, i.e. off, over
    /// the last 64 tokens; memkern's chat avoids loops with
    /// [`SamplingConfig::no_repeat_ngram`] instead).
    pub fn penalty(&self) -> (f32, usize) {
        (
            self.repetition_penalty.unwrap_or(1.0),
            self.repeat_last_n.unwrap_or(64),
        )
    }
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self::greedy()
    }
}

impl SamplingConfig {
    /// Greedy decoding: always the most likely token.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            repeat_last_n: 64,
            no_repeat_ngram: 0,
            seed: 0,
        }
    }

    /// Temperature sampling with the common chat defaults (top-k 40,
    /// top-p 0.95).
    pub fn temperature(temperature: f32, seed: u64) -> Self {
        Self {
            temperature,
            top_k: 40,
            top_p: 0.95,
            seed,
            ..Self::greedy()
        }
    }

    /// Whether this config always picks the argmax.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks that every parameter is finite and in range.
    pub fn validate(&self) -> Result<(), LlmError> {
        let bad = |m: &str| Err(LlmError::Sampling(m.to_owned()));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad("temperature must be finite and >= 0");
        }
        if !(self.top_p.is_finite() && self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p must be in (0, 1]");
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad("repetition_penalty must be finite and > 0");
        }
        Ok(())
    }
}

/// Tokens that would complete an `n`-gram already in `generated` (after
/// the same `n − 1` tokens that end it); none when `n` is 0 or the answer
/// is shorter than `n`.
fn banned_by_ngrams(generated: &[u32], n: usize) -> Vec<u32> {
    if n == 0 || generated.len() < n {
        return Vec::new();
    }
    let prefix = &generated[generated.len() - (n - 1)..];
    generated
        .windows(n)
        .filter(|w| &w[..n - 1] == prefix)
        .map(|w| w[n - 1])
        .collect()
}

/// A small, fast, seedable generator (xoshiro256** seeded by splitmix64).
///
/// Exists so sampling is reproducible across platforms and crate versions
/// without depending on `rand`'s value-stability policy.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole sequence is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let r = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        r
    }

    /// A uniform value in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Picks tokens from logits according to a [`SamplingConfig`].
///
/// Exists to keep the random state with the parameters, so a session's
/// output is reproducible from `(prompt, config)`.
#[derive(Clone, Debug)]
pub struct Sampler {
    config: SamplingConfig,
    rng: Rng,
}

impl Sampler {
    /// A sampler; fails on out-of-range parameters.
    pub fn new(config: SamplingConfig) -> Result<Self, LlmError> {
        config.validate()?;
        let rng = Rng::new(config.seed);
        Ok(Self { config, rng })
    }

    /// A greedy sampler.
    pub fn greedy() -> Self {
        Self {
            config: SamplingConfig::greedy(),
            rng: Rng::new(0),
        }
    }

    /// The parameters.
    pub fn config(&self) -> &SamplingConfig {
        &self.config
    }

    /// Chooses the next token from `logits` given the tokens so far
    /// (`history`, for the repetition penalty). Non-finite logits are
    /// treated as impossible tokens; all-impossible logits yield token 0.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        self.sample_generated(logits, history, &[])
    }

    /// [`Self::sample`] for a token of an answer whose tokens so far are
    /// `generated` (the end of `history`): tokens that would repeat one of
    /// its n-grams are impossible (see [`SamplingConfig::no_repeat_ngram`]).
    pub fn sample_generated(&mut self, logits: &[f32], history: &[u32], generated: &[u32]) -> u32 {
        let c = &self.config;
        let mut penalised;
        let banned = banned_by_ngrams(generated, c.no_repeat_ngram);
        let logits = if (c.repetition_penalty != 1.0 && !history.is_empty()) || !banned.is_empty() {
            penalised = logits.to_vec();
            if c.repetition_penalty != 1.0 {
                // Once per distinct token, as llama.cpp does.
                let from = history.len().saturating_sub(c.repeat_last_n);
                let mut seen = std::collections::HashSet::new();
                for &id in &history[from..] {
                    if !seen.insert(id) {
                        continue;
                    }
                    if let Some(l) = penalised.get_mut(id as usize) {
                        *l = if *l > 0.0 {
                            *l / c.repetition_penalty
                        } else {
                            *l * c.repetition_penalty
                        };
                    }
                }
            }
            for id in banned {
                if let Some(l) = penalised.get_mut(id as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
            &penalised[..]
        } else {
            logits
        };
        if c.is_greedy() {
            return argmax(logits);
        }
        // Candidates sorted by logit, best first.
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, &l)| (i as u32, l))
            .collect();
        if cand.is_empty() {
            return 0;
        }
        let keep = if c.top_k > 0 {
            c.top_k.min(cand.len())
        } else {
            cand.len()
        };
        if keep < cand.len() {
            cand.select_nth_unstable_by(keep - 1, |a, b| b.1.total_cmp(&a.1));
            cand.truncate(keep);
        }
        cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let max = f64::from(cand[0].1);
        let t = f64::from(c.temperature);
        let mut probs: Vec<f64> = cand
            .iter()
            .map(|&(_, l)| ((f64::from(l) - max) / t).exp())
            .collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        if c.top_p < 1.0 {
            let mut acc = 0.0;
            let mut n = probs.len();
            for (i, p) in probs.iter().enumerate() {
                acc += p;
                if acc >= f64::from(c.top_p) {
                    n = i + 1;
                    break;
                }
            }
            probs.truncate(n);
            cand.truncate(n);
        }
        let total: f64 = probs.iter().sum();
        let mut r = self.rng.next_f64() * total;
        for (p, &(id, _)) in probs.iter().zip(&cand) {
            if r < *p {
                return id;
            }
            r -= p;
        }
        cand.last().map_or(0, |&(id, _)| id)
    }
}

/// Index of the largest finite value (the first one on ties); 0 if none.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

/// The `k` largest logits as `(id, logit)`, best first (ties: lower id
/// first). Used by tests and diagnostics to compare with llama.cpp.
pub fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut v: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.is_nan())
        .map(|(i, &l)| (i as u32, l))
        .collect();
    let k = k.min(v.len());
    if k == 0 {
        return Vec::new();
    }
    v.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(k);
    v.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_repeat_ngram_blocks_a_loop_not_the_prompt() {
        let mut c = SamplingConfig::greedy();
        c.no_repeat_ngram = 3;
        let mut s = Sampler::new(c).expect("valid");
        // Logits prefer token 7; the answer so far is 5 6 7 5 6: a 7 would
        // repeat the 3-gram 5 6 7, so the next best (token 2) wins.
        let mut logits = vec![0.0; 8];
        logits[7] = 5.0;
        logits[2] = 4.0;
        assert_eq!(
            s.sample_generated(&logits, &[5, 6, 7, 5, 6], &[5, 6, 7, 5, 6]),
            2
        );
        // The same tokens in the prompt only: free to copy.
        assert_eq!(s.sample_generated(&logits, &[5, 6, 7, 5, 6], &[5, 6]), 7);
        assert_eq!(banned_by_ngrams(&[1, 2, 1, 2, 1], 2), vec![2, 2]);
        assert!(banned_by_ngrams(&[1, 2], 3).is_empty());
    }

    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::greedy();
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9], &[]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0]), 1);
        assert_eq!(top_k(&[0.1, 3.0, -1.0, 2.9], 2), vec![(1, 3.0), (3, 2.9)]);
    }

    #[test]
    fn repetition_penalty_changes_greedy_choice() {
        let cfg = SamplingConfig {
            repetition_penalty: 2.0,
            ..SamplingConfig::greedy()
        };
        let mut s = Sampler::new(cfg).unwrap();
        // Token 1 (3.0) was just generated: 3.0 / 2 = 1.5 < 2.9.
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9], &[1]), 3);
    }

    #[test]
    fn same_seed_same_tokens_and_top_k_one_is_greedy() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 17) as f32 / 4.0).collect();
        let draw = |seed| {
            let mut s = Sampler::new(SamplingConfig::temperature(1.0, seed)).unwrap();
            (0..50).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let cfg = SamplingConfig {
            top_k: 1,
            ..SamplingConfig::temperature(5.0, 1)
        };
        let mut s = Sampler::new(cfg).unwrap();
        for _ in 0..20 {
            assert_eq!(s.sample(&logits, &[]), argmax(&logits));
        }
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // p ≈ [0.84, 0.11, 0.04, ...]: top_p 0.5 keeps the first token only.
        let logits = [5.0, 3.0, 2.0, -5.0];
        let cfg = SamplingConfig {
            top_p: 0.5,
            top_k: 0,
            ..SamplingConfig::temperature(1.0, 3)
        };
        let mut s = Sampler::new(cfg).unwrap();
        for _ in 0..50 {
            assert_eq!(s.sample(&logits, &[]), 0);
        }
    }

    #[test]
    fn temperature_sampling_follows_the_distribution() {
        let logits = [0.0f32, (3.0f32).ln()]; // p = [0.25, 0.75]
        let cfg = SamplingConfig {
            top_k: 0,
            top_p: 1.0,
            ..SamplingConfig::temperature(1.0, 11)
        };
        let mut s = Sampler::new(cfg).unwrap();
        let ones = (0..4000).filter(|_| s.sample(&logits, &[]) == 1).count();
        assert!((2800..3200).contains(&ones), "{ones}");
    }

    #[test]
    fn bad_parameters_are_refused() {
        for cfg in [
            SamplingConfig {
                temperature: -1.0,
                ..SamplingConfig::greedy()
            },
            SamplingConfig {
                top_p: 0.0,
                ..SamplingConfig::greedy()
            },
            SamplingConfig {
                repetition_penalty: f32::NAN,
                ..SamplingConfig::greedy()
            },
        ] {
            assert!(Sampler::new(cfg).is_err());
        }
    }
}
