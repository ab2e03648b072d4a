//! Fuzz the MemCube decoder: any input must give a cube or a typed error,
//! never a panic, and every accepted cube must re-encode to bytes that decode
//! to the same cube (postcard tolerates over-long varints, so the bytes
//! themselves need not be identical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use memkern_core::cube;

fuzz_target!(|data: &[u8]| {
    if let Ok((c, used)) = cube::decode_prefix(data) {
        let again = cube::encode_to_vec(&c).expect("an accepted cube re-encodes");
        assert_eq!(cube::decode(&again).expect("re-encoded cube decodes"), c);
        let owned = cube::decode_owned(&data[..used]).expect("owned decode agrees");
        assert_eq!(cube::encode_to_vec(&owned).expect("re-encodes"), again);
    }
    let _ = cube::decode(data);
});
