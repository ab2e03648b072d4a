//! Anchors: texts whose next-token distributions the adapter must leave
//! as the base model has them.
//!
//! Training on a handful of facts alone teaches the adapter to steer
//! every text towards them, and the base model's general ability suffers
//! (perplexity on unrelated text nearly doubled in the bench). An anchor
//! holds the base model's full next-token distribution at each of its
//! positions, computed once; the trainer adds the KL divergence
//! `KL(p_base ‖ p_adapted)` over those positions to the loss. Unlike
//! training on sampled text, the target is the distribution itself, so
//! there is nothing to memorise: the only way to lower the term is to
//! leave unrelated text alone.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Tensor, TensorData};

use super::adapter::Adapter;
use super::error::LoraError;
use super::tokenizer_err;
use crate::llama::{Llama, Numerics};
use crate::{Llm, Sampler};

/// Plain paragraphs on everyday topics (none about the user, none from
/// the benchmark's held-out text): the adapter must not change how the
/// model continues ordinary prose.
pub const ANCHOR_TEXTS: [&str; 6] = [
    "The old harbour town grew rich on the salt trade in the fourteenth century. Merchants built \
     tall stone houses along the quay, and the market square still holds the weigh house where \
     every cargo was measured and taxed before it could be sold.",
    "To bake a simple loaf, mix flour, water, salt and a little yeast, then knead the dough until \
     it is smooth and springy. Let it rise in a warm place for an hour, shape it, let it rise \
     again and bake it in a hot oven until the crust is brown.",
    "A bicycle turns the push of your legs into motion through a chain that links the pedals to \
     the rear wheel. Gears change how far the wheel turns for each turn of the pedals, so you can \
     climb steep hills slowly or ride fast on flat roads.",
    "In most programming languages a function takes some inputs, does a piece of work and returns \
     a result. Splitting a program into small functions with clear names makes it easier to test, \
     to read and to change later without breaking something else.",
    "Thunderstorms form when warm, moist air rises quickly into colder air above it. As the air \
     cools, its water vapour condenses into clouds, and the strong currents inside them separate \
     electric charges until lightning jumps between the cloud and the ground.",
    "She opened the letter slowly, as if the words inside might change if she hurried. It was \
     from her brother, who had not written in years, and it said only that he was coming home \
     for the winter and hoped there would be room for him at the table.",
];

/// General questions asked in the chat layout: the adapter must answer
/// them as the base model does.
pub const ANCHOR_QUESTIONS: [&str; 6] = [
    "What is the capital of France?",
    "How do I boil an egg?",
    "Can you give me a tip for sleeping better?",
    "What is a prime number?",
    "Why is the sky blue?",
    "Write a short greeting for a birthday card.",
];

/// Longest base-model answer an anchor question keeps (tokens).
const ANSWER_TOKENS: usize = 40;

/// A token sequence with the base model's log-probabilities at chosen
/// positions.
///
/// Exists so the base model's behaviour on unrelated text is computed
/// once, before training, and the trainer can hold the adapted model to
/// it at every step. Cloning is cheap (tensors share their data).
#[derive(Clone)]
pub struct Anchor {
    tokens: Vec<u32>,
    rows: Vec<usize>,
    base_logp: Tensor<2>,
}

impl std::fmt::Debug for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anchor")
            .field("tokens", &self.tokens.len())
            .field("rows", &self.rows.len())
            .finish_non_exhaustive()
    }
}

impl Anchor {
    /// An anchor over `tokens` that keeps the next-token distributions
    /// predicted at positions `from..tokens.len() - 1` (each predicts the
    /// token after it). Runs the base model once, in the f32 numerics
    /// training uses.
    pub fn new(model: &Llama, tokens: Vec<u32>, from: usize) -> Result<Self, LoraError> {
        if tokens.len() < 2 || from + 1 >= tokens.len() {
            return Err(LoraError::BadData(
                "an anchor needs at least one position to keep".into(),
            ));
        }
        let rows: Vec<usize> = (from..tokens.len() - 1).collect();
        let logits = model.logits_at(&tokens, &rows, None, Numerics::F32)?;
        let device = logits.device();
        let base_logp = log_softmax(logits, 1);
        // Materialise it now, so every step reads numbers rather than
        // re-running the base model.
        let shape = base_logp.dims();
        let data = base_logp
            .try_into_vec_as::<f32>()
            .map_err(|e| LoraError::Backend(format!("reading base log-probabilities: {e:?}")))?;
        let base_logp = Tensor::<2>::from_data(TensorData::new(data, shape), &device);
        Ok(Self {
            tokens,
            rows,
            base_logp,
        })
    }

    /// Positions kept.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Always false: an anchor keeps at least one position.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Mean over the kept positions of `KL(p_base ‖ p_adapted)` (nats), as
    /// a one-element tensor, tracked when the adapter is.
    pub fn divergence(&self, model: &Llama, adapter: &Adapter) -> Result<Tensor<1>, LoraError> {
        let logits = model.logits_at(&self.tokens, &self.rows, Some(adapter), Numerics::F32)?;
        let logp = log_softmax(logits, 1);
        let base = self.base_logp.clone();
        let kl = base.clone().exp() * (base - logp);
        Ok(kl.sum().div_scalar(self.rows.len() as f32))
    }
}

/// The standard anchor set: [`ANCHOR_TEXTS`] as prose (every position)
/// and [`ANCHOR_QUESTIONS`] in the closed-book chat layout with the base
/// model's own greedy answers (the answer positions). Costs one greedy
/// generation per question.
pub fn standard_anchors(llm: &Llm) -> Result<Vec<Anchor>, LoraError> {
    let tok = llm.tokenizer();
    let mut out = Vec::with_capacity(ANCHOR_TEXTS.len() + ANCHOR_QUESTIONS.len());
    for text in ANCHOR_TEXTS {
        let ids = tok.encode_literal(text).map_err(tokenizer_err)?;
        out.push(Anchor::new(llm.model(), ids, 0)?);
    }
    for q in ANCHOR_QUESTIONS {
        let mut ids = super::chat_prompt(tok, q).map_err(tokenizer_err)?;
        let start = ids.len();
        let mut s = llm.session();
        s.prefill(&ids)?;
        let g = s.generate_with(Sampler::greedy(), ANSWER_TOKENS, |_| true)?;
        ids.extend_from_slice(&g.ids);
        out.push(Anchor::new(llm.model(), ids, start - 1)?);
    }
    Ok(out)
}
