//! Untrusted input: truncations of real files at many lengths and random byte flips give `Ok` or `Err`, never
//! a panic or an unbounded allocation; a deflate bomb and absurd declared sizes are refused before anything
//! big is allocated; `is_dicom` never takes another image format; the pixel limit is applied.

use std::io::Write;
use std::path::{Path, PathBuf};

use meddr_dicom::{decode_to_rgb8, decode_to_rgb8_with_limit, is_dicom, DicomError, DicomOptions};

fn test_files() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/pydicom-test-files");
    assert!(
        d.join("CT_small.dcm").is_file(),
        "{} is missing: run tests/setup.sh (it fetches the pydicom 3.0.2 wheel's test files)",
        d.display()
    );
    d
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(test_files().join(name)).unwrap()
}

/// xorshift64*: reproducible pseudo-random numbers without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One file of every decoding path (native LE/BE/implicit, deflate, RLE, JPEG lossy/lossless, JPEG 2000
/// grey and colour, palette, YBR_FULL_422, 1-bit, 32-bit, multi-frame, MONOCHROME1).
const FILES: &[&str] = &[
    "CT_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "image_dfl.dcm",
    "SC_rgb_dcmtk_+eb+cy+np.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
    "SC_rgb_gdcm_KY.dcm",
    "SC_rgb_rle_16bit_2frame.dcm",
    "SC_ybr_full_422_uncompressed.dcm",
    "ExplVR_BigEnd.dcm",
    "examples_palette.dcm",
    "liver_1frame.dcm",
    "rtdose_rle.dcm",
    "dicomdirtests/77654033/CR1/6154",
];

#[test]
fn truncations_never_panic_and_fail_clearly() {
    let mut checked = 0;
    for name in FILES {
        let bytes = read(name);
        let full = decode_to_rgb8(&bytes, &DicomOptions::default());
        assert!(full.is_ok(), "{name}: {full:?}");
        // Every length near the start (preamble, meta, first elements), then ~300 spread over the file.
        let step = (bytes.len() / 300).max(1);
        let lengths = (0..bytes.len().min(400)).chain((400..bytes.len()).step_by(step));
        for len in lengths {
            let r = decode_to_rgb8(&bytes[..len], &DicomOptions::default());
            checked += 1;
            if let Err(e) = &r {
                let m = e.to_string();
                assert!(!m.is_empty() && m.len() < 600, "{name}[..{len}]: {m}");
            }
        }
    }
    println!("{checked} truncations of {} files", FILES.len());
    assert!(checked > 5000, "{checked}");
}

#[test]
fn random_byte_flips_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut ok, mut err) = (0, 0);
    for name in FILES {
        let bytes = read(name);
        for _ in 0..150 {
            let mut b = bytes.clone();
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
            // Half the time, damage the header area where lengths and attributes live.
            if rng.below(2) == 0 {
                let i = rng.below(b.len().min(1024));
                b[i] ^= 1 << rng.below(8);
            }
            let opts = DicomOptions {
                frame: (rng.below(3) == 0).then(|| rng.below(4) as u32),
                window: (rng.below(3) == 0).then(|| {
                    (
                        rng.below(2000) as f64 - 1000.0,
                        1.0 + rng.below(3000) as f64,
                    )
                }),
            };
            match decode_to_rgb8(&b, &opts) {
                Ok(r) => {
                    assert_eq!(r.data.len(), r.width as usize * r.height as usize * 3);
                    ok += 1;
                }
                Err(_) => err += 1,
            }
        }
    }
    println!("byte flips: {ok} decoded, {err} refused");
    assert!(ok > 0 && err > 0, "{ok} / {err}");
}

/// A meta group (explicit VR little endian) for `ts`, after the preamble.
fn file_with(ts: &str, dataset: &[u8]) -> Vec<u8> {
    let mut uid = ts.as_bytes().to_vec();
    if uid.len() % 2 == 1 {
        uid.push(0);
    }
    let mut meta = Vec::new();
    meta.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
    meta.extend_from_slice(&(uid.len() as u16).to_le_bytes());
    meta.extend_from_slice(&uid);
    let mut f = vec![0u8; 128];
    f.extend_from_slice(b"DICM");
    f.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
    f.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    f.extend_from_slice(&meta);
    f.extend_from_slice(dataset);
    f
}

/// Explicit VR little endian elements.
fn el(group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&group.to_le_bytes());
    v.extend_from_slice(&elem.to_le_bytes());
    v.extend_from_slice(vr);
    if matches!(vr, b"OB" | b"OW" | b"SQ" | b"UN" | b"UT") {
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        v.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    v.extend_from_slice(value);
    v
}

fn us(v: u16) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// A 4×4 8-bit MONOCHROME2 data set, with `extra` elements (sorted by tag) before the pixel data.
fn small_image(extra: &[Vec<u8>]) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend(el(0x0028, 0x0002, b"US", &us(1)));
    d.extend(el(0x0028, 0x0004, b"CS", b"MONOCHROME2 "));
    d.extend(el(0x0028, 0x0010, b"US", &us(4)));
    d.extend(el(0x0028, 0x0011, b"US", &us(4)));
    d.extend(el(0x0028, 0x0100, b"US", &us(8)));
    d.extend(el(0x0028, 0x0101, b"US", &us(8)));
    for e in extra {
        d.extend_from_slice(e);
    }
    d.extend(el(
        0x7FE0,
        0x0010,
        b"OB",
        &(0..16).map(|i| i * 16).collect::<Vec<u8>>(),
    ));
    d
}

#[test]
fn hand_made_files_decode() {
    let f = file_with("1.2.840.10008.1.2.1", &small_image(&[]));
    assert!(is_dicom(&f));
    let r = decode_to_rgb8(&f, &DicomOptions::default()).unwrap();
    // No window: c = 120, w = 241 over 0..240: y(0) = ((0 − 119.5) / 240 + 0.5) · 255 = 0.53 → 1,
    // y(240) = 255.5 → 255.
    assert_eq!((r.width, r.height), (4, 4));
    assert_eq!((r.data[0], r.data[45]), (1, 255));
    assert!(r.notes[0].contains("C=120 W=241"), "{:?}", r.notes);
}

#[test]
fn deflate_bomb_is_refused() {
    // 64 MiB of zeros in a private OB element, deflated (~64 kB): refused once inflation passes the cap
    // (16 MiB for a small pixel limit), not after.
    let mut dataset = small_image(&[]);
    dataset.extend(el(0x7FE1, 0x0010, b"OB", &vec![0u8; 64 << 20]));
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&dataset).unwrap();
    let bomb = file_with("1.2.840.10008.1.2.1.99", &z.finish().unwrap());
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    match decode_to_rgb8_with_limit(&bomb, &DicomOptions::default(), 1 << 12) {
        Err(DicomError::Corrupt { detail }) => assert!(detail.contains("deflate bomb"), "{detail}"),
        other => panic!("{other:?}"),
    }
    // The same data set, small, inflates and decodes.
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&small_image(&[])).unwrap();
    let ok = file_with("1.2.840.10008.1.2.1.99", &z.finish().unwrap());
    assert!(decode_to_rgb8(&ok, &DicomOptions::default()).is_ok());
}

#[test]
fn declared_lengths_beyond_the_data_are_refused_before_reading() {
    // A text element declaring 4 GB − 2 bytes in a 300-byte file.
    let mut d = small_image(&[]);
    let mut bad = el(0x0008, 0x0016, b"UT", b"");
    let n = bad.len();
    bad[n - 4..].copy_from_slice(&(u32::MAX - 1).to_le_bytes());
    bad.extend_from_slice(&d);
    d = bad;
    match decode_to_rgb8(
        &file_with("1.2.840.10008.1.2.1", &d),
        &DicomOptions::default(),
    ) {
        Err(DicomError::Truncated { detail }) => {
            assert!(
                detail.contains("(0008,0016) declares 4294967294 bytes"),
                "{detail}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn pixel_limit_and_dimension_checks() {
    let f = file_with("1.2.840.10008.1.2.1", &small_image(&[]));
    match decode_to_rgb8_with_limit(&f, &DicomOptions::default(), 15) {
        Err(DicomError::TooLarge {
            rows: 4,
            columns: 4,
            max_pixels: 15,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(decode_to_rgb8_with_limit(&f, &DicomOptions::default(), 16).is_ok());
}

#[test]
fn user_window_checks() {
    let f = file_with("1.2.840.10008.1.2.1", &small_image(&[]));
    for (c, w) in [
        (40.0, 0.0),
        (40.0, 0.99),
        (f64::NAN, 10.0),
        (0.0, f64::INFINITY),
    ] {
        let e = decode_to_rgb8(
            &f,
            &DicomOptions {
                window: Some((c, w)),
                frame: None,
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                DicomError::BadWindow {
                    origin: "from --window",
                    ..
                }
            ),
            "{e:?}"
        );
    }
    // Width 1: a threshold at c − 0.5 (values 0, 16, …, 240; c = 100 → 0 up to 96, 255 from 112).
    let r = decode_to_rgb8(
        &f,
        &DicomOptions {
            window: Some((100.0, 1.0)),
            frame: None,
        },
    )
    .unwrap();
    let grey: Vec<u8> = r.data.chunks(3).map(|p| p[0]).collect();
    assert_eq!(&grey[..8], &[0, 0, 0, 0, 0, 0, 0, 255]);
}

#[test]
fn other_formats_are_not_dicom() {
    let samples: &[&[u8]] = &[
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
        b"\xff\xd8\xff\xe0\0\x10JFIF\0",
        b"GIF89a\x01\0\x01\0",
        b"BM\x36\0\0\0\0\0\0\0\x36\0\0\0",
        b"II*\0\x08\0\0\0",
        b"MM\0*\0\0\0\x08",
        b"RIFF\x24\0\0\0WEBPVP8 ",
        b"",
        b"\x08\0",
        // A group 0008 tag followed by neither a VR nor a length that fits.
        b"\x08\0\x05\0\xff\xff\xff\x7f",
    ];
    for s in samples {
        assert!(!is_dicom(s), "{s:?}");
    }
    assert!(is_dicom(&read("CT_small.dcm")));
    // The data set alone (no preamble, no meta group) is still recognised.
    let f = file_with("1.2.840.10008.1.2.1", &small_image(&[]));
    let bare = small_image(&[el(0x0008, 0x0060, b"CS", b"OT")]);
    assert!(!is_dicom(&bare), "starts with group 0028: not claimed");
    let mut bare8 = el(0x0008, 0x0060, b"CS", b"OT");
    bare8.extend(small_image(&[]));
    assert!(is_dicom(&bare8));
    assert_eq!(
        decode_to_rgb8(&bare8, &DicomOptions::default())
            .unwrap()
            .data,
        decode_to_rgb8(&f, &DicomOptions::default()).unwrap().data
    );
}

/// Every input the fuzzer (tests/fuzz, target `dicom`) found a problem with: each must now fail fast with a
/// message. Two made dicom-rs's own data set reader allocate the declared length of an element (0.9 GB,
/// 3.5 GB) before finding the data too short; one is a JPEG 2000 packet header on which openjp2 overflows an
/// integer (C's wrap-around, a panic with overflow checks; see the workspace's `profile.dev.package.openjp2`).
#[test]
fn fuzz_regressions_fail_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fuzz/regressions/dicom");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let t = std::time::Instant::now();
        let r = decode_to_rgb8(&bytes, &DicomOptions::default());
        assert!(
            t.elapsed().as_secs_f64() < 1.0,
            "{}: {:?}",
            path.display(),
            t.elapsed()
        );
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        match r {
            Err(DicomError::Truncated { detail }) if !name.starts_with("j2k") => {
                assert!(detail.contains("declares"), "{detail}")
            }
            Err(DicomError::Decode { codec, .. }) if name.starts_with("j2k") => {
                assert_eq!(codec, "JPEG 2000")
            }
            other => panic!("{}: {other:?}", path.display()),
        }
        n += 1;
    }
    assert!(n >= 3, "{n} regression inputs");
}
