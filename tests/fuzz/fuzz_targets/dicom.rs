//! DICOM files through `meddr_dicom::decode_to_rgb8` (preamble / meta / bare data set sniffing, the element
//! length walk, dicom-rs's parser, uncompressed, deflate, RLE, JPEG and JPEG 2000 frames, windowing, palette
//! and YBR conversion). The first byte also picks a frame and a user window, so those paths run too.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meddr_dicom::{decode_to_rgb8, DicomOptions};

fuzz_target!(|data: &[u8]| {
    let mut opts = DicomOptions::default();
    if let Some(&b) = data.first() {
        if b & 1 == 1 {
            opts.frame = Some(u32::from(b >> 4));
        }
        if b & 2 == 2 {
            opts.window = Some((f64::from(b) - 100.0, f64::from(b >> 2).max(1.0)));
        }
    }
    if let Ok(r) = decode_to_rgb8(data, &opts) {
        assert_eq!(
            r.data.len() as u64,
            u64::from(r.width) * u64::from(r.height) * 3
        );
    }
});
