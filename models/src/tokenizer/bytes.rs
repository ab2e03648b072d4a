//! GPT-2's byte-level alphabet: each byte is shown as a printable character
//! in token strings.

/// Whether byte `b` is shown as the character with the same code point.
fn is_direct(b: u32) -> bool {
    matches!(b, 33..=126 | 161..=172 | 174..=255)
}

/// The byte a byte-level character stands for, `None` for characters
/// outside the 256-character alphabet.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let c = u32::from(c);
    if is_direct(c) {
        return u8::try_from(c).ok();
    }
    // The 68 bytes that are not shown directly are mapped, in increasing
    // order, to U+0100..U+0143: 0..=32, then 127..=160, then 173.
    let k = c.checked_sub(256)?;
    match k {
        0..=32 => u8::try_from(k).ok(),
        33..=66 => u8::try_from(127 + (k - 33)).ok(),
        67 => Some(173),
        _ => None,
    }
}

/// Decodes a byte-level token string into raw bytes, appending to `out`.
/// Characters outside the alphabet are kept as their UTF-8 bytes (llama.cpp
/// would refuse them; they never occur in a valid GPT-2 vocabulary).
pub(crate) fn decode_into(token: &str, out: &mut Vec<u8>) {
    for c in token.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The original construction from GPT-2's `bytes_to_unicode`.
    fn byte_to_char_reference() -> Vec<char> {
        let mut bs: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
        let mut cs = bs.clone();
        let mut n = 0;
        for b in 0..256 {
            if !bs.contains(&b) {
                bs.push(b);
                cs.push(256 + n);
                n += 1;
            }
        }
        let mut table = vec!['\0'; 256];
        for (b, c) in bs.iter().zip(&cs) {
            table[*b as usize] = char::from_u32(*c).unwrap();
        }
        table
    }

    #[test]
    fn inverse_of_gpt2_table() {
        let table = byte_to_char_reference();
        for (b, c) in table.iter().enumerate() {
            assert_eq!(char_to_byte(*c), Some(b as u8), "byte {b}");
        }
        assert_eq!(char_to_byte('\u{0144}'), None);
        assert_eq!(char_to_byte('€'), None);
        assert_eq!(char_to_byte('Ġ'), Some(b' '));
        assert_eq!(char_to_byte('Ċ'), Some(b'\n'));
    }
}
