//! The binary envelope: a 16-byte header (magic, version, kind, flags,
//! length, CRC-32) around a postcard payload. See `core/FORMAT.md`.

use serde::{Deserialize, Serialize};

use super::error::{DecodeError, EncodeError};
use super::meta::Metadata;
use super::payload::{ByteStorage, CubeKind, Plaintext};
use super::{Cube, Payload};

/// The four magic bytes every cube starts with.
pub const MAGIC: [u8; 4] = *b"MKCB";
/// The format version this build writes and the highest it reads.
pub const FORMAT_VERSION: u8 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 16;
/// Largest payload accepted (bytes after the header).
pub const MAX_PAYLOAD_LEN: u32 = 128 * 1024;

const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// The parsed fixed header of a cube.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Header {
    /// Format version (always [`FORMAT_VERSION`] once parsed).
    pub version: u8,
    /// Payload kind.
    pub kind: CubeKind,
    /// Flag bits (none are defined in version 1; must be zero).
    pub flags: u16,
    /// Payload length in bytes.
    pub payload_len: u32,
    /// CRC-32/ISO-HDLC over header bytes 0..12 and the payload.
    pub crc: u32,
}

impl Header {
    /// Parses and checks the header at the start of `bytes` (the payload and
    /// CRC are not checked here).
    pub fn parse(bytes: &[u8]) -> Result<Header, DecodeError> {
        let Some(h) = bytes.first_chunk::<HEADER_LEN>() else {
            return Err(DecodeError::Truncated {
                needed: HEADER_LEN,
                available: bytes.len(),
            });
        };
        let [
            m0,
            m1,
            m2,
            m3,
            version,
            kind,
            f0,
            f1,
            l0,
            l1,
            l2,
            l3,
            c0,
            c1,
            c2,
            c3,
        ] = *h;
        let magic = [m0, m1, m2, m3];
        if magic != MAGIC {
            return Err(DecodeError::BadMagic { found: magic });
        }
        if version != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let kind = CubeKind::from_byte(kind).ok_or(DecodeError::UnknownKind(kind))?;
        let flags = u16::from_le_bytes([f0, f1]);
        if flags != 0 {
            return Err(DecodeError::UnknownFlags(flags));
        }
        let payload_len = u32::from_le_bytes([l0, l1, l2, l3]);
        if payload_len > MAX_PAYLOAD_LEN {
            return Err(DecodeError::TooLarge {
                len: payload_len,
                max: MAX_PAYLOAD_LEN,
            });
        }
        Ok(Header {
            version,
            kind,
            flags,
            payload_len,
            crc: u32::from_le_bytes([c0, c1, c2, c3]),
        })
    }

    /// Total encoded size of the cube this header starts.
    pub fn total_len(&self) -> usize {
        // payload_len <= MAX_PAYLOAD_LEN (128 KiB), so this cannot overflow.
        HEADER_LEN + self.payload_len as usize
    }

    fn write(&self, out: &mut [u8; HEADER_LEN]) {
        out[0..4].copy_from_slice(&MAGIC);
        out[4] = self.version;
        out[5] = self.kind.to_byte();
        out[6..8].copy_from_slice(&self.flags.to_le_bytes());
        out[8..12].copy_from_slice(&self.payload_len.to_le_bytes());
        out[12..16].copy_from_slice(&self.crc.to_le_bytes());
    }
}

fn crc_of(header: &[u8], payload: &[u8]) -> u32 {
    let mut d = CRC.digest();
    d.update(header.get(..12).unwrap_or(header));
    d.update(payload);
    d.finalize()
}

/// Serializes the payload (metadata, then the kind's body) with any flavor.
fn serialize_body<S, B, F>(cube: &Cube<S, B>, flavor: F) -> postcard::Result<F::Output>
where
    S: Serialize,
    B: AsRef<[u8]>,
    F: postcard::ser_flavors::Flavor,
{
    let mut ser = postcard::Serializer { output: flavor };
    cube.meta.serialize(&mut ser)?;
    match &cube.payload {
        Payload::Plaintext(p) => p.serialize(&mut ser)?,
        Payload::Activation(a) => a.serialize(&mut ser)?,
        Payload::Parametric(p) => p.serialize(&mut ser)?,
    }
    ser.output.finalize()
}

/// Exact encoded size of `cube` (header included).
pub fn encoded_len<S: Serialize, B: AsRef<[u8]>>(cube: &Cube<S, B>) -> Result<usize, EncodeError> {
    let body = serialize_body(cube, postcard::ser_flavors::Size::default())
        .map_err(EncodeError::Payload)?;
    Ok(HEADER_LEN + body)
}

/// Encodes `cube` into `out` without allocating; returns the bytes used.
///
/// The cube is validated first: memkern never writes a cube it would refuse
/// to read back.
pub fn encode_into<S, B>(cube: &Cube<S, B>, out: &mut [u8]) -> Result<usize, EncodeError>
where
    S: Serialize + AsRef<str>,
    B: AsRef<[u8]>,
{
    cube.validate()?;
    let Some((header, rest)) = out.split_first_chunk_mut::<HEADER_LEN>() else {
        return Err(EncodeError::BufferTooSmall);
    };
    let body_len = serialize_body(cube, postcard::ser_flavors::Slice::new(rest))
        .map_err(|e| match e {
            postcard::Error::SerializeBufferFull => EncodeError::BufferTooSmall,
            other => EncodeError::Payload(other),
        })?
        .len();
    let payload_len = u32::try_from(body_len)
        .ok()
        .filter(|l| *l <= MAX_PAYLOAD_LEN)
        .ok_or(EncodeError::TooLarge {
            len: body_len,
            max: MAX_PAYLOAD_LEN,
        })?;
    let mut h = Header {
        version: FORMAT_VERSION,
        kind: cube.kind(),
        flags: 0,
        payload_len,
        crc: 0,
    };
    h.write(header);
    h.crc = crc_of(header, rest.get(..body_len).unwrap_or_default());
    h.write(header);
    Ok(HEADER_LEN + body_len)
}

/// Encodes `cube` into a new vector.
#[cfg(feature = "alloc")]
pub fn encode_to_vec<S, B>(cube: &Cube<S, B>) -> Result<alloc::vec::Vec<u8>, EncodeError>
where
    S: Serialize + AsRef<str>,
    B: AsRef<[u8]>,
{
    let len = encoded_len(cube)?;
    let mut out = alloc::vec![0u8; len];
    let used = encode_into(cube, &mut out)?;
    out.truncate(used);
    Ok(out)
}

/// Checks the envelope of the cube at the start of `bytes` and returns its
/// header and payload slice.
fn open_envelope(bytes: &[u8]) -> Result<(Header, &[u8]), DecodeError> {
    let h = Header::parse(bytes)?;
    let total = h.total_len();
    let Some(cube_bytes) = bytes.get(..total) else {
        return Err(DecodeError::Truncated {
            needed: total,
            available: bytes.len(),
        });
    };
    let (head, payload) = cube_bytes.split_at(HEADER_LEN);
    let computed = crc_of(head, payload);
    if computed != h.crc {
        return Err(DecodeError::CrcMismatch {
            stored: h.crc,
            computed,
        });
    }
    Ok((h, payload))
}

fn take<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<(T, &'a [u8]), DecodeError> {
    postcard::take_from_bytes(bytes).map_err(DecodeError::Payload)
}

/// Parses a checked payload into a cube with string type `S` and byte type `B`.
fn parse_body<'a, S, B>(kind: CubeKind, payload: &'a [u8]) -> Result<Cube<S, B>, DecodeError>
where
    S: Deserialize<'a> + AsRef<str>,
    B: ByteStorage<'a> + AsRef<[u8]>,
{
    let (meta, rest) = take::<Metadata<S>>(payload)?;
    let (payload, rest) = match kind {
        CubeKind::Plaintext => {
            let (p, r) = take::<Plaintext<S, B>>(rest)?;
            (Payload::Plaintext(p), r)
        }
        CubeKind::Activation => {
            let (a, r) = take(rest)?;
            (Payload::Activation(a), r)
        }
        CubeKind::Parametric => {
            let (p, r) = take(rest)?;
            (Payload::Parametric(p), r)
        }
    };
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { extra: rest.len() });
    }
    let cube = Cube { meta, payload };
    cube.validate()?;
    Ok(cube)
}

/// Decodes the cube at the start of `bytes`, borrowing text and vectors from
/// it; returns the cube and the number of bytes it occupied.
///
/// Never allocates and never panics, whatever the input.
pub fn decode_prefix(bytes: &[u8]) -> Result<(super::CubeRef<'_>, usize), DecodeError> {
    let (h, payload) = open_envelope(bytes)?;
    let cube = parse_body(h.kind, payload)?;
    Ok((cube, h.total_len()))
}

/// Decodes exactly one cube occupying all of `bytes`, borrowing from it.
pub fn decode(bytes: &[u8]) -> Result<super::CubeRef<'_>, DecodeError> {
    let (cube, used) = decode_prefix(bytes)?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes {
            extra: bytes.len() - used,
        });
    }
    Ok(cube)
}

/// Checks that `bytes` hold exactly one valid cube, without keeping it.
pub fn verify(bytes: &[u8]) -> Result<Header, DecodeError> {
    decode(bytes)?;
    Header::parse(bytes)
}

/// Decodes exactly one cube into owned types.
///
/// The bytes are first decoded in place (no allocation); only once every
/// length in them is proven to be backed by real input bytes is the owned
/// copy made, so hostile input cannot trigger large allocations.
#[cfg(feature = "alloc")]
pub fn decode_owned(bytes: &[u8]) -> Result<super::OwnedCube, DecodeError> {
    decode(bytes)?;
    let (h, payload) = open_envelope(bytes)?;
    parse_body(h.kind, payload)
}
