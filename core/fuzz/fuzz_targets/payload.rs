//! Fuzz the payload parser behind the checksum: the first byte picks the
//! kind, the rest becomes the payload of an envelope with a *correct* CRC,
//! so the fuzzer explores postcard parsing and the semantic rules instead of
//! bouncing off the CRC check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memkern_core::cube;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, payload)) = data.split_first() else {
        return;
    };
    let mut bytes = Vec::with_capacity(cube::HEADER_LEN + payload.len());
    bytes.extend_from_slice(&cube::MAGIC);
    bytes.push(cube::FORMAT_VERSION);
    bytes.push(1 + kind % 3);
    bytes.extend_from_slice(&0u16.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    let mut digest = crc.digest();
    digest.update(&bytes[..12]);
    digest.update(payload);
    bytes.extend_from_slice(&digest.finalize().to_le_bytes());
    bytes.extend_from_slice(payload);
    if let Ok(c) = cube::decode(&bytes) {
        let again = cube::encode_to_vec(&c).expect("an accepted cube re-encodes");
        assert_eq!(cube::decode(&again).expect("re-encoded cube decodes"), c);
        let owned = cube::decode_owned(&bytes).expect("owned decode agrees");
        assert_eq!(cube::encode_to_vec(&owned).expect("re-encodes"), again);
    }
});
