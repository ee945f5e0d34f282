//! Our own libjpeg-turbo-exact JPEG decoder (`meddr_image::jpeg`), the riskiest parser: 1.3k lines by hand.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = meddr_image::jpeg::decode_rgb(data) {
        assert_eq!(img.data.len() as u64, u64::from(img.width) * u64::from(img.height) * 3);
    }
});
