//! Transfer syntaxes: their names (PS3.6 Table A-1) and what this crate does with each.

/// How a transfer syntax's data set and pixel data are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Syntax {
    /// Uncompressed pixel data in the data set's own encoding.
    Native { explicit: bool, little_endian: bool },
    /// Explicit VR little endian, the whole data set raw-deflated.
    Deflated,
    /// Explicit VR little endian data set with encapsulated pixel data in this codec.
    Encapsulated(Codec),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Codec {
    /// Encapsulated Uncompressed: each frame's bytes in fragments, little endian.
    Uncompressed,
    Rle,
    /// JPEG processes 1, 2 & 4 (8-bit only) and 14 (lossless).
    Jpeg,
    Jpeg2000,
}

/// (UID, name, what we do: `Ok(syntax)` or `Err(why not)`).
type Entry = (&'static str, &'static str, Result<Syntax, &'static str>);

const NO_JPEG_LS: &str =
    "there is no pure-Rust JPEG-LS decoder (CharLS is C++); convert the file to an uncompressed, RLE or JPEG 2000 transfer syntax";
const RETIRED_JPEG: &str = "a retired JPEG process that no decoder here implements";
const VIDEO: &str = "video pixel data is not decoded here";

const TABLE: &[Entry] = &[
    (
        "1.2.840.10008.1.2",
        "Implicit VR Little Endian",
        Ok(Syntax::Native {
            explicit: false,
            little_endian: true,
        }),
    ),
    (
        "1.2.840.10008.1.2.1",
        "Explicit VR Little Endian",
        Ok(Syntax::Native {
            explicit: true,
            little_endian: true,
        }),
    ),
    (
        "1.2.840.10008.1.2.2",
        "Explicit VR Big Endian",
        Ok(Syntax::Native {
            explicit: true,
            little_endian: false,
        }),
    ),
    (
        "1.2.840.10008.1.2.1.99",
        "Deflated Explicit VR Little Endian",
        Ok(Syntax::Deflated),
    ),
    (
        "1.2.840.10008.1.2.1.98",
        "Encapsulated Uncompressed Explicit VR Little Endian",
        Ok(Syntax::Encapsulated(Codec::Uncompressed)),
    ),
    (
        "1.2.840.10008.1.2.5",
        "RLE Lossless",
        Ok(Syntax::Encapsulated(Codec::Rle)),
    ),
    (
        "1.2.840.10008.1.2.4.50",
        "JPEG Baseline (Process 1)",
        Ok(Syntax::Encapsulated(Codec::Jpeg)),
    ),
    (
        "1.2.840.10008.1.2.4.51",
        "JPEG Extended (Process 2 & 4)",
        Ok(Syntax::Encapsulated(Codec::Jpeg)),
    ),
    (
        "1.2.840.10008.1.2.4.57",
        "JPEG Lossless, Non-Hierarchical (Process 14)",
        Ok(Syntax::Encapsulated(Codec::Jpeg)),
    ),
    (
        "1.2.840.10008.1.2.4.70",
        "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])",
        Ok(Syntax::Encapsulated(Codec::Jpeg)),
    ),
    (
        "1.2.840.10008.1.2.4.90",
        "JPEG 2000 Image Compression (Lossless Only)",
        Ok(Syntax::Encapsulated(Codec::Jpeg2000)),
    ),
    (
        "1.2.840.10008.1.2.4.91",
        "JPEG 2000 Image Compression",
        Ok(Syntax::Encapsulated(Codec::Jpeg2000)),
    ),
    (
        "1.2.840.10008.1.2.4.80",
        "JPEG-LS Lossless",
        Err(NO_JPEG_LS),
    ),
    (
        "1.2.840.10008.1.2.4.81",
        "JPEG-LS Lossy (Near-Lossless)",
        Err(NO_JPEG_LS),
    ),
    (
        "1.2.840.10008.1.2.4.92",
        "JPEG 2000 Part 2 Multi-component Image Compression (Lossless Only)",
        Err("JPEG 2000 Part 2 multi-component transforms are not decoded here"),
    ),
    (
        "1.2.840.10008.1.2.4.93",
        "JPEG 2000 Part 2 Multi-component Image Compression",
        Err("JPEG 2000 Part 2 multi-component transforms are not decoded here"),
    ),
    (
        "1.2.840.10008.1.2.4.94",
        "JPIP Referenced",
        Err("the pixel data is on a JPIP server, not in the file"),
    ),
    (
        "1.2.840.10008.1.2.4.95",
        "JPIP Referenced Deflate",
        Err("the pixel data is on a JPIP server, not in the file"),
    ),
    (
        "1.2.840.10008.1.2.4.201",
        "High-Throughput JPEG 2000 Image Compression (Lossless Only)",
        Err("HTJ2K (JPEG 2000 Part 15) is not decoded here"),
    ),
    (
        "1.2.840.10008.1.2.4.202",
        "High-Throughput JPEG 2000 with RPCL Options Image Compression (Lossless Only)",
        Err("HTJ2K (JPEG 2000 Part 15) is not decoded here"),
    ),
    (
        "1.2.840.10008.1.2.4.203",
        "High-Throughput JPEG 2000 Image Compression",
        Err("HTJ2K (JPEG 2000 Part 15) is not decoded here"),
    ),
    (
        "1.2.840.10008.1.2.4.204",
        "JPIP HTJ2K Referenced",
        Err("the pixel data is on a JPIP server, not in the file"),
    ),
    (
        "1.2.840.10008.1.2.4.205",
        "JPIP HTJ2K Referenced Deflate",
        Err("the pixel data is on a JPIP server, not in the file"),
    ),
    (
        "1.2.840.10008.1.2.4.110",
        "JPEG XL Lossless",
        Err("JPEG XL is not decoded here"),
    ),
    (
        "1.2.840.10008.1.2.4.111",
        "JPEG XL JPEG Recompression",
        Err("JPEG XL is not decoded here"),
    ),
    (
        "1.2.840.10008.1.2.4.112",
        "JPEG XL",
        Err("JPEG XL is not decoded here"),
    ),
    (
        "1.2.840.10008.1.2.4.100",
        "MPEG2 Main Profile / Main Level",
        Err(VIDEO),
    ),
    (
        "1.2.840.10008.1.2.4.100.1",
        "Fragmentable MPEG2 Main Profile / Main Level",
        Err(VIDEO),
    ),
    (
        "1.2.840.10008.1.2.4.101",
        "MPEG2 Main Profile / High Level",
        Err(VIDEO),
    ),
    (
        "1.2.840.10008.1.2.4.101.1",
        "Fragmentable MPEG2 Main Profile / High Level",
        Err(VIDEO),
    ),
    (
        "1.2.840.10008.1.2.4.102",
        "MPEG-4 AVC/H.264 High Profile / Level 4.1",
        Err(VIDEO),
    ),
    (
        "1.2.840.10008.1.2.4.102.1",
        "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.1",
        Err(VIDEO),
    ),
    (
        "1.2.840.10008.1.2.4.103",
        "MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1",
        Err(VIDEO),
    ),
    (
        "1.2.840.10008.1.2.4.103.1",
        "Fragmentable MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1",
        Err(VIDEO),
    ),
    (
        "1.2.840.10008.1.2.4.104",
        "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video",
        Err(VIDEO),
    ),
    (
        "1.2.840.10008.1.2.4.104.1",
        "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video",
        Err(VIDEO),
    ),
    (
        "1.2.840.10008.1.2.4.105",
        "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video",
        Err(VIDEO),
    ),
    (
        "1.2.840.10008.1.2.4.105.1",
        "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video",
        Err(VIDEO),
    ),
    (
        "1.2.840.10008.1.2.4.106",
        "MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2",
        Err(VIDEO),
    ),
    (
        "1.2.840.10008.1.2.4.106.1",
        "Fragmentable MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2",
        Err(VIDEO),
    ),
    (
        "1.2.840.10008.1.2.4.107",
        "HEVC/H.265 Main Profile / Level 5.1",
        Err(VIDEO),
    ),
    (
        "1.2.840.10008.1.2.4.108",
        "HEVC/H.265 Main 10 Profile / Level 5.1",
        Err(VIDEO),
    ),
    (
        "1.2.840.10008.1.2.8.1",
        "Deflated Image Frame Compression",
        Err("deflated image frames are not decoded here"),
    ),
    (
        "1.2.840.10008.1.2.6.1",
        "RFC 2557 MIME encapsulation (Retired)",
        Err("not an image encoding"),
    ),
    (
        "1.2.840.10008.1.2.6.2",
        "XML Encoding (Retired)",
        Err("not an image encoding"),
    ),
    (
        "1.2.840.10008.1.2.7.1",
        "SMPTE ST 2110-20 Uncompressed Progressive Active Video",
        Err(VIDEO),
    ),
    (
        "1.2.840.10008.1.2.7.2",
        "SMPTE ST 2110-20 Uncompressed Interlaced Active Video",
        Err(VIDEO),
    ),
    (
        "1.2.840.10008.1.2.7.3",
        "SMPTE ST 2110-30 PCM Digital Audio",
        Err("audio, not an image"),
    ),
];

/// The syntax for `uid`, or the error naming it.
pub(crate) fn lookup(uid: &str) -> Result<(Syntax, &'static str), crate::DicomError> {
    if let Some((_, name, what)) = TABLE.iter().find(|(u, _, _)| *u == uid) {
        return match what {
            Ok(s) => Ok((*s, name)),
            Err(reason) => Err(crate::DicomError::UnsupportedTransferSyntax {
                name: (*name).to_string(),
                uid: uid.to_string(),
                reason: (*reason).to_string(),
            }),
        };
    }
    // Retired JPEG processes 3, 5–13, 15–29 (1.2.840.10008.1.2.4.52 … .66).
    let retired_jpeg = uid
        .strip_prefix("1.2.840.10008.1.2.4.")
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| (52..=66).contains(&n) && n != 57);
    Err(crate::DicomError::UnsupportedTransferSyntax {
        name: if retired_jpeg {
            "a retired JPEG transfer syntax".into()
        } else {
            "an unknown transfer syntax".into()
        },
        uid: uid.chars().take(64).collect(),
        reason: if retired_jpeg {
            RETIRED_JPEG.into()
        } else {
            "not a transfer syntax of the DICOM standard that this decoder knows".into()
        },
    })
}
