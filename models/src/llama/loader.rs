//! Loading a [`Llama`] from a GGUF file: names, shapes, dequantisation.
//!
//! Kept apart from the model definition (as burn does) so the model reads
//! like the architecture and the file format stays here.

use std::sync::Arc;

use burn::module::Param;
use burn::nn::RmsNorm;
use burn::tensor::{Device, Tensor, TensorData};
use tracing::debug;

use super::backend::is_cpu;
use super::config::LlamaConfig;
use super::error::LlmError;
use super::model::{Activation, Attention, Block, Llama, Mlp};
use super::native::{GgmlIsa, QMatrix};
use super::quant::{BLOCK, Numerics, QLinear};
use super::rope::Rope;
use crate::gguf::quant::f16_to_f32;
use crate::gguf::{Architecture, GgmlType, GgufFile, LlamaParams, TensorView};

/// Positions the RoPE tables (and so a session) cover at most, whatever
/// context the model was trained for: 8 192 positions of f16 keys and
/// values are already 100+ MiB for a 1 B model, and each 1 000 positions
/// of tables cost `head_dim × 8` KiB per RoPE base.
pub const MAX_POSITIONS: usize = 8192;

/// Reads the hyper-parameters of a GGUF `llama` model.
pub fn llama_config<D: AsRef<[u8]>>(gguf: &GgufFile<D>) -> Result<LlamaConfig, LlmError> {
    LlamaConfig::from_params(&LlamaParams::from_gguf(gguf)?)
}

/// Builds a [`Llama`] on `device` from a GGUF file.
///
/// Every matrix is dequantised exactly to f32 (burn's quantisation cannot
/// represent Q4_1's `q·d + m`) and kept in the file's `[out, in]` row
/// order; [`QLinear`] receives the transposed view `[in, out]`, which
/// burn's matmuls read through strides without a copy. Q4_1 matrices are
/// split into `d·q` and their per-block minimums `m` (see [`QLinear`]).
/// Fails with a typed error for a missing tensor, a wrong shape or an
/// unsupported type.
pub fn load_llama<D: AsRef<[u8]>>(gguf: &GgufFile<D>, device: &Device) -> Result<Llama, LlmError> {
    let config = llama_config(gguf)?;
    let c = &config;
    let native = is_cpu(device);
    let loader = Loader {
        gguf,
        device,
        native,
    };
    let token_embd = loader.matrix("token_embd.weight", c.vocab, c.hidden)?;
    let output = if gguf.tensor_info("output.weight").is_ok() {
        Some(Param::from_tensor(loader.matrix(
            "output.weight",
            c.vocab,
            c.hidden,
        )?))
    } else {
        None
    };
    let gemma = c.arch == Architecture::Gemma3;
    let mut blocks = Vec::with_capacity(c.layers);
    for i in 0..c.layers {
        let name = |t: &str| format!("blk.{i}.{t}.weight");
        let (q_dim, kv_dim) = (c.q_dim(), c.kv_dim());
        let gemma_norm = |t: &str, width: usize| {
            gemma
                .then(|| loader.norm(&name(t), width, c.rms_eps))
                .transpose()
        };
        blocks.push(Block {
            attn_norm: loader.norm(&name("attn_norm"), c.hidden, c.rms_eps)?,
            attn: Attention {
                q: loader.linear(&name("attn_q"), c.hidden, q_dim)?,
                k: loader.linear(&name("attn_k"), c.hidden, kv_dim)?,
                v: loader.linear(&name("attn_v"), c.hidden, kv_dim)?,
                o: loader.linear(&name("attn_output"), q_dim, c.hidden)?,
                q_norm: gemma_norm("attn_q_norm", c.head_dim)?,
                k_norm: gemma_norm("attn_k_norm", c.head_dim)?,
                local: c.is_local(i),
                scales: c.attention_scales(),
                heads: c.heads,
                kv_heads: c.kv_heads,
                head_dim: c.head_dim,
            },
            ffn_norm: loader.norm(&name("ffn_norm"), c.hidden, c.rms_eps)?,
            mlp: Mlp {
                gate: loader.linear(&name("ffn_gate"), c.hidden, c.ffn)?,
                up: loader.linear(&name("ffn_up"), c.hidden, c.ffn)?,
                down: loader.linear(&name("ffn_down"), c.ffn, c.hidden)?,
                act: if gemma {
                    Activation::GeluTanh
                } else {
                    Activation::Silu
                },
            },
            post_attn_norm: gemma_norm("post_attention_norm", c.hidden)?,
            post_ffn_norm: gemma_norm("post_ffw_norm", c.hidden)?,
        });
    }
    let norm = loader.norm("output_norm.weight", c.hidden, c.rms_eps)?;
    let head_name = if output.is_some() {
        "output.weight"
    } else {
        "token_embd.weight"
    };
    let head_native = loader.native(head_name)?;
    let positions = c.context.min(MAX_POSITIONS);
    let neox = gemma;
    let rope = Rope::new(c.head_dim, positions, c.rope_theta, neox, device);
    let rope_local = (c.swa.is_some() && c.rope_theta_swa != c.rope_theta)
        .then(|| Rope::new(c.head_dim, positions, c.rope_theta_swa, neox, device));
    debug!(
        layers = c.layers,
        tied = output.is_none(),
        "llama weights loaded"
    );
    Ok(Llama {
        token_embd: Param::from_tensor(token_embd),
        output,
        blocks,
        norm,
        rope,
        rope_local,
        config,
        numerics: Numerics::default(),
        head_native,
        native_kernels: native,
        ggml_isa: GgmlIsa::default(),
        threads: None,
    })
}

struct Loader<'a, D> {
    gguf: &'a GgufFile<D>,
    device: &'a Device,
    /// Whether to keep ggml blocks for the native CPU kernels.
    native: bool,
}

impl<D: AsRef<[u8]>> Loader<'_, D> {
    fn view(&self, name: &str, expected: &[u64]) -> Result<TensorView<'_>, LlmError> {
        let view = self.gguf.tensor(name)?;
        if view.dims() != expected {
            return Err(LlmError::TensorShape {
                name: name.to_owned(),
                expected: expected.to_vec(),
                found: view.dims().to_vec(),
            });
        }
        if !view.ty().can_dequantize() {
            return Err(LlmError::TensorType {
                name: name.to_owned(),
                ty: view.ty(),
            });
        }
        Ok(view)
    }

    /// The ggml blocks of matrix `name` for the native CPU kernels, when
    /// loading for the CPU and the type has a kernel.
    fn native(&self, name: &str) -> Result<Option<Arc<QMatrix>>, LlmError> {
        if !self.native {
            return Ok(None);
        }
        Ok(QMatrix::from_view(&self.gguf.tensor(name)?)?.map(Arc::new))
    }

    /// A `[rows, cols]` matrix (GGUF dims `[cols, rows]`) as f32.
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Tensor<2>, LlmError> {
        let view = self.view(name, &[cols as u64, rows as u64])?;
        let data = dequantize_rows(&view, rows, cols)?;
        Ok(Tensor::from_data(
            TensorData::new(data, [rows, cols]),
            self.device,
        ))
    }

    /// A linear layer `[d_in → d_out]` from a GGUF `[d_out, d_in]` matrix.
    /// Q4_1 weights are split into `d·q` and per-block minimums (see
    /// [`QLinear`]); other types are dequantised whole.
    fn linear(&self, name: &str, d_in: usize, d_out: usize) -> Result<QLinear, LlmError> {
        let view = self.view(name, &[d_in as u64, d_out as u64])?;
        let native = self.native(name)?;
        if view.ty() != GgmlType::Q4_1 || !d_in.is_multiple_of(BLOCK) {
            let w = dequantize_rows(&view, d_out, d_in)?;
            let w = Tensor::<2>::from_data(TensorData::new(w, [d_out, d_in]), self.device);
            return Ok(QLinear {
                weight: Param::from_tensor(w.transpose()),
                mins: None,
                native,
            });
        }
        let blocks = view.q4_1_blocks()?;
        let per_row = d_in / BLOCK;
        let mut scaled = vec![0f32; d_out * d_in];
        let mut mins = vec![0f32; d_out * per_row];
        for ((b, out), m) in blocks
            .iter()
            .zip(scaled.chunks_exact_mut(BLOCK))
            .zip(mins.iter_mut())
        {
            let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
            *m = f16_to_f32(u16::from_le_bytes([b[2], b[3]]));
            for j in 0..16 {
                out[j] = f32::from(b[4 + j] & 0x0f) * d;
                out[j + 16] = f32::from(b[4 + j] >> 4) * d;
            }
        }
        let w = Tensor::<2>::from_data(TensorData::new(scaled, [d_out, d_in]), self.device);
        let m = Tensor::<2>::from_data(TensorData::new(mins, [d_out, per_row]), self.device);
        Ok(QLinear {
            weight: Param::from_tensor(w.transpose()),
            mins: Some(Param::from_tensor(m.transpose())),
            native,
        })
    }

    fn norm(&self, name: &str, width: usize, eps: f32) -> Result<RmsNorm, LlmError> {
        let view = self.view(name, &[width as u64])?;
        let gamma = view.to_f32_vec()?;
        Ok(RmsNorm {
            gamma: Param::from_tensor(Tensor::from_data(
                TensorData::new(gamma, [width]),
                self.device,
            )),
            epsilon: f64::from(eps),
        })
    }
}

/// Dequantises all rows of `view` into one `rows × cols` buffer, spreading
/// the rows over the available cores.
fn dequantize_rows(view: &TensorView<'_>, rows: usize, cols: usize) -> Result<Vec<f32>, LlmError> {
    let mut out = vec![0f32; rows * cols];
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(16);
    let rows_per = rows.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = out
            .chunks_mut(rows_per * cols)
            .enumerate()
            .map(|(chunk, buf)| {
                s.spawn(move || {
                    for (i, row) in buf.chunks_mut(cols).enumerate() {
                        view.dequantize_row((chunk * rows_per + i) as u64, row)?;
                    }
                    Ok::<(), LlmError>(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .map_err(|_| LlmError::Backend("a dequantisation thread panicked".into()))?
        })
    })?;
    Ok(out)
}
