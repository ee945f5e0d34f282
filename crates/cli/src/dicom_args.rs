//! `--window` and `--frame`: how a DICOM image is rendered (`meddr run`, `meddr chat`); other formats ignore
//! them.

/// DICOM rendering options shared by the commands that take an image.
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub(crate) struct DicomArgs {
    /// DICOM greyscale window CENTER,WIDTH in modality units (e.g. 40,400: a CT soft-tissue view;
    /// -600,1500: lung) instead of the file's own; WIDTH ≥ 1. Default: the file's first window, else the
    /// frame's full range.
    #[arg(long, value_name = "CENTER,WIDTH", value_parser = parse_window, allow_hyphen_values = true)]
    window: Option<(f64, f64)>,
    /// DICOM frame of a multi-frame file, counted from 0 (default: the middle one, ⌊n/2⌋).
    #[arg(long, value_name = "N")]
    frame: Option<u32>,
}

impl DicomArgs {
    pub(crate) fn options(&self) -> meddr_image::DicomOptions {
        meddr_image::DicomOptions {
            window: self.window,
            frame: self.frame,
        }
    }
}

/// `CENTER,WIDTH`, both finite numbers, `WIDTH ≥ 1` (the standard's linear VOI function needs it).
pub(crate) fn parse_window(s: &str) -> Result<(f64, f64), String> {
    let bad = || format!("--window wants CENTER,WIDTH with WIDTH ≥ 1, got {s:?}");
    let (c, w) = s.split_once(',').ok_or_else(bad)?;
    let (c, w): (f64, f64) = (
        c.trim().parse().map_err(|_| bad())?,
        w.trim().parse().map_err(|_| bad())?,
    );
    if !c.is_finite() || !w.is_finite() || w < 1.0 {
        return Err(bad());
    }
    Ok((c, w))
}

#[cfg(test)]
mod tests {
    use super::parse_window;

    #[test]
    fn window_values() {
        assert_eq!(parse_window("40,400"), Ok((40.0, 400.0)));
        assert_eq!(parse_window("-600, 1500"), Ok((-600.0, 1500.0)));
        assert_eq!(parse_window("0.5,1"), Ok((0.5, 1.0)));
        for bad in [
            "40", "40,0.5", "40,0", "a,400", "40,400,1", "nan,400", "40,inf", "",
        ] {
            let e = parse_window(bad).unwrap_err();
            assert!(
                e.contains("CENTER,WIDTH with WIDTH ≥ 1") && e.contains(&format!("{bad:?}")),
                "{e}"
            );
        }
    }
}
