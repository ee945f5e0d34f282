//! Renders DICOM files the way MedDr sees them: `cargo run -p meddr-dicom --example dicom_to_ppm -- FILE...
//! [--window C,W] [--frame N] [--out DIR]` writes `DIR/<name>.ppm` (default: next to each file) and prints
//! the notes, or the error, per file.
use std::path::PathBuf;

use meddr_dicom::{decode_to_rgb8, DicomOptions};

fn main() {
    let mut opts = DicomOptions::default();
    let (mut files, mut out) = (Vec::new(), None::<PathBuf>);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--window" => {
                let v = args.next().unwrap_or_default();
                let (c, w) = v.split_once(',').expect("--window C,W");
                opts.window = Some((c.parse().expect("centre"), w.parse().expect("width")));
            }
            "--frame" => {
                opts.frame = Some(args.next().unwrap_or_default().parse().expect("--frame N"))
            }
            "--out" => out = args.next().map(PathBuf::from),
            _ => files.push(PathBuf::from(a)),
        }
    }
    for f in files {
        let bytes = match std::fs::read(&f) {
            Ok(b) => b,
            Err(e) => {
                println!("{}: {e}", f.display());
                continue;
            }
        };
        match decode_to_rgb8(&bytes, &opts) {
            Ok(r) => {
                let name = f
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string()
                    + ".ppm";
                let dst = out
                    .as_ref()
                    .map_or_else(|| f.with_file_name(&name), |d| d.join(&name));
                let mut ppm = format!("P6\n{} {}\n255\n", r.width, r.height).into_bytes();
                ppm.extend_from_slice(&r.data);
                std::fs::write(&dst, ppm).expect("write ppm");
                println!("{}: {}x{} {:?}", f.display(), r.width, r.height, r.notes);
            }
            Err(e) => println!("{}: error: {e}", f.display()),
        }
    }
}
