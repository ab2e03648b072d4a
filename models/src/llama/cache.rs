//! The key/value cache of incremental decoding.

use burn::tensor::{Device, Tensor, TensorData};

use super::config::LlamaConfig;
use super::error::LlmError;

/// Smallest capacity allocated; the cache doubles from here as needed.
const MIN_CAPACITY: usize = 64;

/// One layer's keys and values on the burn device, each `[kv_heads,
/// capacity, head_dim]`; rows `0..len` are valid.
#[derive(Debug, Clone)]
struct LayerKv {
    k: Tensor<3>,
    v: Tensor<3>,
}

/// One layer's keys and values in host memory, each
/// `[kv_heads][capacity][head_dim]` f32 values (f16-rounded on the native
/// path); rows `0..len` of every head are valid.
#[derive(Debug, Clone)]
struct HostKv {
    k: Vec<f32>,
    v: Vec<f32>,
}

/// Where the cache's values live, chosen by the first forward pass that
/// writes them (and converted, once, if another kind of pass follows).
#[derive(Debug, Clone)]
enum Store {
    /// Nothing allocated yet.
    Empty,
    /// Burn tensors on the model's device (the dense path, any device).
    Tensors(Vec<LayerKv>),
    /// Host vectors the native CPU path reads and writes in place: no
    /// per-layer copies between the tensor library and the kernels.
    Host(Vec<HostKv>),
}

/// Keys (after RoPE) and values of every processed token, per layer.
///
/// Exists so decoding one token costs one token's projections plus
/// attention over the cache, not a re-run of the whole prefix, and so a
/// prefix's cache can be exported as an activation snapshot and restored.
/// Storage grows by doubling up to the model's context length; rows beyond
/// [`KvCache::len`] are scratch. On the native CPU path the values live in
/// host memory where the kernels compute; on other devices in tensors.
#[derive(Debug, Clone)]
pub struct KvCache {
    store: Store,
    n_layers: usize,
    len: usize,
    capacity: usize,
    max: usize,
    kv_heads: usize,
    head_dim: usize,
    device: Device,
}

/// Copies positions `0..len` of every head from a `[heads][from][d]`
/// buffer into a new `[heads][to][d]` one (`len ≤ from, to`).
fn regrid(src: &[f32], heads: usize, from: usize, to: usize, len: usize, d: usize) -> Vec<f32> {
    let mut out = vec![0f32; heads * to * d];
    for h in 0..heads {
        let (s, o) = (h * from * d, h * to * d);
        out[o..o + len * d].copy_from_slice(&src[s..s + len * d]);
    }
    out
}

impl KvCache {
    /// An empty cache for `config` on `device` (allocates nothing yet).
    pub fn new(config: &LlamaConfig, device: &Device) -> Self {
        Self {
            store: Store::Empty,
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
        let (h, d, len, old) = (self.kv_heads, self.head_dim, self.len, self.capacity);
        match &mut self.store {
            Store::Empty => {}
            Store::Tensors(layers) => {
                for layer in layers {
                    for t in [&mut layer.k, &mut layer.v] {
                        let mut grown = Tensor::<3>::zeros([h, new_cap, d], &self.device);
                        if len > 0 {
                            let old = t.clone().slice([0..h, 0..len, 0..d]);
                            grown = grown.slice_assign([0..h, 0..len, 0..d], old);
                        }
                        *t = grown;
                    }
                }
            }
            Store::Host(layers) => {
                for layer in layers {
                    layer.k = regrid(&layer.k, h, old, new_cap, len, d);
                    layer.v = regrid(&layer.v, h, old, new_cap, len, d);
                }
            }
        }
        self.capacity = new_cap;
        Ok(())
    }

    /// The tensor store, allocated or converted from the host one first.
    fn tensors(&mut self) -> Result<&mut Vec<LayerKv>, LlmError> {
        let (h, cap, d) = (self.kv_heads, self.capacity, self.head_dim);
        let tensor =
            |v: Vec<f32>| Tensor::<3>::from_data(TensorData::new(v, [h, cap, d]), &self.device);
        let layers = match std::mem::replace(&mut self.store, Store::Empty) {
            Store::Tensors(l) => l,
            Store::Empty => (0..self.n_layers)
                .map(|_| LayerKv {
                    k: Tensor::<3>::zeros([h, cap, d], &self.device),
                    v: Tensor::<3>::zeros([h, cap, d], &self.device),
                })
                .collect(),
            Store::Host(l) => l
                .into_iter()
                .map(|l| LayerKv {
                    k: tensor(l.k),
                    v: tensor(l.v),
                })
                .collect(),
        };
        self.store = Store::Tensors(layers);
        match &mut self.store {
            Store::Tensors(l) => Ok(l),
            _ => Err(LlmError::Backend("the KV cache lost its tensors".into())),
        }
    }

    /// The host store, allocated or read back from the tensors first.
    fn host(&mut self) -> Result<&mut Vec<HostKv>, LlmError> {
        let (h, cap, d) = (self.kv_heads, self.capacity, self.head_dim);
        let layers = match std::mem::replace(&mut self.store, Store::Empty) {
            Store::Host(l) => l,
            Store::Empty => (0..self.n_layers)
                .map(|_| HostKv {
                    k: vec![0f32; h * cap * d],
                    v: vec![0f32; h * cap * d],
                })
                .collect(),
            Store::Tensors(l) => {
                let read = |t: Tensor<3>| {
                    t.try_into_vec_as::<f32>()
                        .map_err(|e| LlmError::Backend(format!("reading the KV cache: {e:?}")))
                };
                let mut out = Vec::with_capacity(l.len());
                for layer in l {
                    out.push(HostKv {
                        k: read(layer.k)?,
                        v: read(layer.v)?,
                    });
                }
                out
            }
        };
        self.store = Store::Host(layers);
        match &mut self.store {
            Store::Host(l) => Ok(l),
            _ => Err(LlmError::Backend(
                "the KV cache lost its host values".into(),
            )),
        }
    }

    /// Layer `layer`'s host keys and values (`[kv_heads][capacity][head_dim]`
    /// each, see [`Self::capacity`]) for the native path to write new
    /// positions into and attend over, in place.
    pub(crate) fn host_layer(
        &mut self,
        layer: usize,
    ) -> Result<(&mut [f32], &mut [f32]), LlmError> {
        let len = self.len;
        let l = self.host()?.get_mut(layer).ok_or(LlmError::BadRange {
            start: layer,
            end: layer + 1,
            len,
        })?;
        Ok((&mut l.k, &mut l.v))
    }

    /// Stores `k` and `v` (`[kv_heads, n, head_dim]`) of layer `layer` at
    /// positions `start..start + n`; [`Self::reserve`] must have made room.
    pub(crate) fn write(&mut self, layer: usize, start: usize, k: Tensor<3>, v: Tensor<3>) {
        let n = k.dims()[1];
        let (h, d) = (self.kv_heads, self.head_dim);
        let Ok(layers) = self.tensors() else {
            return;
        };
        if let Some(l) = layers.get_mut(layer) {
            // `inplace` hands the uniquely owned buffer to slice_assign, which
            // then writes the rows in place instead of copying the cache.
            l.k.inplace(|t| t.slice_assign([0..h, start..start + n, 0..d], k));
            l.v.inplace(|t| t.slice_assign([0..h, start..start + n, 0..d], v));
        }
    }

    /// Keys and values of layer `layer` for positions `0..end` (written by
    /// [`Self::write`], which leaves the store in tensors).
    pub(crate) fn read(&self, layer: usize, end: usize) -> Option<(Tensor<3>, Tensor<3>)> {
        let (h, d) = (self.kv_heads, self.head_dim);
        match &self.store {
            Store::Tensors(layers) => layers.get(layer).map(|l| {
                (
                    l.k.clone().slice([0..h, 0..end, 0..d]),
                    l.v.clone().slice([0..h, 0..end, 0..d]),
                )
            }),
            _ => None,
        }
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
        let (h, d, cap) = (self.kv_heads, self.head_dim, self.capacity);
        let bad = LlmError::BadRange {
            start: range.start,
            end: range.end,
            len: self.len,
        };
        if range.start > range.end || range.end > cap {
            return Err(bad);
        }
        match &self.store {
            Store::Empty => Err(bad),
            Store::Tensors(layers) => {
                let l = layers.get(layer).ok_or(bad)?;
                let read = |t: &Tensor<3>| {
                    t.clone()
                        .slice([0..h, range.clone(), 0..d])
                        .try_into_vec_as::<f32>()
                        .map_err(|e| LlmError::Backend(format!("reading the KV cache: {e:?}")))
                };
                Ok((read(&l.k)?, read(&l.v)?))
            }
            Store::Host(layers) => {
                let l = layers.get(layer).ok_or(bad)?;
                let read = |t: &[f32]| {
                    let mut out = Vec::with_capacity(h * range.len() * d);
                    for head in 0..h {
                        let at = head * cap * d;
                        out.extend_from_slice(&t[at + range.start * d..at + range.end * d]);
                    }
                    out
                };
                Ok((read(&l.k), read(&l.v)))
            }
        }
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
    ) -> Result<(), LlmError> {
        let (h, d, cap) = (self.kv_heads, self.head_dim, self.capacity);
        if start + n > cap || k.len() != h * n * d || v.len() != k.len() {
            return Err(LlmError::BadRange {
                start,
                end: start + n,
                len: cap,
            });
        }
        if let Store::Tensors(_) = self.store {
            let k = Tensor::<3>::from_data(TensorData::new(k, [h, n, d]), &self.device);
            let v = Tensor::<3>::from_data(TensorData::new(v, [h, n, d]), &self.device);
            self.write(layer, start, k, v);
            return Ok(());
        }
        let (dk, dv) = self.host_layer(layer)?;
        for head in 0..h {
            let (src, dst) = (head * n * d, (head * cap + start) * d);
            dk[dst..dst + n * d].copy_from_slice(&k[src..src + n * d]);
            dv[dst..dst + n * d].copy_from_slice(&v[src..src + n * d]);
        }
        Ok(())
    }
}
