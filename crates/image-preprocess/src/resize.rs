//! Pillow's `Image.resize(size, BICUBIC)` for 8-bit RGB (libImaging/Resample.c semantics):
//! separable, horizontal pass first on only the source rows the vertical pass reads, 22-bit
//! fixed-point weights, uint8 intermediate. Float or torch-style resizing moves MedDr's logits
//! by ~0.1, so every rounding step here follows Pillow.

use crate::RgbImage;

const PRECISION_BITS: u32 = 32 - 8 - 2;
const BICUBIC_SUPPORT: f64 = 2.0;

/// Keys' cubic with a = −0.5, as Pillow evaluates it (in f64).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output sample: first source index, tap count, and fixed-point weights (`ksize` each).
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

fn precompute(in_size: usize, out_size: usize) -> Coeffs {
    // Pillow takes the box edges as C floats, then widens to double.
    let in0 = 0f32;
    let in1 = in_size as f32;
    let scale = (in1 - in0) as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = BICUBIC_SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = in0 as f64 + (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) truncates toward zero; clamping mirrors Pillow's bounds checks.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax_abs = ((center + support + 0.5) as i64)
            .min(in_size as i64)
            .max(xmin as i64) as usize;
        let n = (xmax_abs - xmin).min(ksize);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = bicubic((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for (x, kx) in k.iter().enumerate().take(n) {
            let v = if ww != 0.0 { kx / ww } else { *kx };
            let f = v * (1u32 << PRECISION_BITS) as f64;
            // Round half away from zero, then C's truncating cast.
            weights[xx * ksize + x] = if v < 0.0 {
                (f - 0.5) as i32
            } else {
                (f + 0.5) as i32
            };
        }
        bounds.push((xmin, n));
    }
    Coeffs {
        ksize,
        bounds,
        weights,
    }
}

#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes with Pillow's fixed-point BICUBIC. A pass whose size is unchanged is skipped, as in
/// Pillow. A zero target size or malformed buffer yields an empty image instead of panicking.
pub fn resize_bicubic(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (iw, ih) = (img.width as usize, img.height as usize);
    let (ow, oh) = (width as usize, height as usize);
    if ow == 0 || oh == 0 || iw == 0 || ih == 0 || img.data.len() != iw * ih * 3 {
        return RgbImage {
            width: 0,
            height: 0,
            data: Vec::new(),
        };
    }
    if iw == ow && ih == oh {
        return img.clone();
    }
    let hc = precompute(iw, ow);
    let mut vc = precompute(ih, oh);
    // Horizontal pass only over the source rows some output row reads.
    let (mut src, mut sw, mut sh) = (std::borrow::Cow::Borrowed(&img.data), iw, ih);
    if iw != ow {
        let first = vc.bounds[0].0;
        let last = vc.bounds[oh - 1].0 + vc.bounds[oh - 1].1;
        let rows = last.saturating_sub(first);
        let mut tmp = vec![0u8; rows * ow * 3];
        for y in 0..rows {
            let srow = &img.data[(y + first) * iw * 3..(y + first + 1) * iw * 3];
            let drow = &mut tmp[y * ow * 3..(y + 1) * ow * 3];
            for (xx, &(xmin, n)) in hc.bounds.iter().enumerate() {
                let k = &hc.weights[xx * hc.ksize..xx * hc.ksize + n];
                let mut s = [1i32 << (PRECISION_BITS - 1); 3];
                for (x, &w) in k.iter().enumerate() {
                    let p = &srow[(xmin + x) * 3..(xmin + x) * 3 + 3];
                    for c in 0..3 {
                        s[c] = s[c].wrapping_add(p[c] as i32 * w);
                    }
                }
                drow[xx * 3..xx * 3 + 3].copy_from_slice(&[clip8(s[0]), clip8(s[1]), clip8(s[2])]);
            }
        }
        for b in vc.bounds.iter_mut() {
            b.0 -= first;
        }
        src = std::borrow::Cow::Owned(tmp);
        sw = ow;
        sh = rows;
    }
    if ih == oh {
        return RgbImage {
            width,
            height,
            data: src.into_owned(),
        };
    }
    let mut out = vec![0u8; ow * oh * 3];
    for (yy, &(ymin, n)) in vc.bounds.iter().enumerate() {
        let k = &vc.weights[yy * vc.ksize..yy * vc.ksize + n];
        let drow = &mut out[yy * ow * 3..(yy + 1) * ow * 3];
        for (xx, d) in drow.iter_mut().enumerate() {
            let mut s = 1i32 << (PRECISION_BITS - 1);
            for (y, &w) in k.iter().enumerate() {
                let row = ymin + y;
                if row < sh {
                    s = s.wrapping_add(src[row * sw * 3 + xx] as i32 * w);
                }
            }
            *d = clip8(s);
        }
    }
    RgbImage {
        width,
        height,
        data: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(20, 448), (500, 448), (720, 448), (3, 7)] {
            let c = precompute(i, o);
            for (xx, &(_, n)) in c.bounds.iter().enumerate() {
                let s: i64 = c.weights[xx * c.ksize..xx * c.ksize + n]
                    .iter()
                    .map(|&w| w as i64)
                    .sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= n as i64,
                    "{i}->{o} at {xx}: {s}"
                );
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::filled(37, 11, [7, 200, 255]).unwrap();
        let r = resize_bicubic(&img, 448, 448);
        assert!(r.data.chunks(3).all(|p| p == [7, 200, 255]));
        let r = resize_bicubic(&img, 5, 3);
        assert!(r.data.chunks(3).all(|p| p == [7, 200, 255]));
    }
}
