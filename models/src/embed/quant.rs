//! Symmetric int8 quantisation of embedding vectors, the storage form of
//! the core's [`memkern_core::cube::Embedding`].

/// Quantises `v` to int8 with one symmetric scale: `scale = max|x| / 127`,
/// `q = round(x / scale)`, so `x ≈ q · scale`.
///
/// Exists because the MemCube stores embeddings as int8 (4× smaller than
/// f32, integer dot products on a microcontroller). The scale is always
/// finite and > 0, as the cube format requires: an all-zero (or empty)
/// vector gets scale 1. NaN components become 0 and ±∞ saturate to ±127
/// (with the scale taken over the finite components).
pub fn quantize_i8(v: &[f32]) -> (f32, Vec<i8>) {
    let max = v
        .iter()
        .filter(|x| x.is_finite())
        .fold(0.0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 && (max / 127.0) > 0.0 {
        max / 127.0
    } else {
        1.0
    };
    let q = v
        .iter()
        .map(|&x| {
            if x.is_nan() {
                0
            } else {
                // Clamped to [-127, 127] first, so the cast is exact.
                (x / scale).round().clamp(-127.0, 127.0) as i8
            }
        })
        .collect();
    (scale, q)
}

/// The f32 vector an int8 embedding stands for: `q · scale`.
///
/// Exists for re-ranking and checks on the host, where stored int8 vectors
/// are compared with freshly computed f32 ones.
pub fn dequantize_i8(scale: f32, q: &[i8]) -> Vec<f32> {
    q.iter().map(|&x| f32::from(x) * scale).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_close() {
        let v: Vec<f32> = (0..384)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 400.0)
            .collect();
        let (scale, q) = quantize_i8(&v);
        let back = dequantize_i8(scale, &q);
        let max_err = v
            .iter()
            .zip(&back)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(max_err <= scale / 2.0 + 1e-7, "{max_err} vs {scale}");
        assert!(q.iter().any(|&x| x == 127 || x == -127));
    }

    #[test]
    fn degenerate_inputs_keep_a_valid_scale() {
        for v in [
            vec![],
            vec![0.0; 4],
            vec![f32::NAN, 1.0],
            vec![f32::INFINITY, -0.5],
        ] {
            let (scale, q) = quantize_i8(&v);
            assert!(scale.is_finite() && scale > 0.0, "{v:?}");
            assert_eq!(q.len(), v.len());
        }
        let (_, q) = quantize_i8(&[f32::NEG_INFINITY, f32::NAN, 0.5]);
        assert_eq!(q, vec![-127, 0, 127]);
        // Subnormal maxima must not give a zero scale.
        let (scale, _) = quantize_i8(&[1e-45]);
        assert!(scale > 0.0);
    }
}
