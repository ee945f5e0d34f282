//! Every image format through the path user images take (format sniffing; PNG, BMP, TIFF, WebP, GIF via the
//! `image`/`gif` crates, JPEG via ours; mode conversion as Pillow), then pad-to-square and the bicubic resize
//! on a small target so each input stays cheap.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((img, _notes)) = meddr_image::decode_rgb_with_notes(data) else { return };
    assert_eq!(img.data.len() as u64, u64::from(img.width) * u64::from(img.height) * 3);
    if u64::from(img.width) * u64::from(img.height) <= 1 << 16 {
        let sq = meddr_image::expand_to_square(&img, [0, 0, 0]);
        let small = meddr_image::resize_bicubic(&sq, 8, 8);
        let _ = meddr_image::normalize_chw(&small, [0.5; 3], [0.25; 3]);
    }
});
