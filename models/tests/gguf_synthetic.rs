//! GGUF reader on synthetic files: a valid one read correctly, and every
//! kind of malformed one rejected with a typed error, never a panic.

mod common;

use common::synth::{self, Builder, V, small_model, tensor};
use memkern_models::gguf::{
    GgmlType, Gguf, GgufError, GgufFile, LlamaParams, MetaArray, MetaValue, quant,
};
use memkern_models::tokenizer::{TemplateSource, Tokenizer};
use proptest::prelude::*;

fn parse(bytes: &[u8]) -> Result<Gguf, GgufError> {
    Gguf::parse(bytes)
}

/// An architecture without a forward pass, and a model needing a feature
/// the forward pass lacks, are one-line errors naming what is missing.
#[test]
fn unknown_architectures_and_features_are_named() {
    let mamba = small_model().set("general.architecture", synth::s("mamba"));
    let f = GgufFile::from_bytes(mamba.build()).unwrap();
    let err = LlamaParams::from_gguf(&f).unwrap_err().to_string();
    assert!(err.contains("\"mamba\" is not supported yet"), "{err}");
    assert_eq!(err.lines().count(), 1);
    let scaled = small_model().kv("llama.rope.scaling.type", synth::s("yarn"));
    let f = GgufFile::from_bytes(scaled.build()).unwrap();
    let err = LlamaParams::from_gguf(&f).unwrap_err().to_string();
    assert!(err.contains("RoPE scaling \"yarn\""), "{err}");
    // Gemma 3 keys are read under their own prefix.
    let mut gemma = small_model().set("general.architecture", synth::s("gemma3"));
    for key in [
        "block_count",
        "embedding_length",
        "feed_forward_length",
        "attention.head_count",
        "attention.head_count_kv",
        "context_length",
        "rope.freq_base",
        "attention.layer_norm_rms_epsilon",
    ] {
        let v = small_model()
            .value(&format!("llama.{key}"))
            .expect("a llama key");
        gemma = gemma.kv(&format!("gemma3.{key}"), v);
    }
    let gemma = gemma
        .kv("gemma3.attention.key_length", V::U32(32))
        .kv("gemma3.attention.sliding_window", V::U32(512));
    let f = GgufFile::from_bytes(gemma.build()).unwrap();
    let p = LlamaParams::from_gguf(&f).unwrap();
    assert_eq!(p.architecture.name(), "gemma3");
    assert_eq!((p.head_dim(), p.sliding_window), (32, Some(512)));
}

/// The chat template in the metadata decides how `encode_chat` wraps
/// turns; a template that does not compile falls back to ChatML.
#[test]
fn chat_template_from_metadata() {
    let gemma_like = "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}";
    let f = GgufFile::from_bytes(
        small_model()
            .kv("tokenizer.chat_template", synth::s(gemma_like))
            .build(),
    )
    .unwrap();
    let tok = Tokenizer::from_gguf(&f).unwrap();
    let fmt = tok.chat_format();
    assert_eq!(fmt.source, TemplateSource::File);
    assert_eq!(fmt.user_prefix, "<start_of_turn>user\n");
    assert_eq!(
        fmt.generation_prompt,
        "<end_of_turn>\n<start_of_turn>model\n"
    );
    let broken = GgufFile::from_bytes(
        small_model()
            .kv("tokenizer.chat_template", synth::s("{% for %}"))
            .build(),
    )
    .unwrap();
    let tok = Tokenizer::from_gguf(&broken).unwrap();
    assert_eq!(tok.chat_format().source, TemplateSource::Builtin("chatml"));
}

/// `general.sampling.*` in the metadata gives the model's recommended
/// sampling; nonsense values are ignored, absent ones fall back to
/// llama.cpp's defaults.
#[test]
fn sampling_defaults_from_metadata() {
    use memkern_models::SamplingDefaults;
    let f = GgufFile::from_bytes(
        small_model()
            .kv("general.sampling.penalty_repeat", V::F32(1.1))
            .kv("general.sampling.penalty_last_n", V::U32(32))
            .kv("general.sampling.temp", V::F32(-1.0))
            .build(),
    )
    .unwrap();
    let d = SamplingDefaults::from_gguf(&f);
    assert_eq!(d.repetition_penalty, Some(1.1));
    assert_eq!(d.repeat_last_n, Some(32));
    assert_eq!(d.temperature, None);
    assert_eq!(d.penalty(), (1.1, 32));
    let none = GgufFile::from_bytes(small_model().build()).unwrap();
    assert_eq!(SamplingDefaults::from_gguf(&none).penalty(), (1.0, 64));
}

#[test]
fn valid_file_reads_back() {
    let bytes = small_model().build();
    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.tensors().len(), 7);
    assert_eq!(f.data_offset() % 32, 0);
    assert_eq!(f.architecture().unwrap(), "llama");
    let p = LlamaParams::from_gguf(&f).unwrap();
    assert_eq!(
        (
            p.block_count,
            p.embedding_length,
            p.head_count,
            p.head_count_kv
        ),
        (1, 64, 4, 2)
    );
    assert_eq!(p.vocab_size, 262);
    assert_eq!(p.head_dim(), 16);

    // F32: zero-copy when the buffer is aligned (a Vec<u8> of this size
    // comes from the global allocator, aligned to at least 8).
    let norm = f.tensor("norm.f32").unwrap();
    assert_eq!(norm.dims(), &[8, 2]);
    let vals: Vec<f32> = (0..16).map(|i| i as f32 * 0.5).collect();
    assert_eq!(norm.as_f32().unwrap(), &vals[..]);
    assert_eq!(norm.to_f32_vec().unwrap(), vals);
    let mut row = [0f32; 8];
    norm.dequantize_row(1, &mut row).unwrap();
    assert_eq!(&row, &vals[8..]);
    assert!(matches!(
        norm.dequantize_row(2, &mut row),
        Err(GgufError::RowOutOfRange { .. })
    ));
    assert!(matches!(
        norm.q4_1_blocks(),
        Err(GgufError::UnsupportedType { .. })
    ));

    // F16: 1.0, 1.0009765625, ...
    let emb = f.tensor("emb.f16").unwrap().to_f32_vec().unwrap();
    assert_eq!(emb[0], 1.0);
    assert_eq!(emb[1], 1.0 + 1.0 / 1024.0);

    // Q4_1 rows: dot product equals dequantised dot product.
    let w = f.tensor("w.q4_1").unwrap();
    assert_eq!(w.ty(), GgmlType::Q4_1);
    let blocks = w.q4_1_blocks().unwrap();
    assert_eq!(blocks.len(), 4);
    let x: Vec<f32> = (0..64).map(|i| (i as f32 - 30.0) / 16.0).collect();
    for r in 0..2u64 {
        let mut deq = vec![0f32; 64];
        w.dequantize_row(r, &mut deq).unwrap();
        let want: f32 = deq.iter().zip(&x).map(|(a, b)| a * b).sum();
        let got = quant::dot_q4_1_f32(&blocks[r as usize * 2..][..2], &x).unwrap();
        assert!((got - want).abs() < 1e-3, "{got} vs {want}");
    }

    // Q8_0, Q4_0 and Q6_K dequantise; Q2_K is reported as unsupported.
    let head = f.tensor("head.q8_0").unwrap();
    assert_eq!(head.q8_0_blocks().unwrap().len(), 3);
    assert_eq!(head.to_f32_vec().unwrap().len(), 96);
    assert_eq!(f.tensor("w.q4_0").unwrap().to_f32_vec().unwrap().len(), 32);
    let q6 = f.tensor("w.q6_k").unwrap();
    assert_eq!(q6.data().len(), 210);
    assert_eq!(q6.to_f32_vec().unwrap().len(), 256);
    let q2 = f.tensor("w.q2_k").unwrap();
    assert!(matches!(
        q2.to_f32_vec(),
        Err(GgufError::UnsupportedType {
            ty: GgmlType::Q2K,
            ..
        })
    ));
    assert!(matches!(
        f.tensor("nope"),
        Err(GgufError::TensorNotFound(_))
    ));

    // Metadata accessors.
    assert!(matches!(
        f.get_str("llama.block_count"),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        f.get_u32("missing"),
        Err(GgufError::MissingKey(_))
    ));
    assert!(matches!(
        f.get("tokenizer.ggml.token_type"),
        Some(MetaValue::Array(MetaArray::I32(v))) if v.len() == 262
    ));

    // Fingerprint: deterministic, sensitive to data and to metadata.
    let fp = f.fingerprint().unwrap();
    assert_eq!(
        fp,
        GgufFile::from_bytes(bytes.clone())
            .unwrap()
            .fingerprint()
            .unwrap()
    );
    let mut data_flip = bytes.clone();
    let last = data_flip.len() - 1;
    data_flip[last] ^= 1;
    assert_ne!(
        fp,
        GgufFile::from_bytes(data_flip)
            .unwrap()
            .fingerprint()
            .unwrap()
    );
    let other = small_model().kv("general.name", synth::s("x")).build();
    assert_ne!(
        fp,
        GgufFile::from_bytes(other).unwrap().fingerprint().unwrap()
    );
}

#[test]
fn synthetic_tokenizer_builds_and_round_trips() {
    let f = GgufFile::from_bytes(small_model().build()).unwrap();
    let t = Tokenizer::from_gguf(&f).unwrap();
    assert_eq!(t.vocab_size(), 262);
    let ids = t.encode("hello<|im_end|> 42").unwrap();
    // "hell" merged, then "o"; the control token; " ", "4", "2".
    assert_eq!(ids[0], t.token_id("hell").unwrap());
    assert!(ids.contains(&t.token_id("<|im_end|>").unwrap()));
    assert_eq!(t.decode(&ids).unwrap(), "hello<|im_end|> 42");
    assert!(t.is_eog(t.token_id("<|im_end|>").unwrap()));
    assert!(t.is_eog(t.token_id("<|endoftext|>").unwrap()));
    assert!(!t.is_eog(t.token_id("<|im_start|>").unwrap()));
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = small_model().build();
    for cut in 0..bytes.len() {
        match parse(&bytes[..cut]) {
            Err(
                GgufError::Truncated { .. }
                | GgufError::CountTooLarge { .. }
                | GgufError::TensorOutOfBounds { .. }
                | GgufError::DataPastEof { .. },
            ) => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    assert!(parse(&bytes).is_ok());
}

#[test]
fn bad_magic_and_versions() {
    let mut bytes = small_model().build();
    bytes[0] = b'g';
    assert!(matches!(parse(&bytes), Err(GgufError::BadMagic { found }) if &found == b"gGUF"));
    for v in [0u32, 1, 4, 0x0300_0000] {
        let mut b = small_model();
        b.version = v;
        assert!(
            matches!(parse(&b.build()), Err(GgufError::UnsupportedVersion(x)) if x == v),
            "version {v}"
        );
    }
    let mut b = small_model();
    b.version = 2;
    assert_eq!(parse(&b.build()).unwrap().version(), 2);
}

fn one_tensor(t: synth::T) -> Builder {
    Builder::new().kv("general.alignment", V::U32(32)).tensor(t)
}

#[test]
fn tensor_bounds_are_checked() {
    // Offset past the end of the file.
    let mut t = tensor("t", &[8], 0, vec![0; 32]);
    t.offset = Some(1 << 20);
    assert!(matches!(
        parse(&one_tensor(t).build()),
        Err(GgufError::TensorOutOfBounds { .. })
    ));

    // Offset that overflows when added to the data start.
    let mut t = tensor("t", &[8], 0, vec![0; 32]);
    t.offset = Some(u64::MAX - 31);
    assert!(matches!(
        parse(&one_tensor(t).build()),
        Err(GgufError::TensorOutOfBounds { .. })
    ));

    // Misaligned tensor offset.
    let mut t = tensor("t", &[8], 0, vec![0; 64]);
    t.offset = Some(4);
    assert!(matches!(
        parse(&one_tensor(t).build()),
        Err(GgufError::MisalignedTensor {
            offset: 4,
            alignment: 32,
            ..
        })
    ));

    // Declared shape larger than the data present.
    let t = tensor("t", &[16], 0, vec![0; 32]);
    assert!(matches!(
        parse(&one_tensor(t).build()),
        Err(GgufError::TensorOutOfBounds { .. })
    ));

    // Element count overflow, and overflow hidden behind a zero ne0.
    for dims in [
        &[u64::MAX, 2][..],
        &[1 << 32, 1 << 32],
        &[0, u64::MAX, u64::MAX],
    ] {
        let t = tensor("t", dims, 0, vec![0; 32]);
        assert!(
            matches!(
                parse(&one_tensor(t).build()),
                Err(GgufError::ShapeOverflow { .. })
            ),
            "{dims:?}"
        );
    }

    // Byte count overflow (elements fit, bytes do not).
    let t = tensor("t", &[1 << 62], 0, vec![0; 32]);
    assert!(matches!(
        parse(&one_tensor(t).build()),
        Err(GgufError::ShapeOverflow { .. } | GgufError::TensorOutOfBounds { .. })
    ));

    // Row length not a multiple of the block size.
    let t = tensor("t", &[33], 3, vec![0; 64]);
    assert!(matches!(
        parse(&one_tensor(t).build()),
        Err(GgufError::BadRowLength { .. })
    ));

    // Dimension counts.
    for dims in [&[][..], &[1, 1, 1, 1, 1]] {
        let t = tensor("t", dims, 0, vec![0; 32]);
        assert!(matches!(
            parse(&one_tensor(t).build()),
            Err(GgufError::BadDimCount { .. })
        ));
    }

    // Unknown ggml type.
    let t = tensor("t", &[8], 4, vec![0; 32]);
    assert!(matches!(
        parse(&one_tensor(t).build()),
        Err(GgufError::UnknownTensorType { ty: 4, .. })
    ));

    // Overlapping tensors.
    let mut b = one_tensor(tensor("a", &[16], 0, vec![0; 64]));
    let mut second = tensor("b", &[16], 0, vec![0; 64]);
    second.offset = Some(32);
    b = b.tensor(second);
    assert!(matches!(
        parse(&b.build()),
        Err(GgufError::TensorOverlap { .. })
    ));

    // Duplicate tensor names.
    let b = one_tensor(tensor("a", &[8], 0, vec![0; 32])).tensor(tensor("a", &[8], 0, vec![0; 32]));
    assert!(matches!(
        parse(&b.build()),
        Err(GgufError::DuplicateTensor(_))
    ));
}

#[test]
fn alignment_is_checked() {
    for a in [0u32, 3, 24] {
        let b = Builder::new()
            .kv("general.alignment", V::U32(a))
            .tensor(tensor("t", &[8], 0, vec![0; 32]));
        assert!(
            matches!(parse(&b.build()), Err(GgufError::BadAlignment(_))),
            "alignment {a}"
        );
    }
    let b = Builder::new().kv("general.alignment", synth::s("32"));
    assert!(matches!(parse(&b.build()), Err(GgufError::BadAlignment(_))));
    // Alignment 64 honoured for layout.
    let mut b = Builder::new()
        .kv("general.alignment", V::U32(64))
        .tensor(tensor("t", &[8], 0, vec![1; 32]));
    b.alignment = 64;
    let g = parse(&b.build()).unwrap();
    assert_eq!(g.data_offset() % 64, 0);
    // Default alignment (32) without the key.
    let g = parse(
        &Builder::new()
            .tensor(tensor("t", &[8], 0, vec![1; 32]))
            .build(),
    )
    .unwrap();
    assert_eq!(g.alignment(), 32);
}

#[test]
fn huge_counts_are_refused_before_allocating() {
    // Huge array count.
    for count in [u64::MAX, 1 << 40, 1_000_000] {
        let mut payload = 4u32.to_le_bytes().to_vec(); // u32 elements
        payload.extend_from_slice(&count.to_le_bytes());
        let b = Builder::new().kv("a", V::Raw(9, payload));
        assert!(
            matches!(parse(&b.build()), Err(GgufError::CountTooLarge { count: c, .. }) if c == count),
            "count {count}"
        );
    }
    // Huge string-array count: each string needs at least 8 bytes.
    let mut payload = 8u32.to_le_bytes().to_vec();
    payload.extend_from_slice(&(1u64 << 61).to_le_bytes());
    let b = Builder::new().kv("a", V::Raw(9, payload));
    assert!(matches!(
        parse(&b.build()),
        Err(GgufError::CountTooLarge { .. })
    ));
    // Huge string length.
    let mut payload = u64::MAX.to_le_bytes().to_vec();
    payload.extend_from_slice(b"abc");
    let b = Builder::new().kv("a", V::Raw(8, payload));
    assert!(matches!(
        parse(&b.build()),
        Err(GgufError::Truncated { .. })
    ));
    // Huge metadata and tensor counts.
    let mut b = Builder::new();
    b.kv_count = Some(u64::MAX);
    assert!(matches!(
        parse(&b.build()),
        Err(GgufError::CountTooLarge { .. })
    ));
    let mut b = Builder::new();
    b.tensor_count = Some(1 << 59);
    assert!(matches!(
        parse(&b.build()),
        Err(GgufError::CountTooLarge { .. })
    ));
    // Deeply nested arrays.
    let mut payload = Vec::new();
    for _ in 0..100 {
        payload.extend_from_slice(&9u32.to_le_bytes());
        payload.extend_from_slice(&1u64.to_le_bytes());
    }
    payload.extend_from_slice(&0u32.to_le_bytes());
    payload.extend_from_slice(&0u64.to_le_bytes());
    let b = Builder::new().kv("deep", V::Raw(9, payload));
    assert!(matches!(
        parse(&b.build()),
        Err(GgufError::NestingTooDeep { .. })
    ));
}

#[test]
fn bad_metadata_values() {
    let b = Builder::new().kv("a", V::Raw(13, vec![0; 8]));
    assert!(matches!(
        parse(&b.build()),
        Err(GgufError::UnknownValueType { ty: 13, .. })
    ));
    let b = Builder::new().kv("a", V::Raw(7, vec![2]));
    assert!(matches!(
        parse(&b.build()),
        Err(GgufError::InvalidBool { value: 2, .. })
    ));
    let b = Builder::new().kv("a", V::U8(1)).kv("a", V::U8(2));
    assert!(matches!(parse(&b.build()), Err(GgufError::DuplicateKey(_))));
    let mut payload = 2u64.to_le_bytes().to_vec();
    payload.extend_from_slice(&[0xff, 0xfe]);
    let b = Builder::new().kv("a", V::Raw(8, payload));
    assert!(matches!(
        parse(&b.build()),
        Err(GgufError::InvalidUtf8 { .. })
    ));

    // Every value type parses.
    let all = Builder::new()
        .kv("u8", V::Raw(0, vec![7]))
        .kv("i8", V::Raw(1, vec![0xff]))
        .kv("u16", V::Raw(2, 500u16.to_le_bytes().to_vec()))
        .kv("i16", V::Raw(3, (-5i16).to_le_bytes().to_vec()))
        .kv("u32", V::U32(7))
        .kv("i32", V::I32(-7))
        .kv("f32", V::F32(1.5))
        .kv("bool", V::Bool(true))
        .kv("str", synth::s("hi"))
        .kv("u64", V::U64(1 << 40))
        .kv("i64", V::Raw(11, (-1i64).to_le_bytes().to_vec()))
        .kv("f64", V::Raw(12, 2.5f64.to_le_bytes().to_vec()))
        .kv(
            "arr_bool",
            V::Raw(
                9,
                [7u32.to_le_bytes().as_slice(), &2u64.to_le_bytes(), &[1, 0]].concat(),
            ),
        )
        .kv(
            "arr_arr",
            V::Raw(
                9,
                [
                    9u32.to_le_bytes().as_slice(),
                    &1u64.to_le_bytes(),
                    &0u32.to_le_bytes(),
                    &1u64.to_le_bytes(),
                    &[3],
                ]
                .concat(),
            ),
        )
        .build();
    let g = parse(&all).unwrap();
    assert_eq!(g.get("i8"), Some(&MetaValue::I8(-1)));
    assert_eq!(g.get_u32("u16").unwrap(), 500);
    assert!(g.get_u32("i16").is_err(), "negative is not u32");
    assert_eq!(g.get_f64("f64").unwrap(), 2.5);
    assert_eq!(g.get_u64("u64").unwrap(), 1 << 40);
    assert!(g.get_u32("u64").is_err(), "out of u32 range");
    assert!(g.get_bool("bool").unwrap());
    assert_eq!(
        g.get("arr_bool"),
        Some(&MetaValue::Array(MetaArray::Bool(vec![true, false])))
    );
    assert_eq!(
        g.get("arr_arr"),
        Some(&MetaValue::Array(MetaArray::Array(vec![MetaArray::U8(
            vec![3]
        )])))
    );
}

/// Exercises everything a loader would do with a file that parsed.
fn use_everything(bytes: &[u8]) {
    let Ok(f) = GgufFile::from_bytes(bytes) else {
        return;
    };
    for view in f.tensor_views() {
        let Ok(v) = view else { continue };
        let _ = v.to_f32_vec();
        let _ = v.as_f32();
        let mut row = vec![0f32; v.info().row_len().min(1 << 16) as usize];
        let _ = v.dequantize_row(0, &mut row);
        if let Ok(b) = v.q4_1_blocks() {
            let x = vec![1f32; b.len() * 32];
            let _ = quant::dot_q4_1_f32(b, &x);
        }
    }
    let _ = f.fingerprint();
    let _ = LlamaParams::from_gguf(&f);
    if let Ok(t) = Tokenizer::from_gguf(&f) {
        if let Ok(ids) = t.encode("hello <|im_start|> 12") {
            let _ = t.decode(&ids);
        }
        let _ = t.decode(&[0, 1, 2, 300, u32::MAX]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random byte flips anywhere in the file.
    #[test]
    fn random_flips_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = small_model().build();
        for (i, x) in flips {
            let i = i.index(bytes.len());
            bytes[i] ^= x | 1;
        }
        use_everything(&bytes);
    }

    /// Random byte flips in the structural parts: the fixed header and the
    /// tensor infos (the metadata is dominated by vocabulary strings).
    #[test]
    fn structural_flips_never_panic(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        in_header in any::<bool>(),
    ) {
        let (mut bytes, layout) = small_model().build_with_layout();
        let range = if in_header { 0..24 } else { layout.infos_start..layout.header_len };
        for (i, x) in flips {
            let i = range.start + i.index(range.len());
            bytes[i] ^= x | 1;
        }
        use_everything(&bytes);
    }

    /// Truncation plus garbage tail.
    #[test]
    fn truncated_with_garbage_never_panics(cut in any::<prop::sample::Index>(), tail in prop::collection::vec(any::<u8>(), 0..64)) {
        let bytes = small_model().build();
        let mut b = bytes[..cut.index(bytes.len())].to_vec();
        b.extend_from_slice(&tail);
        use_everything(&b);
    }
}
