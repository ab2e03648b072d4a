//! The key/value cache of incremental decoding.

use burn::tensor::{Device, Tensor, TensorData};

use super::config::LlamaConfig;
use super::error::LlmError;

/// Smallest capacity allocated; the cache doubles from here as needed.
const MIN_CAPACITY: usize = 64;

/// One layer's keys and values, each `[kv_heads, capacity, head_dim]`;
/// rows `0..len` are valid.
#[derive(Debug, Clone)]
struct LayerKv {
    k: Tensor<3>,
    v: Tensor<3>,
}

/// Keys (after RoPE) and values of every processed token, per layer.
///
/// Exists so decoding one token costs one token's projections plus
/// attention over the cache, not a re-run of the whole prefix, and so a
/// prefix's cache can be exported as an activation snapshot and restored.
/// Storage grows by doubling up to the model's context length; rows beyond
/// [`KvCache::len`] are scratch.
#[derive(Debug, Clone)]
pub struct KvCache {
    /// Empty until the first [`KvCache::reserve`].
    layers: Vec<LayerKv>,
    n_layers: usize,
    len: usize,
    capacity: usize,
    max: usize,
    kv_heads: usize,
    head_dim: usize,
    device: Device,
}

impl KvCache {
    /// An empty cache for `config` on `device` (allocates nothing yet).
    pub fn new(config: &LlamaConfig, device: &Device) -> Self {
        Self {
            layers: Vec::new(),
            n_layers: config.layers,
            len: 0,
            capacity: 0,
            max: config.context,
            kv_heads: config.kv_heads,
            head_dim: config.head_dim,
            device: device.clone(),
        }
    }

    /// Tokens cached (the next token's absolute position).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the cache can hold without growing.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The most positions the cache will ever hold (the model's context).
    pub fn max_len(&self) -> usize {
        self.max
    }

    /// Forgets every token after the first `len` (no-op if `len` is not
    /// smaller than [`Self::len`]).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Makes room for `total` positions, or fails if that exceeds the
    /// context.
    pub(crate) fn reserve(&mut self, total: usize) -> Result<(), LlmError> {
        if total > self.max {
            return Err(LlmError::ContextOverflow {
                needed: total,
                context: self.max,
            });
        }
        if total <= self.capacity {
            return Ok(());
        }
        let new_cap = total
            .max(self.capacity.saturating_mul(2))
            .max(MIN_CAPACITY)
            .min(self.max);
        let (h, d, len) = (self.kv_heads, self.head_dim, self.len);
        if self.layers.is_empty() {
            let zeros = || Tensor::<3>::zeros([h, new_cap, d], &self.device);
            self.layers = (0..self.n_layers)
                .map(|_| LayerKv {
                    k: zeros(),
                    v: zeros(),
                })
                .collect();
            self.capacity = new_cap;
            return Ok(());
        }
        for layer in &mut self.layers {
            for t in [&mut layer.k, &mut layer.v] {
                let mut grown = Tensor::<3>::zeros([h, new_cap, d], &self.device);
                if len > 0 {
                    let old = t.clone().slice([0..h, 0..len, 0..d]);
                    grown = grown.slice_assign([0..h, 0..len, 0..d], old);
                }
                *t = grown;
            }
        }
        self.capacity = new_cap;
        Ok(())
    }

    /// Stores `k` and `v` (`[kv_heads, n, head_dim]`) of layer `layer` at
    /// positions `start..start + n`; [`Self::reserve`] must have made room.
    pub(crate) fn write(&mut self, layer: usize, start: usize, k: Tensor<3>, v: Tensor<3>) {
        let n = k.dims()[1];
        let (h, d) = (self.kv_heads, self.head_dim);
        if let Some(l) = self.layers.get_mut(layer) {
            // `inplace` hands the uniquely owned buffer to slice_assign, which
            // then writes the rows in place instead of copying the cache.
            l.k.inplace(|t| t.slice_assign([0..h, start..start + n, 0..d], k));
            l.v.inplace(|t| t.slice_assign([0..h, start..start + n, 0..d], v));
        }
    }

    /// Keys and values of layer `layer` for positions `0..end`.
    pub(crate) fn read(&self, layer: usize, end: usize) -> Option<(Tensor<3>, Tensor<3>)> {
        let (h, d) = (self.kv_heads, self.head_dim);
        self.layers.get(layer).map(|l| {
            (
                l.k.clone().slice([0..h, 0..end, 0..d]),
                l.v.clone().slice([0..h, 0..end, 0..d]),
            )
        })
    }

    /// Marks positions `0..len` as valid after all layers were written.
    pub(crate) fn set_len(&mut self, len: usize) {
        self.len = len.min(self.capacity);
    }

    /// Copies layer `layer`'s keys and values at positions `range` to the
    /// host, each as `[kv_heads][tokens][head_dim]` f32 values.
    pub(crate) fn export_layer(
        &self,
        layer: usize,
        range: std::ops::Range<usize>,
    ) -> Result<(Vec<f32>, Vec<f32>), LlmError> {
        let (h, d) = (self.kv_heads, self.head_dim);
        let l = self.layers.get(layer).ok_or(LlmError::BadRange {
            start: range.start,
            end: range.end,
            len: self.len,
        })?;
        let read = |t: &Tensor<3>| {
            t.clone()
                .slice([0..h, range.clone(), 0..d])
                .try_into_vec_as::<f32>()
                .map_err(|e| LlmError::Backend(format!("reading the KV cache: {e:?}")))
        };
        Ok((read(&l.k)?, read(&l.v)?))
    }

    /// Writes host values (`[kv_heads][n][head_dim]` f32, as produced by
    /// [`Self::export_layer`]) for layer `layer` at positions
    /// `start..start + n`; [`Self::reserve`] must have made room.
    pub(crate) fn import_layer(
        &mut self,
        layer: usize,
        start: usize,
        n: usize,
        k: Vec<f32>,
        v: Vec<f32>,
    ) {
        let (h, d) = (self.kv_heads, self.head_dim);
        let k = Tensor::<3>::from_data(TensorData::new(k, [h, n, d]), &self.device);
        let v = Tensor::<3>::from_data(TensorData::new(v, [h, n, d]), &self.device);
        self.write(layer, start, k, v);
    }
}
