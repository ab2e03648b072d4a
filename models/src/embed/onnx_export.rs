//! safetensors + `config.json` → an ONNX graph of the BERT sentence
//! embedder, written from Rust with tract-onnx's protobuf types.
//!
//! The graph (opset 17, IR 8) computes, for `input_ids` and
//! `attention_mask` (both `int64[batch, sequence]`):
//!
//! ```text
//! h   = LayerNorm(word[ids] + type[0] + pos[0..S])
//! 6×  a = softmax(Q·Kᵀ/√d + (mask−1)·10⁴) · V        (12 heads)
//!     h = LayerNorm(h + a·Wo + bo)
//!     h = LayerNorm(h + gelu_erf(h·Wi + bi)·Wo2 + bo2)
//! e   = Σ_s h·mask / max(Σ_s mask, 1e-9)               (mean pool)
//! out = e / max(‖e‖₂, 1e-12)                           (sentence_embedding)
//! ```
//!
//! Scalars fed to `Range` and `Gather` are 0-D tensors (tract refuses
//! 1-element 1-D ones there). Linear weights are stored transposed
//! (`[in, out]`) so every projection is a plain `MatMul`. The export is
//! deterministic: the same inputs give the same bytes.

use std::path::Path;

use prost::Message;
use safetensors::{Dtype, SafeTensors};
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
use tract_onnx::pb::type_proto::{self, Tensor as TensorType};
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

use super::config::BertConfig;
use super::error::EmbedError;

/// Version of the graph layout written by [`export_onnx`]; part of the
/// cache key, bumped whenever the exported graph changes.
pub const EXPORT_VERSION: u32 = 1;
/// Name of the token-id input (`int64[batch, sequence]`).
pub const INPUT_IDS: &str = "input_ids";
/// Name of the attention-mask input (`int64[batch, sequence]`, 1 = token,
/// 0 = padding).
pub const INPUT_ATTENTION_MASK: &str = "attention_mask";
/// Name of the output: L2-normalised mean-pooled embeddings
/// (`float[batch, hidden]`).
pub const OUTPUT_EMBEDDING: &str = "sentence_embedding";

/// ONNX operator set used by the graph (17 brings `LayerNormalization`).
const OPSET: i64 = 17;
/// ONNX IR version matching [`OPSET`].
const IR_VERSION: i64 = 8;
/// Added to the attention scores of padding positions (BERT's classic
/// value; `exp` of it underflows to exactly 0 in f32).
const MASK_NEG: f32 = -10_000.0;

/// Builds the ONNX `ModelProto` bytes of the sentence embedder from the
/// contents of `model.safetensors` and `config.json`.
///
/// Exists so the ONNX graph tract runs is produced by memkern itself, from
/// the same files the cache verified, without Python or a second download.
pub fn export_onnx(safetensors: &[u8], config_json: &[u8]) -> Result<Vec<u8>, EmbedError> {
    Ok(build_model(safetensors, config_json)?.encode_to_vec())
}

/// [`export_onnx`] on files: reads `model.safetensors` and `config.json`.
///
/// Exists for the converter CLI and the embedder's first-use conversion.
pub fn export_onnx_files(safetensors: &Path, config_json: &Path) -> Result<Vec<u8>, EmbedError> {
    let weights = std::fs::read(safetensors).map_err(EmbedError::io("reading", safetensors))?;
    let config = std::fs::read(config_json).map_err(EmbedError::io("reading", config_json))?;
    export_onnx(&weights, &config)
}

/// The graph as a protobuf message (for tests and direct loading).
pub(crate) fn build_model(
    safetensors: &[u8],
    config_json: &[u8],
) -> Result<ModelProto, EmbedError> {
    let config = BertConfig::from_json(config_json)?;
    let weights = Weights::new(safetensors)?;
    let graph = build_graph(&config, &weights)?;
    Ok(ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "memkern-models".to_owned(),
        producer_version: format!("{}+export{EXPORT_VERSION}", env!("CARGO_PKG_VERSION")),
        doc_string: "BERT sentence embedder: mean pooling over the attention mask, L2 \
                     normalisation"
            .to_owned(),
        graph: Some(graph),
        metadata_props: vec![StringStringEntryProto {
            key: "memkern.export_version".to_owned(),
            value: EXPORT_VERSION.to_string(),
        }],
        ..ModelProto::default()
    })
}

/// Read access to the safetensors weights, with shape and dtype checks.
struct Weights<'a> {
    st: SafeTensors<'a>,
    /// `""` or `"bert."`, whichever the file's names use.
    prefix: &'static str,
}

impl<'a> Weights<'a> {
    fn new(bytes: &'a [u8]) -> Result<Self, EmbedError> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| EmbedError::Weights(format!("not a safetensors file: {e}")))?;
        let prefix = if st.tensor("embeddings.word_embeddings.weight").is_ok() {
            ""
        } else {
            "bert."
        };
        Ok(Self { st, prefix })
    }

    /// The raw little-endian f32 bytes of `name`, checked against `shape`.
    fn get(&self, name: &str, shape: &[usize]) -> Result<&'a [u8], EmbedError> {
        let full = format!("{}{name}", self.prefix);
        // Old BERT checkpoints call the LayerNorm parameters gamma/beta.
        let legacy = full
            .strip_suffix("LayerNorm.weight")
            .map(|p| format!("{p}LayerNorm.gamma"))
            .or_else(|| {
                full.strip_suffix("LayerNorm.bias")
                    .map(|p| format!("{p}LayerNorm.beta"))
            });
        let view = match (self.st.tensor(&full), legacy) {
            (Ok(v), _) => v,
            (Err(_), Some(l)) if self.st.tensor(&l).is_ok() => self
                .st
                .tensor(&l)
                .map_err(|e| EmbedError::Weights(format!("{l}: {e}")))?,
            (Err(e), _) => return Err(EmbedError::Weights(format!("{full}: {e}"))),
        };
        if view.dtype() != Dtype::F32 {
            return Err(EmbedError::Weights(format!(
                "{full} is {:?}; only F32 weights are supported",
                view.dtype()
            )));
        }
        if view.shape() != shape {
            return Err(EmbedError::Weights(format!(
                "{full} has shape {:?}, the config implies {shape:?}",
                view.shape()
            )));
        }
        Ok(view.data())
    }
}

/// Accumulates nodes and initializers with generated, unique value names.
struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    next: usize,
}

fn dims_i64(dims: &[usize]) -> Vec<i64> {
    // Dimensions are bounded by BertConfig::validate (≤ 2^20), so they fit.
    dims.iter().map(|&d| d as i64).collect()
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: AttributeType::Int as i32,
        i,
        ..AttributeProto::default()
    }
}

fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: AttributeType::Float as i32,
        f,
        ..AttributeProto::default()
    }
}

fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..AttributeProto::default()
    }
}

impl GraphBuilder {
    fn new() -> Self {
        Self {
            nodes: Vec::new(),
            initializers: Vec::new(),
            next: 0,
        }
    }

    fn tensor(&mut self, name: &str, dims: &[usize], data_type: DataType, raw: Vec<u8>) -> String {
        self.initializers.push(TensorProto {
            dims: dims_i64(dims),
            data_type: data_type as i32,
            name: name.to_owned(),
            raw_data: raw,
            ..TensorProto::default()
        });
        name.to_owned()
    }

    /// An f32 initializer from raw little-endian bytes.
    fn weight(&mut self, name: &str, dims: &[usize], raw: &[u8]) -> String {
        self.tensor(name, dims, DataType::Float, raw.to_vec())
    }

    /// A `[rows, cols]` f32 matrix stored transposed, as `[cols, rows]`.
    fn weight_transposed(&mut self, name: &str, rows: usize, cols: usize, raw: &[u8]) -> String {
        let mut out = vec![0u8; raw.len()];
        for r in 0..rows {
            for c in 0..cols {
                let src = (r * cols + c) * 4;
                let dst = (c * rows + r) * 4;
                out[dst..dst + 4].copy_from_slice(&raw[src..src + 4]);
            }
        }
        self.tensor(name, &[cols, rows], DataType::Float, out)
    }

    fn scalar_f32(&mut self, name: &str, v: f32) -> String {
        self.tensor(name, &[], DataType::Float, v.to_le_bytes().to_vec())
    }

    fn scalar_i64(&mut self, name: &str, v: i64) -> String {
        self.tensor(name, &[], DataType::Int64, v.to_le_bytes().to_vec())
    }

    fn vec_i64(&mut self, name: &str, v: &[i64]) -> String {
        let raw = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.tensor(name, &[v.len()], DataType::Int64, raw)
    }

    /// Adds a one-output node and returns its output's (generated) name.
    fn op(&mut self, op_type: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> String {
        let output = format!("{}_{}", op_type.to_ascii_lowercase(), self.next + 1);
        self.op_to(op_type, inputs, attribute, &output)
    }

    /// Adds a one-output node whose output is called `output`.
    fn op_to(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attribute: Vec<AttributeProto>,
        output: &str,
    ) -> String {
        self.next += 1;
        let output = output.to_owned();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: vec![output.clone()],
            name: format!("n{}_{op_type}", self.next),
            op_type: op_type.to_owned(),
            attribute,
            ..NodeProto::default()
        });
        output
    }

    /// `x · W + b` with `W` given `[out, in]` in the file.
    fn linear(
        &mut self,
        w: &Weights<'_>,
        prefix: &str,
        x: &str,
        inp: usize,
        out: usize,
    ) -> Result<String, EmbedError> {
        let wt = w.get(&format!("{prefix}.weight"), &[out, inp])?;
        let bias = w.get(&format!("{prefix}.bias"), &[out])?;
        let wt = self.weight_transposed(&format!("{prefix}.weight_t"), out, inp, wt);
        let bias = self.weight(&format!("{prefix}.bias"), &[out], bias);
        let y = self.op("MatMul", &[x, &wt], vec![]);
        Ok(self.op("Add", &[&y, &bias], vec![]))
    }

    fn layer_norm(
        &mut self,
        w: &Weights<'_>,
        prefix: &str,
        x: &str,
        hidden: usize,
        eps: f32,
    ) -> Result<String, EmbedError> {
        let g = w.get(&format!("{prefix}.weight"), &[hidden])?;
        let b = w.get(&format!("{prefix}.bias"), &[hidden])?;
        let g = self.weight(&format!("{prefix}.weight"), &[hidden], g);
        let b = self.weight(&format!("{prefix}.bias"), &[hidden], b);
        Ok(self.op(
            "LayerNormalization",
            &[x, &g, &b],
            vec![attr_int("axis", -1), attr_float("epsilon", eps)],
        ))
    }
}

fn value_info(name: &str, elem_type: DataType, dims: &[Dimension]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.to_owned(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(TensorType {
                elem_type: elem_type as i32,
                shape: Some(TensorShapeProto { dim: dims.to_vec() }),
            })),
            ..TypeProto::default()
        }),
        ..ValueInfoProto::default()
    }
}

fn dim_param(name: &str) -> Dimension {
    Dimension {
        value: Some(dimension::Value::DimParam(name.to_owned())),
        ..Dimension::default()
    }
}

fn dim_value(v: usize) -> Dimension {
    Dimension {
        value: Some(dimension::Value::DimValue(v as i64)),
        ..Dimension::default()
    }
}

fn build_graph(c: &BertConfig, w: &Weights<'_>) -> Result<GraphProto, EmbedError> {
    let hidden = c.hidden_size;
    let heads = c.num_attention_heads;
    let head_dim = c.head_dim();
    // f64 → f32: the config's epsilon (1e-12) is representable in f32.
    let eps = c.layer_norm_eps as f32;
    let mut g = GraphBuilder::new();

    // Constants.
    let zero = g.scalar_i64("c_zero", 0);
    let one = g.scalar_i64("c_one", 1);
    let one_f = g.scalar_f32("c_one_f", 1.0);
    let half = g.scalar_f32("c_half", 0.5);
    let sqrt2 = g.scalar_f32("c_sqrt2", std::f32::consts::SQRT_2);
    let mask_neg = g.scalar_f32("c_mask_neg", MASK_NEG);
    let scale = g.scalar_f32("c_attn_scale", (head_dim as f32).sqrt());
    let count_eps = g.scalar_f32("c_count_eps", 1e-9);
    let norm_eps = g.scalar_f32("c_norm_eps", 1e-12);
    let axes_1 = g.vec_i64("c_axes_1", &[1]);
    let axes_2 = g.vec_i64("c_axes_2", &[2]);
    let axes_12 = g.vec_i64("c_axes_12", &[1, 2]);
    let heads_shape = g.vec_i64("c_heads_shape", &[0, 0, heads as i64, head_dim as i64]);
    let merged_shape = g.vec_i64("c_merged_shape", &[0, 0, hidden as i64]);

    // Embeddings: word + token type 0 + position, then LayerNorm.
    let word = w.get("embeddings.word_embeddings.weight", &[c.vocab_size, hidden])?;
    let word = g.weight(
        "embeddings.word_embeddings.weight",
        &[c.vocab_size, hidden],
        word,
    );
    let pos = w.get(
        "embeddings.position_embeddings.weight",
        &[c.max_position_embeddings, hidden],
    )?;
    let pos = g.weight(
        "embeddings.position_embeddings.weight",
        &[c.max_position_embeddings, hidden],
        pos,
    );
    let types = w.get(
        "embeddings.token_type_embeddings.weight",
        &[c.type_vocab_size, hidden],
    )?;
    let type0 = g.weight(
        "embeddings.token_type_embeddings.row0",
        &[hidden],
        &types[..hidden * 4],
    );

    let words = g.op("Gather", &[&word, INPUT_IDS], vec![attr_int("axis", 0)]);
    let shape = g.op("Shape", &[INPUT_IDS], vec![]);
    let seq_len = g.op("Gather", &[&shape, &one], vec![attr_int("axis", 0)]);
    let positions = g.op("Range", &[&zero, &seq_len, &one], vec![]);
    let pos_emb = g.op("Gather", &[&pos, &positions], vec![attr_int("axis", 0)]);
    let x = g.op("Add", &[&words, &type0], vec![]);
    let x = g.op("Add", &[&x, &pos_emb], vec![]);
    let mut h = g.layer_norm(w, "embeddings.LayerNorm", &x, hidden, eps)?;

    // Attention bias: 0 for tokens, -10⁴ for padding, shaped [B, 1, 1, S].
    let mask_f = g.op(
        "Cast",
        &[INPUT_ATTENTION_MASK],
        vec![attr_int("to", DataType::Float as i64)],
    );
    let inv = g.op("Sub", &[&one_f, &mask_f], vec![]);
    let bias = g.op("Mul", &[&inv, &mask_neg], vec![]);
    let bias = g.op("Unsqueeze", &[&bias, &axes_12], vec![]);

    for l in 0..c.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        let q = g.linear(w, &format!("{p}.attention.self.query"), &h, hidden, hidden)?;
        let k = g.linear(w, &format!("{p}.attention.self.key"), &h, hidden, hidden)?;
        let v = g.linear(w, &format!("{p}.attention.self.value"), &h, hidden, hidden)?;
        let q = g.op("Reshape", &[&q, &heads_shape], vec![]);
        let q = g.op("Transpose", &[&q], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let k = g.op("Reshape", &[&k, &heads_shape], vec![]);
        let k = g.op("Transpose", &[&k], vec![attr_ints("perm", &[0, 2, 3, 1])]);
        let v = g.op("Reshape", &[&v, &heads_shape], vec![]);
        let v = g.op("Transpose", &[&v], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let scores = g.op("MatMul", &[&q, &k], vec![]);
        let scores = g.op("Div", &[&scores, &scale], vec![]);
        let scores = g.op("Add", &[&scores, &bias], vec![]);
        let probs = g.op("Softmax", &[&scores], vec![attr_int("axis", -1)]);
        let ctx = g.op("MatMul", &[&probs, &v], vec![]);
        let ctx = g.op("Transpose", &[&ctx], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let ctx = g.op("Reshape", &[&ctx, &merged_shape], vec![]);
        let attn = g.linear(
            w,
            &format!("{p}.attention.output.dense"),
            &ctx,
            hidden,
            hidden,
        )?;
        let res = g.op("Add", &[&attn, &h], vec![]);
        let h1 = g.layer_norm(
            w,
            &format!("{p}.attention.output.LayerNorm"),
            &res,
            hidden,
            eps,
        )?;

        let inter = g.linear(
            w,
            &format!("{p}.intermediate.dense"),
            &h1,
            hidden,
            c.intermediate_size,
        )?;
        let scaled = g.op("Div", &[&inter, &sqrt2], vec![]);
        let erf = g.op("Erf", &[&scaled], vec![]);
        let erf1 = g.op("Add", &[&erf, &one_f], vec![]);
        let halfx = g.op("Mul", &[&inter, &half], vec![]);
        let gelu = g.op("Mul", &[&halfx, &erf1], vec![]);
        let out = g.linear(
            w,
            &format!("{p}.output.dense"),
            &gelu,
            c.intermediate_size,
            hidden,
        )?;
        let res = g.op("Add", &[&out, &h1], vec![]);
        h = g.layer_norm(w, &format!("{p}.output.LayerNorm"), &res, hidden, eps)?;
    }

    // Mean pooling over real tokens, then L2 normalisation.
    let mask3 = g.op("Unsqueeze", &[&mask_f, &axes_2], vec![]);
    let masked = g.op("Mul", &[&h, &mask3], vec![]);
    let summed = g.op(
        "ReduceSum",
        &[&masked, &axes_1],
        vec![attr_int("keepdims", 0)],
    );
    let count = g.op(
        "ReduceSum",
        &[&mask3, &axes_1],
        vec![attr_int("keepdims", 0)],
    );
    let count = g.op("Max", &[&count, &count_eps], vec![]);
    let mean = g.op("Div", &[&summed, &count], vec![]);
    let sq = g.op("Mul", &[&mean, &mean], vec![]);
    let sumsq = g.op("ReduceSum", &[&sq, &axes_1], vec![attr_int("keepdims", 1)]);
    let norm = g.op("Sqrt", &[&sumsq], vec![]);
    let norm = g.op("Max", &[&norm, &norm_eps], vec![]);
    g.op_to("Div", &[&mean, &norm], vec![], OUTPUT_EMBEDDING);

    let batch_seq = [dim_param("batch"), dim_param("sequence")];
    Ok(GraphProto {
        node: g.nodes,
        name: "memkern_bert_sentence_embedder".to_owned(),
        initializer: g.initializers,
        input: vec![
            value_info(INPUT_IDS, DataType::Int64, &batch_seq),
            value_info(INPUT_ATTENTION_MASK, DataType::Int64, &batch_seq),
        ],
        output: vec![value_info(
            OUTPUT_EMBEDDING,
            DataType::Float,
            &[dim_param("batch"), dim_value(hidden)],
        )],
        ..GraphProto::default()
    })
}
