//! The adapter itself: low-rank `A`/`B` pairs per layer and projection,
//! applied beside the quantised base weights.

use burn::module::ParamId;
use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use memkern_core::cube::{MAX_LORA_RANK, TargetModules};

use super::error::LoraError;
use crate::fingerprint::Fingerprint;
use crate::llama::{Llama, LlamaConfig};

/// One projection of a transformer block, as LoRA targets name them.
///
/// Exists so code can iterate over projections with their sizes and file
/// names instead of repeating seven field names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// Attention query projection.
    Q,
    /// Attention key projection.
    K,
    /// Attention value projection.
    V,
    /// Attention output projection.
    O,
    /// MLP gate projection.
    Gate,
    /// MLP up projection.
    Up,
    /// MLP down projection.
    Down,
}

impl Target {
    /// Every target, in [`TargetModules`] bit order.
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// The bit of this target in a [`TargetModules`] set.
    pub fn bit(self) -> TargetModules {
        match self {
            Target::Q => TargetModules::Q,
            Target::K => TargetModules::K,
            Target::V => TargetModules::V,
            Target::O => TargetModules::O,
            Target::Gate => TargetModules::GATE,
            Target::Up => TargetModules::UP,
            Target::Down => TargetModules::DOWN,
        }
    }

    /// The GGUF tensor name of the base weight in block `layer`
    /// (`blk.{layer}.attn_q.weight`, …), which llama.cpp's LoRA files
    /// extend with `.lora_a` / `.lora_b`.
    pub fn gguf_name(self, layer: usize) -> String {
        let t = match self {
            Target::Q => "attn_q",
            Target::K => "attn_k",
            Target::V => "attn_v",
            Target::O => "attn_output",
            Target::Gate => "ffn_gate",
            Target::Up => "ffn_up",
            Target::Down => "ffn_down",
        };
        format!("blk.{layer}.{t}.weight")
    }

    /// `(in, out)` of this projection in a model with `config`.
    pub fn dims(self, c: &LlamaConfig) -> (usize, usize) {
        let q = c.heads * c.head_dim;
        match self {
            Target::Q => (c.hidden, q),
            Target::K | Target::V => (c.hidden, c.kv_dim()),
            Target::O => (q, c.hidden),
            Target::Gate | Target::Up => (c.hidden, c.ffn),
            Target::Down => (c.ffn, c.hidden),
        }
    }
}

/// Rank, alpha and targets of an adapter.
///
/// Exists so a configuration is validated once (rank within the core's
/// limit, alpha finite and positive, at least one target) and every
/// adapter built from it is well-formed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoraConfig {
    rank: usize,
    alpha: f32,
    targets: TargetModules,
}

impl LoraConfig {
    /// A configuration, or [`LoraError::BadConfig`] when the rank is 0 or
    /// above [`MAX_LORA_RANK`], alpha is not finite and positive, or
    /// `targets` is empty or names unknown projections.
    pub fn new(rank: usize, alpha: f32, targets: TargetModules) -> Result<Self, LoraError> {
        if rank == 0 || rank > usize::from(MAX_LORA_RANK) {
            return Err(LoraError::BadConfig(format!(
                "rank {rank} outside 1..={MAX_LORA_RANK}"
            )));
        }
        if !alpha.is_finite() || alpha <= 0.0 {
            return Err(LoraError::BadConfig(format!(
                "alpha {alpha} must be finite and > 0"
            )));
        }
        if targets.0 == 0 || targets.0 & !TargetModules::ALL.0 != 0 {
            return Err(LoraError::BadConfig(format!(
                "targets {:#x} must be a non-empty subset of q,k,v,o,gate,up,down",
                targets.0
            )));
        }
        Ok(Self {
            rank,
            alpha,
            targets,
        })
    }

    /// LoRA rank `r`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// LoRA alpha; the update is scaled by `alpha / rank`.
    pub fn alpha(&self) -> f32 {
        self.alpha
    }

    /// The projections adapted.
    pub fn targets(&self) -> TargetModules {
        self.targets
    }

    /// `alpha / rank`, the factor on `B(Ax)`.
    pub fn scale(&self) -> f32 {
        self.alpha / self.rank as f32
    }

    /// True when `target` is adapted.
    pub fn has(&self, target: Target) -> bool {
        self.targets.0 & target.bit().0 != 0
    }

    /// The adapted targets, in bit order.
    pub fn target_list(&self) -> impl Iterator<Item = Target> + '_ {
        Target::ALL.into_iter().filter(|t| self.has(*t))
    }
}

/// A trainable parameter with an id derived from its place in the adapter
/// (`layer`, `target`, 0 for `A` / 1 for `B`), so optimizer state saved
/// with a checkpoint finds its parameters again after the adapter is
/// re-read from a file.
fn param(layer: usize, target: Target, which: u64, t: Tensor<2>) -> Param<Tensor<2>> {
    let slot = Target::ALL.iter().position(|x| *x == target).unwrap_or(0) as u64;
    let mut p = Param::from_tensor(t);
    p.id = ParamId::from(0x4c6f_5241_0000_0000 | (layer as u64) << 8 | slot << 1 | which);
    p
}

/// One low-rank update `ΔW = A·B` of a projection.
///
/// `a` is `[in, rank]`, `b` is `[rank, out]`; the forward pass adds
/// `scale · (x·A)·B` to the base projection's output.
#[derive(Module, Debug)]
pub struct LoraPair {
    /// Down-projection `A`, `[in, rank]`.
    pub a: Param<Tensor<2>>,
    /// Up-projection `B`, `[rank, out]`.
    pub b: Param<Tensor<2>>,
}

impl LoraPair {
    /// `scale · (x·A)·B` for `x` of `[n, in]`.
    pub fn delta(&self, x: Tensor<2>, scale: f32) -> Tensor<2> {
        x.matmul(self.a.val())
            .matmul(self.b.val())
            .mul_scalar(scale)
    }
}

/// The adapted projections of one transformer block.
#[derive(Module, Debug)]
pub struct LayerLora {
    /// Query projection update.
    pub q: Option<LoraPair>,
    /// Key projection update.
    pub k: Option<LoraPair>,
    /// Value projection update.
    pub v: Option<LoraPair>,
    /// Output projection update.
    pub o: Option<LoraPair>,
    /// MLP gate update.
    pub gate: Option<LoraPair>,
    /// MLP up update.
    pub up: Option<LoraPair>,
    /// MLP down update.
    pub down: Option<LoraPair>,
}

impl LayerLora {
    /// The pair for `target`, if adapted.
    pub fn get(&self, target: Target) -> Option<&LoraPair> {
        match target {
            Target::Q => self.q.as_ref(),
            Target::K => self.k.as_ref(),
            Target::V => self.v.as_ref(),
            Target::O => self.o.as_ref(),
            Target::Gate => self.gate.as_ref(),
            Target::Up => self.up.as_ref(),
            Target::Down => self.down.as_ref(),
        }
    }

    fn slot(&mut self, target: Target) -> &mut Option<LoraPair> {
        match target {
            Target::Q => &mut self.q,
            Target::K => &mut self.k,
            Target::V => &mut self.v,
            Target::O => &mut self.o,
            Target::Gate => &mut self.gate,
            Target::Up => &mut self.up,
            Target::Down => &mut self.down,
        }
    }

    fn empty() -> Self {
        Self {
            q: None,
            k: None,
            v: None,
            o: None,
            gate: None,
            up: None,
            down: None,
        }
    }
}

/// A LoRA adapter for one base model: parametric memory.
///
/// Exists as a separate low-rank path beside the quantised base weights
/// (`y = Wx + (α/r)·B(Ax)`): the base model stays quantised and shared,
/// and adapters are swapped per user and per request by handing one to a
/// session, without re-merging. It records the base model's fingerprint,
/// and nothing applies it to another model.
#[derive(Module, Debug)]
pub struct Adapter {
    /// Per-block updates, one entry per transformer block.
    pub layers: Vec<LayerLora>,
    /// Rank, alpha, targets.
    #[module(skip)]
    config: LoraConfig,
    /// Fingerprint of the base model (the GGUF file) it belongs to.
    #[module(skip)]
    base: Fingerprint,
}

impl Adapter {
    /// A fresh adapter for `model` (fingerprint `base`) on `device`:
    /// `A` drawn from `N(0, 1/in)`, `B` zero, so it starts as the identity
    /// (the base model's outputs, exactly) as LoRA prescribes.
    pub fn new(
        config: LoraConfig,
        model: &LlamaConfig,
        base: Fingerprint,
        device: &Device,
    ) -> Self {
        let r = config.rank;
        let layers = (0..model.layers)
            .map(|layer| {
                let mut l = LayerLora::empty();
                for t in config.target_list() {
                    let (i, o) = t.dims(model);
                    let std = 1.0 / (i as f64).sqrt();
                    let a = Tensor::random([i, r], Distribution::Normal(0.0, std), device);
                    *l.slot(t) = Some(LoraPair {
                        a: param(layer, t, 0, a),
                        b: param(layer, t, 1, Tensor::zeros([r, o], device)),
                    });
                }
                l
            })
            .collect();
        Self {
            layers,
            config,
            base,
        }
    }

    /// Builds an adapter from host matrices: for each layer and adapted
    /// target, `A` as `[in][rank]` and `B` as `[rank][out]` row-major f32.
    /// `get(layer, target)` returns `None` for a missing pair, which is a
    /// [`LoraError::MissingTensor`].
    pub(crate) fn from_host(
        config: LoraConfig,
        model: &LlamaConfig,
        base: Fingerprint,
        device: &Device,
        mut get: impl FnMut(usize, Target) -> Result<(Vec<f32>, Vec<f32>), LoraError>,
    ) -> Result<Self, LoraError> {
        let r = config.rank;
        let mut layers = Vec::with_capacity(model.layers);
        for layer in 0..model.layers {
            let mut l = LayerLora::empty();
            for t in config.target_list() {
                let (i, o) = t.dims(model);
                let (a, b) = get(layer, t)?;
                if a.len() != i * r || b.len() != r * o {
                    return Err(LoraError::Shape {
                        name: t.gguf_name(layer),
                        expected: (i * r, r * o),
                        found: (a.len(), b.len()),
                    });
                }
                if a.iter().chain(&b).any(|v| !v.is_finite()) {
                    return Err(LoraError::NotFinite(t.gguf_name(layer)));
                }
                let a = Tensor::from_data(TensorData::new(a, [i, r]), device);
                let b = Tensor::from_data(TensorData::new(b, [r, o]), device);
                *l.slot(t) = Some(LoraPair {
                    a: param(layer, t, 0, a),
                    b: param(layer, t, 1, b),
                });
            }
            layers.push(l);
        }
        Ok(Self {
            layers,
            config,
            base,
        })
    }

    /// Rank, alpha and targets.
    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    /// Fingerprint of the base model this adapter belongs to.
    pub fn base(&self) -> Fingerprint {
        self.base
    }

    /// The update of block `layer`.
    pub fn layer(&self, layer: usize) -> Option<&LayerLora> {
        self.layers.get(layer)
    }

    /// `scale · B(A·x)` of `target` in block `layer`, if adapted.
    pub fn delta(&self, layer: usize, target: Target, x: Tensor<2>) -> Option<Tensor<2>> {
        self.layers
            .get(layer)?
            .get(target)
            .map(|p| p.delta(x, self.config.scale()))
    }

    /// Checks that this adapter belongs to the model with fingerprint
    /// `base` and shape `model`.
    pub fn check_base(&self, base: Fingerprint, model: &LlamaConfig) -> Result<(), LoraError> {
        if self.base != base {
            return Err(LoraError::BaseMismatch {
                expected: base,
                found: self.base,
            });
        }
        if self.layers.len() != model.layers {
            return Err(LoraError::BadConfig(format!(
                "adapter has {} layers, the model {}",
                self.layers.len(),
                model.layers
            )));
        }
        Ok(())
    }

    /// Host copies of `(A, B)` of `target` in block `layer`, row-major
    /// `[in][rank]` and `[rank][out]`.
    pub fn host_pair(
        &self,
        layer: usize,
        target: Target,
    ) -> Result<(Vec<f32>, Vec<f32>), LoraError> {
        let p = self
            .layers
            .get(layer)
            .and_then(|l| l.get(target))
            .ok_or_else(|| LoraError::MissingTensor(target.gguf_name(layer)))?;
        let read = |t: Tensor<2>| {
            t.try_into_vec_as::<f32>()
                .map_err(|e| LoraError::Backend(format!("reading adapter weights: {e:?}")))
        };
        Ok((read(p.a.val())?, read(p.b.val())?))
    }

    /// A fingerprint of what the adapter computes: base model, rank,
    /// alpha, targets and every weight, in a fixed order. (The safetensors
    /// file is not byte-for-byte reproducible — its metadata is a hash map
    /// — so it cannot serve as the identity.)
    pub fn content_fingerprint(&self) -> Result<Fingerprint, LoraError> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        crate::fingerprint::update_framed(&mut h, b"memkern lora content v1");
        crate::fingerprint::update_framed(&mut h, &self.base.0);
        h.update((self.config.rank as u64).to_le_bytes());
        h.update(self.config.alpha.to_le_bytes());
        h.update(self.config.targets.0.to_le_bytes());
        for layer in 0..self.layers.len() {
            for t in self.config.target_list() {
                let (a, b) = self.host_pair(layer, t)?;
                for v in a.iter().chain(&b) {
                    h.update(v.to_le_bytes());
                }
            }
        }
        Ok(Fingerprint::from_sha256(h))
    }

    /// Number of trainable values (`Σ rank·(in + out)`).
    pub fn parameter_count(&self, model: &LlamaConfig) -> usize {
        let per_layer: usize = self
            .config
            .target_list()
            .map(|t| {
                let (i, o) = t.dims(model);
                self.config.rank * (i + o)
            })
            .sum();
        per_layer * self.layers.len()
    }

    /// Folds the adapter into `model`'s weights (`W += scale·A·B`), for
    /// speed when one adapter is used alone. The merged model computes the
    /// same function up to float rounding; it is no longer the base model,
    /// so anything derived from it must be fingerprinted with
    /// [`super::applied_fingerprint`].
    pub fn merge_into(&self, model: &mut Llama) -> Result<(), LoraError> {
        if self.layers.len() != model.blocks.len() {
            return Err(LoraError::BadConfig(format!(
                "adapter has {} layers, the model {}",
                self.layers.len(),
                model.blocks.len()
            )));
        }
        let s = self.config.scale();
        for (l, block) in self.layers.iter().zip(model.blocks.iter_mut()) {
            for t in self.config.target_list() {
                let Some(p) = l.get(t) else { continue };
                let lin = match t {
                    Target::Q => &mut block.attn.q,
                    Target::K => &mut block.attn.k,
                    Target::V => &mut block.attn.v,
                    Target::O => &mut block.attn.o,
                    Target::Gate => &mut block.mlp.gate,
                    Target::Up => &mut block.mlp.up,
                    Target::Down => &mut block.mlp.down,
                };
                let delta = p.a.val().matmul(p.b.val()).mul_scalar(s);
                let w = lin.weight.val() + delta;
                lin.weight = Param::from_tensor(w);
                // The file's blocks no longer describe the weight.
                lin.native = None;
            }
        }
        Ok(())
    }
}
