//! WGSL sources and the tiny templating that makes per-type variants.
//!
//! Kernels are plain `.wgsl` files with `{{NAME}}` placeholders. `{{DEQUANT}}` receives the shared byte helpers
//! of `dequant.wgsl` plus the one `//#type X` section that defines `dq4` for the weight's block format, so
//! every kernel/type pair compiles to a straight-line decoder with no runtime type switch.

use crate::tensor::DType;
use crate::weight::QuantType;

pub(crate) const DEQUANT: &str = include_str!("shaders/dequant.wgsl");
pub(crate) const MATVEC: &str = include_str!("shaders/matvec_quant.wgsl");
pub(crate) const MATMUL: &str = include_str!("shaders/matmul_quant.wgsl");
pub(crate) const NORM: &str = include_str!("shaders/norm.wgsl");
pub(crate) const ROPE: &str = include_str!("shaders/rope.wgsl");
pub(crate) const ATTENTION: &str = include_str!("shaders/attention.wgsl");
pub(crate) const KV_CACHE: &str = include_str!("shaders/kv_cache.wgsl");
pub(crate) const ACTIVATION: &str = include_str!("shaders/activation.wgsl");
pub(crate) const EMBED: &str = include_str!("shaders/embed.wgsl");
pub(crate) const VISION: &str = include_str!("shaders/vision.wgsl");
pub(crate) const PIXEL_SHUFFLE: &str = include_str!("shaders/pixel_shuffle.wgsl");
pub(crate) const SAMPLING: &str = include_str!("shaders/sampling.wgsl");
#[cfg(not(target_arch = "wasm32"))]
pub(crate) const BANDWIDTH: &str = include_str!("shaders/bandwidth.wgsl");

/// Replaces every `{{key}}`; panics (a build-time bug, covered by the tests) if a placeholder is left over.
pub(crate) fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut s = template.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("{{{{{k}}}}}"), v);
    }
    assert!(!s.contains("{{"), "unfilled placeholder in shader template");
    s
}

/// The helpers of `dequant.wgsl` followed by the `dq4` section for `ty`.
pub(crate) fn dequant(ty: QuantType) -> String {
    let common = DEQUANT
        .split_once("//#")
        .expect("dequant.wgsl has type sections")
        .0;
    format!("{common}{}", section("type", ty))
}

/// [`dequant`] plus the `dotu`/`UNIT` section for `ty` (kernels that define `xv4`).
pub(crate) fn dequant_dot(ty: QuantType) -> String {
    format!("{}{}", dequant(ty), section("dot", ty))
}

/// [`dequant_dot`] for kernels that give a row several lanes: the type's `dotc` section (a `dotu` with a
/// smaller unit whose lanes read side by side) where it has one, else its `dot` section.
pub(crate) fn dequant_dot_cooperative(ty: QuantType) -> String {
    match try_section("dotc", ty) {
        Some(dotc) => format!("{}{dotc}", dequant(ty)),
        None => dequant_dot(ty),
    }
}

/// For subgroup rows: the type's `dotv` section (16-byte weight loads through binding 5, `W4`) where it
/// has one (`true`), else [`dequant_dot_cooperative`] (`false`).
pub(crate) fn dequant_dot_subgroup(ty: QuantType) -> (String, bool) {
    match try_section("dotv", ty) {
        Some(dotv) => (format!("{}{dotv}", dequant(ty)), true),
        None => (dequant_dot_cooperative(ty), false),
    }
}

/// For subgroups walking several rows at once: [`dequant_dot_cooperative`] (whose `dotu` the shared
/// `row_partial` names) plus the type's `dotr` section (`dotr(r0, u)` over `RUNIT`-element units, x read
/// once for `RSG` rows), and whether `dotr` reads 16 bytes at a time through binding 5 (`W4`); `None` where
/// the type has no `dotr` (it walks its rows one at a time).
pub(crate) fn dequant_dot_rows(ty: QuantType) -> Option<(String, bool)> {
    try_section("dotr", ty).map(|dotr| {
        (
            format!("{}{dotr}", dequant_dot_cooperative(ty)),
            dotr.contains("W4["),
        )
    })
}

/// The entry points of `matvec_quant.wgsl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MatvecMain {
    /// A row's lanes summed in workgroup memory.
    Workgroup,
    /// A subgroup per row, summed with `subgroupAdd`.
    Subgroup,
    /// A subgroup per `RSG` rows (`dotr`).
    SubgroupRows,
}

/// `matvec_quant.wgsl`'s shared part followed by one of its entry points (`//#main workgroup`,
/// `//#main subgroup`, `//#main subgroup_rows`). (No `enable subgroups;`: naga 30 rejects the directive and
/// accepts the subgroup built-ins on a device with `Features::SUBGROUP`.)
pub(crate) fn matvec(main: MatvecMain) -> String {
    let (common, mains) = MATVEC
        .split_once("//#main ")
        .expect("matvec_quant.wgsl has entry-point sections");
    let want = match main {
        MatvecMain::Workgroup => "workgroup\n",
        MatvecMain::Subgroup => "subgroup\n",
        MatvecMain::SubgroupRows => "subgroup_rows\n",
    };
    let body = format!("//#main {mains}");
    let start = body
        .find(&format!("//#main {want}"))
        .expect("every entry point is present")
        + "//#main ".len()
        + want.len();
    let rest = &body[start..];
    let end = rest.find("//#").expect("sections are terminated");
    format!("{common}{}", &rest[..end])
}

fn section(kind: &str, ty: QuantType) -> &'static str {
    try_section(kind, ty).expect("every QuantType has dq4 and dotu sections")
}

fn try_section(kind: &str, ty: QuantType) -> Option<&'static str> {
    let marker = format!("//#{kind} {ty:?}\n");
    let start = DEQUANT.find(&marker)? + marker.len();
    let rest = &DEQUANT[start..];
    let end = rest.find("//#").expect("sections are terminated");
    Some(&rest[..end])
}

/// Template variables for kernels whose storage element type varies (KV cache).
pub(crate) fn kv_vars(dtype: DType) -> [(&'static str, &'static str); 2] {
    [
        ("KV_T", dtype.wgsl()),
        (
            "ENABLE_F16",
            if dtype == DType::F16 {
                "enable f16;"
            } else {
                ""
            },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_exactly_one_dq4() {
        for ty in QuantType::ALL {
            let src = dequant(ty);
            assert_eq!(src.matches("fn dq4(").count(), 1, "{ty:?}");
            assert_eq!(src.matches("fn dotu(").count(), 0, "{ty:?}");
            let src = dequant_dot(ty);
            assert_eq!(src.matches("fn dq4(").count(), 1, "{ty:?}");
            assert_eq!(src.matches("fn dotu(").count(), 1, "{ty:?}");
            assert_eq!(src.matches("const UNIT").count(), 1, "{ty:?}");
            let src = dequant_dot_cooperative(ty);
            assert_eq!(src.matches("fn dotu(").count(), 1, "{ty:?}");
            assert_eq!(src.matches("const UNIT").count(), 1, "{ty:?}");
        }
        assert!(dequant_dot_cooperative(QuantType::Q4_K).contains("const UNIT: u32 = 16u;"));
        for ty in QuantType::ALL {
            let (src, vec4) = dequant_dot_subgroup(ty);
            assert_eq!(src.matches("fn dotu(").count(), 1, "{ty:?}");
            assert_eq!(vec4, src.contains("W4["), "{ty:?}");
        }
        assert!(dequant_dot_subgroup(QuantType::Q4_K).1);
    }

    #[test]
    fn matvec_has_one_entry_point_per_variant() {
        for main in [
            MatvecMain::Workgroup,
            MatvecMain::Subgroup,
            MatvecMain::SubgroupRows,
        ] {
            let src = matvec(main);
            let subgroup = main != MatvecMain::Workgroup;
            assert_eq!(src.matches("fn main(").count(), 1, "{main:?}");
            assert_eq!(src.contains("subgroupAdd("), subgroup, "{main:?}");
            assert_eq!(src.contains("workgroupBarrier("), !subgroup, "{main:?}");
            assert_eq!(
                src.contains("dotr("),
                main == MatvecMain::SubgroupRows,
                "{main:?}"
            );
            assert!(!src.contains("//#"));
        }
        for ty in QuantType::ALL {
            if let Some((src, _)) = dequant_dot_rows(ty) {
                assert_eq!(src.matches("fn dotr(").count(), 1, "{ty:?}");
                assert_eq!(src.matches("fn dotu(").count(), 1, "{ty:?}");
                assert_eq!(src.matches("const UNIT").count(), 1, "{ty:?}");
                assert_eq!(src.matches("const RUNIT").count(), 1, "{ty:?}");
                // Binding 5 is declared only when `dotr` reads it: the one-row part must not.
                assert!(!dequant_dot_cooperative(ty).contains("W4["), "{ty:?}");
                assert_eq!(src.matches("fn sc6(").count(), 1, "{ty:?}");
            }
        }
        // Q4_K's super-blocks are 16-byte aligned (vec4 loads), Q6_K's 210-byte blocks are not.
        assert_eq!(dequant_dot_rows(QuantType::Q4_K).map(|r| r.1), Some(true));
        assert_eq!(dequant_dot_rows(QuantType::Q6_K).map(|r| r.1), Some(false));
    }
}
