//! Which block type each tensor gets. The language-model rules follow llama.cpp's `llama_tensor_get_type` for
//! the file types we offer, so a `q4_k_m` file has the same mix a llama.cpp user expects.

use meddr_gguf::GgmlType;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    F32,
    F16,
    Q8_0,
    Q4_0,
    Q4KS,
    Q4KM,
}

impl FileType {
    pub fn name(self) -> &'static str {
        match self {
            FileType::F32 => "f32",
            FileType::F16 => "f16",
            FileType::Q8_0 => "q8_0",
            FileType::Q4_0 => "q4_0",
            FileType::Q4KS => "q4_k_s",
            FileType::Q4KM => "q4_k_m",
        }
    }
    /// llama.cpp's `llama_ftype` value for `general.file_type`.
    pub fn llama_ftype(self) -> u32 {
        match self {
            FileType::F32 => 0,
            FileType::F16 => 1,
            FileType::Q4_0 => 2,
            FileType::Q8_0 => 7,
            FileType::Q4KS => 14,
            FileType::Q4KM => 15,
        }
    }
    fn base(self) -> GgmlType {
        match self {
            FileType::F32 => GgmlType::F32,
            FileType::F16 => GgmlType::F16,
            FileType::Q8_0 => GgmlType::Q8_0,
            FileType::Q4_0 => GgmlType::Q4_0,
            FileType::Q4KS | FileType::Q4KM => GgmlType::Q4_K,
        }
    }
    /// The vision tower's default: InternViT's rows (3200 wide) are not a multiple of 256, so k-quants would fall
    /// back anyway; Q8_0 keeps the image features close to full precision at 6.3 GB (release the ViT after
    /// encoding to fit a 24 GB card), and f16/f32 files keep their type.
    pub fn default_vision_type(self) -> GgmlType {
        match self {
            FileType::F32 => GgmlType::F32,
            FileType::F16 => GgmlType::F16,
            _ => GgmlType::Q8_0,
        }
    }
}

impl FromStr for FileType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" => FileType::F32,
            "f16" => FileType::F16,
            "q8_0" => FileType::Q8_0,
            "q4_0" => FileType::Q4_0,
            "q4_k_s" => FileType::Q4KS,
            "q4_k_m" => FileType::Q4KM,
            other => {
                return Err(format!(
                    "unknown --type {other:?}: expected q4_k_m, q4_k_s, q4_0, q8_0, f16 or f32"
                ))
            }
        })
    }
}

/// Block types accepted by `--vision-type`.
pub fn parse_vision_type(s: &str) -> Result<GgmlType, String> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "f32" => GgmlType::F32,
        "f16" => GgmlType::F16,
        "q8_0" => GgmlType::Q8_0,
        "q5_0" => GgmlType::Q5_0,
        "q4_0" => GgmlType::Q4_0,
        "q4_1" => GgmlType::Q4_1,
        "q4_k" => GgmlType::Q4_K,
        "q5_k" => GgmlType::Q5_K,
        "q6_k" => GgmlType::Q6_K,
        other => return Err(format!("unknown --vision-type {other:?}: expected f32, f16, q8_0, q5_0, q4_0, q4_1, q4_k, q5_k or q6_k")),
    })
}

/// What a tensor is, as far as the type choice cares.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// 1-D tensors: norms, biases, layer scales. Always F32.
    Norm,
    TokenEmbd,
    Output,
    AttnQ,
    AttnK,
    AttnV {
        layer: usize,
        n_layers: usize,
    },
    AttnOutput,
    FfnGateUp,
    FfnDown {
        layer: usize,
        n_layers: usize,
    },
    /// ViT and projector matrices.
    VisionMatrix,
    /// Patch and position embeddings, class token: small, kept at f16 (f32 in f32 files).
    VisionEmbd,
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third in between.
pub fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i >= n / 8 && (i - n / 8) % 3 == 2)
}

/// The type `ftype`'s recipe asks for, then [`fallback`] for this row length.
pub fn choose(ftype: FileType, vision: GgmlType, role: Role, row_len: usize) -> GgmlType {
    fallback(wanted(ftype, vision, role), row_len)
}

/// The type `ftype`'s recipe asks for a tensor of `role`, before any fallback (llama.cpp's
/// `llama_tensor_get_type` before its "falling back" step).
pub fn wanted(ftype: FileType, vision: GgmlType, role: Role) -> GgmlType {
    match role {
        Role::Norm => return GgmlType::F32,
        Role::VisionEmbd => {
            if ftype == FileType::F32 {
                GgmlType::F32
            } else {
                GgmlType::F16
            }
        }
        Role::VisionMatrix => vision,
        Role::Output => match ftype {
            FileType::F32 | FileType::F16 | FileType::Q8_0 => ftype.base(),
            _ => GgmlType::Q6_K,
        },
        Role::AttnV { layer, n_layers } => match ftype {
            FileType::Q4KM if use_more_bits(layer, n_layers) => GgmlType::Q6_K,
            FileType::Q4KS if layer < 4 => GgmlType::Q5_K,
            _ => ftype.base(),
        },
        Role::FfnDown { layer, n_layers } => match ftype {
            FileType::Q4KM if use_more_bits(layer, n_layers) => GgmlType::Q6_K,
            FileType::Q4KS if layer < n_layers / 8 => GgmlType::Q5_K,
            _ => ftype.base(),
        },
        Role::TokenEmbd | Role::AttnQ | Role::AttnK | Role::AttnOutput | Role::FfnGateUp => {
            ftype.base()
        }
    }
}

/// A type whose block does not divide the row falls back the way llama.cpp does (k-quants to 32-element
/// blocks), and to F16 when even 32 does not divide it.
pub fn fallback(ty: GgmlType, row_len: usize) -> GgmlType {
    let fits = |t: GgmlType| row_len as u64 % t.block_size() == 0;
    if fits(ty) {
        return ty;
    }
    let next = match ty {
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K | GgmlType::Q6_K => GgmlType::Q8_0,
        _ => GgmlType::F16,
    };
    if fits(next) {
        next
    } else {
        GgmlType::F16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_bits_matches_llama_cpp_for_60_layers() {
        // n = 60: n/8 = 7, 7n/8 = 52. Layers 0..7, 52..60 and 7 + 3k + 2.
        let got: Vec<usize> = (0..60).filter(|&i| use_more_bits(i, 60)).collect();
        let mut want: Vec<usize> = (0..7).collect();
        want.extend((7..52).filter(|i| (i - 7) % 3 == 2));
        want.extend(52..60);
        assert_eq!(got, want);
    }

    #[test]
    fn q4_k_m_mix() {
        let t = |r| choose(FileType::Q4KM, GgmlType::Q8_0, r, 7168);
        assert_eq!(t(Role::Output), GgmlType::Q6_K);
        assert_eq!(t(Role::TokenEmbd), GgmlType::Q4_K);
        assert_eq!(
            t(Role::AttnV {
                layer: 0,
                n_layers: 60
            }),
            GgmlType::Q6_K
        );
        assert_eq!(
            t(Role::AttnV {
                layer: 8,
                n_layers: 60
            }),
            GgmlType::Q4_K
        );
        assert_eq!(
            t(Role::FfnDown {
                layer: 9,
                n_layers: 60
            }),
            GgmlType::Q6_K
        );
        assert_eq!(t(Role::Norm), GgmlType::F32);
        // InternViT rows of 3200 cannot hold 256-element blocks.
        assert_eq!(
            choose(FileType::Q4KM, GgmlType::Q4_K, Role::VisionMatrix, 3200),
            GgmlType::Q5_0
        );
        // The patch embedding's 588-element rows hold no 32-element block either.
        assert_eq!(fallback(GgmlType::Q8_0, 588), GgmlType::F16);
    }
}
