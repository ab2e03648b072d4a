//! Training an adapter on the device: burn autodiff through the frozen
//! base model, Adam from `burn-optim`, loss on answer tokens only.

use std::path::Path;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};

use super::adapter::Adapter;
use super::anchor::Anchor;
use super::error::LoraError;
use crate::llama::{Llama, Numerics};

/// One training sequence: a prompt and the answer the model should give.
///
/// Exists so the loss covers the answer tokens only (the prompt is
/// context, not something to memorise) and a sequence without an answer
/// cannot be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    tokens: Vec<u32>,
    answer_start: usize,
}

impl Example {
    /// `prompt` followed by `answer`; both must be non-empty.
    pub fn new(mut prompt: Vec<u32>, answer: &[u32]) -> Result<Self, LoraError> {
        if prompt.is_empty() || answer.is_empty() {
            return Err(LoraError::BadData(
                "an example needs a prompt and an answer".into(),
            ));
        }
        let answer_start = prompt.len();
        prompt.extend_from_slice(answer);
        Ok(Self {
            tokens: prompt,
            answer_start,
        })
    }

    /// Every token, prompt first.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Number of answer tokens (the tokens the loss is taken over).
    pub fn answer_len(&self) -> usize {
        self.tokens.len() - self.answer_start
    }

    /// Rows whose logits predict the answer, and the ids they must predict.
    fn rows_targets(&self) -> (Vec<usize>, Vec<i64>) {
        let rows = (self.answer_start - 1..self.tokens.len() - 1).collect();
        let targets = self.tokens[self.answer_start..]
            .iter()
            .map(|&t| i64::from(t))
            .collect();
        (rows, targets)
    }
}

/// The losses of one training step, measured before its update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLoss {
    /// Mean per-token negative log-likelihood of the batch's answers
    /// (nats): how well the adapter knows the facts.
    pub answer: f32,
    /// Mean KL divergence from the base model on the step's anchors
    /// (nats per position): how far unrelated text has drifted. `None`
    /// when the run has no anchors.
    pub anchor: Option<f32>,
}

/// Hyper-parameters of a training run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainConfig {
    /// Optimizer steps to run in total.
    pub steps: usize,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Examples per step (their summed token loss is one backward pass).
    pub batch: usize,
    /// Seed of the example order.
    pub seed: u64,
    /// Weight of the anchor term (mean KL divergence from the base model
    /// on unrelated text, see [`Anchor`]) against the answer loss; 0
    /// trains on the answers alone.
    pub anchor_weight: f32,
    /// Anchors evaluated per step (taken in turn from the trainer's set).
    pub anchors_per_step: usize,
}

impl TrainConfig {
    /// True when the run has an anchor term (a positive weight and at
    /// least one anchor a step): only then are anchors worth computing.
    pub fn uses_anchors(&self) -> bool {
        self.anchor_weight > 0.0 && self.anchors_per_step > 0
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 60,
            learning_rate: 2e-3,
            batch: 8,
            seed: 0x5eed,
            anchor_weight: 1.0,
            anchors_per_step: 2,
        }
    }
}

/// Summed negative log-likelihood (nats) of `ex`'s answer under `model`
/// with `adapter`, as a one-element tensor (tracked when the adapter is).
fn answer_nll(
    model: &Llama,
    adapter: Option<&Adapter>,
    ex: &Example,
    numerics: Numerics,
) -> Result<Tensor<1>, LoraError> {
    let (rows, targets) = ex.rows_targets();
    let n = rows.len();
    let logits = model.logits_at(&ex.tokens, &rows, adapter, numerics)?;
    let device = logits.device();
    let t = Tensor::<2, Int>::from_data(TensorData::new(targets, [n, 1]), &device);
    Ok(log_softmax(logits, 1).gather(1, t).sum().neg())
}

fn scalar(t: Tensor<1>) -> Result<f32, LoraError> {
    t.try_into_vec_as::<f32>()
        .map_err(|e| LoraError::Backend(format!("reading the loss: {e:?}")))?
        .first()
        .copied()
        .ok_or_else(|| LoraError::Backend("empty loss tensor".into()))
}

/// Mean per-token negative log-likelihood of the answers of `examples`
/// (no gradients): the training loss, evaluated.
pub fn mean_answer_nll(
    model: &Llama,
    adapter: Option<&Adapter>,
    examples: &[Example],
    numerics: Numerics,
) -> Result<f32, LoraError> {
    let (mut sum, mut count) = (0f64, 0usize);
    for ex in examples {
        sum += f64::from(scalar(answer_nll(model, adapter, ex, numerics)?)?);
        count += ex.answer_len();
    }
    if count == 0 {
        return Err(LoraError::BadData("no examples".into()));
    }
    Ok((sum / count as f64) as f32)
}

/// Trains an adapter on a frozen base model.
///
/// Exists to keep the loop's state together — the trainable adapter, the
/// optimizer's moments, the step count and the example order — so a run
/// can stop after any step, be checkpointed and resumed. The base model's
/// weights are plain (non-autodiff) tensors and stay constants; only the
/// adapter's `A`/`B` get gradients. Training runs in [`Numerics::F32`]
/// (ggml's 8-bit rounding has no useful gradient).
pub struct Trainer<'m> {
    model: &'m Llama,
    adapter: Option<Adapter>,
    optim: ModuleOptimizer,
    examples: Vec<Example>,
    anchors: Vec<Anchor>,
    order: Vec<usize>,
    cursor: usize,
    step: usize,
    rng: u64,
    config: TrainConfig,
}

impl std::fmt::Debug for Trainer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("step", &self.step)
            .field("examples", &self.examples.len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<'m> Trainer<'m> {
    /// A trainer of `adapter` (fresh or resumed) on `model` over
    /// `examples`. Fails on an empty example set or a zero batch.
    pub fn new(
        model: &'m Llama,
        adapter: Adapter,
        examples: Vec<Example>,
        config: TrainConfig,
    ) -> Result<Self, LoraError> {
        if examples.is_empty() {
            return Err(LoraError::BadData("no training examples".into()));
        }
        if config.batch == 0 || !config.learning_rate.is_finite() || config.learning_rate <= 0.0 {
            return Err(LoraError::BadData(
                "batch and learning rate must be positive".into(),
            ));
        }
        if !config.anchor_weight.is_finite() || config.anchor_weight < 0.0 {
            return Err(LoraError::BadData(
                "the anchor weight must be zero or positive".into(),
            ));
        }
        let order = (0..examples.len()).collect();
        let mut t = Self {
            model,
            adapter: Some(adapter.train()),
            optim: AdamConfig::new().init(),
            examples,
            anchors: Vec::new(),
            order,
            cursor: 0,
            step: 0,
            rng: config.seed | 1,
            config,
        };
        t.shuffle();
        Ok(t)
    }

    /// Holds the adapted model to the base model's distributions on
    /// `anchors` (see [`Anchor`], [`TrainConfig::anchor_weight`]). The
    /// anchors a step uses follow from the step number, so a resumed run
    /// sees the same ones.
    pub fn with_anchors(mut self, anchors: Vec<Anchor>) -> Self {
        self.anchors = anchors;
        self
    }

    fn shuffle(&mut self) {
        // Fisher–Yates with xorshift64: a reproducible order per seed.
        for i in (1..self.order.len()).rev() {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let j = (self.rng % (i as u64 + 1)) as usize;
            self.order.swap(i, j);
        }
    }

    /// Steps run so far (including those of a resumed checkpoint).
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// True once [`TrainConfig::steps`] steps have run.
    pub fn finished(&self) -> bool {
        self.step >= self.config.steps
    }

    /// One optimizer step over the next batch; returns the losses before
    /// the update.
    pub fn step(&mut self) -> Result<StepLoss, LoraError> {
        let adapter = self
            .adapter
            .take()
            .ok_or_else(|| LoraError::Backend("trainer lost its adapter".into()))?;
        let (loss, value) = match self.batch_loss(&adapter) {
            Ok(v) => v,
            Err(e) => {
                self.adapter = Some(adapter);
                return Err(e);
            }
        };
        let grads = GradientsParams::from_grads(loss.backward(), &adapter);
        self.adapter = Some(self.optim.step(self.config.learning_rate, adapter, grads));
        self.step += 1;
        Ok(value)
    }

    /// The next batch's tracked loss and its parts: the mean over its
    /// examples of each example's mean per-token answer loss (each
    /// example weighs the same whatever its length: a long answer must
    /// not drown a short fact), plus the weighted mean anchor divergence.
    fn batch_loss(&mut self, adapter: &Adapter) -> Result<(Tensor<1>, StepLoss), LoraError> {
        let n = self.config.batch.min(self.examples.len());
        let mut total: Option<Tensor<1>> = None;
        for _ in 0..n {
            if self.cursor == self.order.len() {
                self.cursor = 0;
                self.shuffle();
            }
            let ex = &self.examples[self.order[self.cursor]];
            self.cursor += 1;
            let l = answer_nll(self.model, Some(adapter), ex, Numerics::F32)?
                .div_scalar(ex.answer_len() as f32);
            total = Some(match total {
                Some(t) => t + l,
                None => l,
            });
        }
        let answer = total
            .ok_or_else(|| LoraError::BadData("empty batch".into()))?
            .div_scalar(n as f32);
        let answer_value = scalar(answer.clone())?;
        let mut loss = answer;
        let mut anchor_value = None;
        let per_step = self.config.anchors_per_step.min(self.anchors.len());
        if per_step > 0 && self.config.uses_anchors() {
            let mut kl: Option<Tensor<1>> = None;
            for i in 0..per_step {
                let anchor = &self.anchors[(self.step * per_step + i) % self.anchors.len()];
                let d = anchor.divergence(self.model, adapter)?;
                kl = Some(match kl {
                    Some(t) => t + d,
                    None => d,
                });
            }
            if let Some(kl) = kl {
                let kl = kl.div_scalar(per_step as f32);
                anchor_value = Some(scalar(kl.clone())?);
                loss = loss + kl.mul_scalar(self.config.anchor_weight);
            }
        }
        let value = StepLoss {
            answer: answer_value,
            anchor: anchor_value,
        };
        let total_value = answer_value + self.config.anchor_weight * anchor_value.unwrap_or(0.0);
        if !total_value.is_finite() {
            return Err(LoraError::Diverged {
                step: self.step,
                loss: total_value,
            });
        }
        if !loss.is_tracked() {
            return Err(LoraError::Backend(
                "the loss is not tracked by autodiff (adapter not trainable)".into(),
            ));
        }
        Ok((loss, value))
    }

    /// The adapter as it stands, ready for inference (no autodiff).
    pub fn adapter(&self) -> Result<Adapter, LoraError> {
        self.adapter
            .as_ref()
            .map(Module::valid)
            .ok_or_else(|| LoraError::Backend("trainer lost its adapter".into()))
    }

    /// Saves the optimizer state and step count next to an adapter file
    /// at `adapter_path` (`<path>.optim`, `<path>.step`), so
    /// [`Self::resume`] continues where this run stopped.
    pub fn save_checkpoint(&self, adapter_path: &Path) -> Result<(), LoraError> {
        let (optim, step) = checkpoint_paths(adapter_path);
        let bytes = self
            .optim
            .into_bytes()
            .map_err(|e| LoraError::Backend(format!("saving optimizer state: {e:?}")))?;
        let io = |p: &Path| {
            let p = p.display().to_string();
            move |source| LoraError::Io { path: p, source }
        };
        crate::atomic::write_atomic(&optim, &bytes).map_err(io(&optim))?;
        let line = format!("{} {}\n", self.step, self.rng);
        crate::atomic::write_atomic(&step, line.as_bytes()).map_err(io(&step))
    }

    /// Restores the optimizer state and step count saved by
    /// [`Self::save_checkpoint`] for the adapter this trainer was built
    /// with (read from `adapter_path`). Missing checkpoint files leave the
    /// trainer fresh and return `false`.
    pub fn resume(&mut self, adapter_path: &Path) -> Result<bool, LoraError> {
        let (optim, step) = checkpoint_paths(adapter_path);
        let (Ok(bytes), Ok(line)) = (std::fs::read(&optim), std::fs::read_to_string(&step)) else {
            return Ok(false);
        };
        let mut parts = line.split_whitespace().map(str::parse::<u64>);
        let (Some(Ok(steps)), Some(Ok(rng))) = (parts.next(), parts.next()) else {
            return Err(LoraError::Format(format!(
                "{} is not a training checkpoint",
                step.display()
            )));
        };
        let fresh = AdamConfig::new().init();
        self.optim = fresh
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
            .map_err(|e| LoraError::Format(format!("optimizer state: {e:?}")))?;
        self.step = usize::try_from(steps).unwrap_or(usize::MAX);
        self.rng = rng | 1;
        self.shuffle();
        Ok(true)
    }
}

fn checkpoint_paths(adapter_path: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut optim = adapter_path.as_os_str().to_owned();
    optim.push(".optim");
    let mut step = adapter_path.as_os_str().to_owned();
    step.push(".step");
    (optim.into(), step.into())
}

/// Removes the checkpoint files of `adapter_path` (after a finished run).
pub fn remove_checkpoint(adapter_path: &Path) {
    let (optim, step) = checkpoint_paths(adapter_path);
    let _ = std::fs::remove_file(optim);
    let _ = std::fs::remove_file(step);
}
