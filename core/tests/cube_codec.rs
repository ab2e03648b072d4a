//! MemCube codec: round trips for every kind, strict refusal of bad input,
//! and property tests over random cubes and random corruption.

use memkern_core::cube::{
    self, Activation, AdapterFormat, BlobRef, Cube, CubeKind, CubeRef, DecodeError, Embedding,
    HEADER_LEN, Int8Vec, InvalidCube, KvDtype, KvLayout, MAX_PAYLOAD_LEN, Metadata, OwnedCube,
    Parametric, Payload, Plaintext, SourceKind, TargetModules, Visibility,
};
use memkern_core::ids::{BlobDigest, CubeId, Fingerprint, NamespaceId, UserId};
use memkern_core::lifecycle::LifecycleState;
use memkern_core::time::Timestamp;
use proptest::prelude::*;

const T0: Timestamp = Timestamp(1_683_553_000_000);

fn meta(id: u8) -> Metadata<&'static str> {
    let mut m = Metadata::new(
        CubeId([id; 16]),
        UserId(7),
        NamespaceId(3),
        T0,
        Timestamp(T0.0 + 5_000),
        SourceKind::DialogueTurn,
    );
    m.provenance.source_ref = Some("conv-26:D1:3");
    m.tags.push("locomo").expect("capacity");
    m
}

fn plaintext_cube<'a>(text: &'a str, emb: &'a [u8]) -> CubeRef<'a> {
    Cube {
        meta: meta(1),
        payload: Payload::Plaintext(Plaintext {
            text,
            embedding: Some(Embedding {
                embedder: Fingerprint([9; 16]),
                scale: 0.0123,
                values: Int8Vec(emb),
            }),
        }),
    }
}

fn activation() -> Activation {
    let layout = KvLayout {
        dtype: KvDtype::F16,
        layers: 30,
        kv_heads: 3,
        head_dim: 64,
    };
    let kv_bytes = layout.tensor_bytes(1000).expect("no overflow");
    Activation {
        model: Fingerprint([1; 16]),
        tokenizer: Fingerprint([2; 16]),
        token_count: 1000,
        first_position: 0,
        layout,
        kv_bytes,
        blob: BlobRef {
            digest: BlobDigest([3; 32]),
            size: kv_bytes + 4096,
        },
    }
}

fn parametric() -> Parametric {
    Parametric {
        base_model: Fingerprint([1; 16]),
        format: AdapterFormat::SafetensorsLora,
        rank: 8,
        alpha: 16.0,
        targets: TargetModules::Q.union(TargetModules::V),
        blob: BlobRef {
            digest: BlobDigest([4; 32]),
            size: 1 << 20,
        },
    }
}

fn encode(c: &CubeRef<'_>) -> Vec<u8> {
    cube::encode_to_vec(c).expect("valid cube encodes")
}

/// Builds an envelope around arbitrary payload bytes with a correct CRC, to
/// reach the semantic checks behind the checksum.
fn forge(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"MKCB");
    out.push(1);
    out.push(kind);
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    let mut d = crc.digest();
    d.update(&out[..12]);
    d.update(payload);
    out.extend_from_slice(&d.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    out
}

#[test]
fn plaintext_round_trip_borrowed_and_owned() {
    let text = "Caroline went to the LGBTQ support group yesterday and found it powerful.";
    let emb: Vec<u8> = (0..384).map(|i| (i * 7 % 251) as u8).collect();
    let c = plaintext_cube(text, &emb);
    let bytes = encode(&c);
    assert_eq!(cube::encoded_len(&c).expect("size"), bytes.len());
    let back = cube::decode(&bytes).expect("decodes");
    assert_eq!(back, c);
    let owned: OwnedCube = cube::decode_owned(&bytes).expect("decodes owned");
    assert_eq!(owned.plaintext().expect("plaintext").text, text);
    // Owned and borrowed encode to the same bytes.
    assert_eq!(cube::encode_to_vec(&owned).expect("encodes"), bytes);
    // The header says what it holds.
    let h = cube::verify(&bytes).expect("verifies");
    assert_eq!(h.kind, CubeKind::Plaintext);
    assert_eq!(h.total_len(), bytes.len());
}

#[test]
fn typical_plaintext_overhead() {
    let text = "x".repeat(100);
    let emb = [5u8; 384];
    let mut c = plaintext_cube(&text, &emb);
    c.meta.tags.clear();
    c.meta.provenance.source_ref = None;
    let len = encode(&c).len();
    let raw = 100 + 384;
    println!(
        "typical plaintext cube: {len} bytes for {raw} bytes of text+embedding (overhead {} bytes)",
        len - raw
    );
    assert!(len - raw < 160, "overhead {} too large", len - raw);
}

#[test]
fn activation_and_parametric_round_trip() {
    for payload in [
        Payload::Activation(activation()),
        Payload::Parametric(parametric()),
    ] {
        let c: CubeRef<'_> = Cube {
            meta: meta(2),
            payload,
        };
        let bytes = encode(&c);
        assert_eq!(cube::decode(&bytes).expect("decodes"), c);
        assert_eq!(cube::decode_owned(&bytes).expect("owned").kind(), c.kind());
    }
}

#[test]
fn json_round_trip_of_owned_cube() {
    let emb = [0x80u8, 0x7f, 0, 1];
    let c = plaintext_cube("hello", &emb);
    let owned = cube::decode_owned(&encode(&c)).expect("owned");
    let json = serde_json::to_string_pretty(&owned).expect("json");
    assert!(
        json.contains("\"values\": [\n") && json.contains("-128"),
        "{json}"
    );
    assert!(
        json.contains("01010101010101010101010101010101"),
        "ids are hex: {json}"
    );
    let back: OwnedCube = serde_json::from_str(&json).expect("parses");
    assert_eq!(back, owned);
}

#[test]
fn header_errors_are_typed() {
    let emb = [1u8; 8];
    let good = encode(&plaintext_cube("abc", &emb));

    let mut b = good.clone();
    b[0] = b'X';
    assert!(matches!(
        cube::decode(&b),
        Err(DecodeError::BadMagic { .. })
    ));

    let mut b = good.clone();
    b[4] = 2;
    let err = cube::decode(&b).expect_err("future version");
    assert_eq!(
        err,
        DecodeError::UnsupportedVersion {
            found: 2,
            supported: 1
        }
    );
    assert!(err.to_string().contains("version 2"), "{err}");

    let mut b = good.clone();
    b[5] = 9;
    assert_eq!(cube::decode(&b), Err(DecodeError::UnknownKind(9)));

    let mut b = good.clone();
    b[6] = 1;
    assert_eq!(cube::decode(&b), Err(DecodeError::UnknownFlags(1)));

    let mut b = good.clone();
    b[8..12].copy_from_slice(&(MAX_PAYLOAD_LEN + 1).to_le_bytes());
    assert!(matches!(
        cube::decode(&b),
        Err(DecodeError::TooLarge { .. })
    ));

    let mut b = good.clone();
    let last = b.len() - 1;
    b[last] ^= 0x10;
    assert!(matches!(
        cube::decode(&b),
        Err(DecodeError::CrcMismatch { .. })
    ));

    for cut in 0..good.len() {
        assert!(
            matches!(
                cube::decode(&good[..cut]),
                Err(DecodeError::Truncated { .. })
            ),
            "cut at {cut}"
        );
    }

    let mut b = good.clone();
    b.push(0);
    assert_eq!(
        cube::decode(&b),
        Err(DecodeError::TrailingBytes { extra: 1 })
    );
    // ...but a stream of cubes decodes one at a time.
    let mut two = good.clone();
    two.extend_from_slice(&good);
    let (_, used) = cube::decode_prefix(&two).expect("first");
    assert_eq!(used, good.len());
    cube::decode(&two[used..]).expect("second");
}

#[test]
fn semantic_errors_behind_a_valid_crc() {
    // An activation cube whose layout does not match its size.
    let mut a = activation();
    a.kv_bytes += 1;
    let mut payload = postcard::to_allocvec(&meta(3)).expect("meta");
    payload.extend(postcard::to_allocvec(&a).expect("activation"));
    let err = cube::decode(&forge(2, &payload)).expect_err("mismatch");
    assert!(
        matches!(
            err,
            DecodeError::Invalid(InvalidCube::KvSizeMismatch { .. })
        ),
        "{err:?}"
    );

    // Version 2 without a previous id.
    let mut m = meta(3);
    m.version = 2;
    let mut payload = postcard::to_allocvec(&m).expect("meta");
    payload.extend(postcard::to_allocvec(&parametric()).expect("parametric"));
    assert!(matches!(
        cube::decode(&forge(3, &payload)),
        Err(DecodeError::Invalid(InvalidCube::VersionLink { .. }))
    ));

    // A kind byte that does not match the payload's shape.
    let mut payload = postcard::to_allocvec(&meta(3)).expect("meta");
    payload.extend(postcard::to_allocvec(&parametric()).expect("parametric"));
    assert!(cube::decode(&forge(2, &payload)).is_err());

    // A tombstone that still carries text is refused on encode and decode.
    let mut c = plaintext_cube("secret", &[1]);
    c.meta.lifecycle = LifecycleState::Deleted;
    assert!(cube::encode_to_vec(&c).is_err());

    // Too many tags cannot even be represented: the decoder refuses 17.
    let mut m = meta(3);
    m.tags.clear();
    let mut payload = postcard::to_allocvec(&m).expect("meta");
    let tags_at = payload.len() - 2; // tags (len 0) then sensitivity
    assert_eq!(payload[tags_at], 0);
    let mut forged = payload[..tags_at].to_vec();
    forged.push(17);
    for _ in 0..17 {
        forged.extend_from_slice(&[1, b't']);
    }
    forged.push(payload[tags_at + 1]);
    payload = forged;
    payload.extend(
        postcard::to_allocvec(&Plaintext::<&str, &[u8]> {
            text: "x",
            embedding: None,
        })
        .expect("pt"),
    );
    assert!(matches!(
        cube::decode(&forge(1, &payload)),
        Err(DecodeError::Payload(_))
    ));
}

#[test]
fn bad_utf8_is_refused() {
    let c = plaintext_cube("hello", &[1]);
    let bytes = encode(&c);
    let pos = bytes
        .windows(5)
        .position(|w| w == b"hello")
        .expect("text present");
    let mut payload = bytes[HEADER_LEN..].to_vec();
    payload[pos - HEADER_LEN] = 0xff;
    assert!(matches!(
        cube::decode(&forge(1, &payload)),
        Err(DecodeError::Payload(_))
    ));
}

fn arb_state() -> impl Strategy<Value = LifecycleState> {
    prop::sample::select(LifecycleState::ALL.to_vec())
}

prop_compose! {
    fn arb_meta()(id in any::<[u8; 16]>(), prev in any::<[u8; 16]>(), version in 1u32..5,
                  owner in any::<u64>(), ns in any::<u64>(), t in any::<i64>(), dt in 0i64..1_000_000,
                  state in arb_state(), hits in any::<u32>(), vis in 0u8..3,
                  readers in prop::collection::vec(any::<u64>(), 0..8),
                  tags in prop::collection::vec("[a-z]{1,20}", 0..16),
                  src in proptest::option::of("[ -~]{0,100}"), ttl in proptest::option::of(any::<i64>()))
                  -> (Metadata<String>, LifecycleState) {
        let mut m = Metadata::new(CubeId(id), UserId(owner), NamespaceId(ns), Timestamp(t),
                                  Timestamp(t.saturating_add(dt)), SourceKind::Document);
        if version > 1 && prev != id {
            m.version = version;
            m.previous = Some(CubeId(prev));
        }
        m.lifecycle = state;
        m.usage.hits = hits;
        m.access.visibility = [Visibility::Private, Visibility::Shared, Visibility::Public][vis as usize];
        for r in readers { m.access.readers.push(UserId(r)).expect("<= 8"); }
        for tag in tags { m.tags.push(tag).expect("<= 16"); }
        m.provenance.source_ref = src;
        m.expires_at = ttl.map(Timestamp);
        (m, state)
    }
}

prop_compose! {
    fn arb_cube()((meta, state) in arb_meta(), text in ".{0,300}",
                  emb in proptest::option::of(prop::collection::vec(any::<u8>(), 1..512)),
                  scale in 1e-6f32..10.0, which in 0u8..3) -> OwnedCube {
        let payload = match which {
            0 if state == LifecycleState::Deleted => Payload::Plaintext(Plaintext { text: String::new(), embedding: None }),
            0 => Payload::Plaintext(Plaintext {
                text,
                embedding: emb.map(|v| Embedding { embedder: Fingerprint([1; 16]), scale, values: Int8Vec(v) }),
            }),
            1 => Payload::Activation(activation()),
            _ => Payload::Parametric(parametric()),
        };
        Cube { meta, payload }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn prop_round_trip(c in arb_cube()) {
        let bytes = cube::encode_to_vec(&c).expect("valid cube encodes");
        let owned = cube::decode_owned(&bytes).expect("decodes");
        prop_assert_eq!(&owned, &c);
        let borrowed = cube::decode(&bytes).expect("decodes borrowed");
        prop_assert_eq!(&cube::encode_to_vec(&borrowed).expect("re-encodes"), &bytes);
    }

    #[test]
    fn prop_any_bit_flip_is_detected(c in arb_cube(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = cube::encode_to_vec(&c).expect("encodes");
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        prop_assert!(cube::decode(&bytes).is_err());
        prop_assert!(cube::decode_owned(&bytes).is_err());
    }

    #[test]
    fn prop_any_truncation_is_detected(c in arb_cube(), pos in any::<prop::sample::Index>()) {
        let bytes = cube::encode_to_vec(&c).expect("encodes");
        let cut = pos.index(bytes.len());
        prop_assert!(cube::decode(&bytes[..cut]).is_err());
    }

    #[test]
    fn prop_random_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..600), fix_header in any::<bool>()) {
        if fix_header && bytes.len() >= HEADER_LEN {
            // Give the garbage a plausible header so the payload parser runs.
            let payload = bytes[HEADER_LEN..].to_vec();
            bytes = forge(1 + bytes[5] % 3, &payload);
        }
        let _ = cube::decode(&bytes);
        let _ = cube::decode_owned(&bytes);
    }
}
