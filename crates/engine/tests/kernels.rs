//! Every kernel against the CPU reference (`meddr-reference`) or a naive f64 truth, on lavapipe or any
//! adapter wgpu finds. Shapes are small and deliberately awkward: sizes that are not multiples of the tile or
//! workgroup, single rows, strided views, several head dims and GQA ratios, split weights.

use std::sync::OnceLock;

use meddr_engine::{
    AttnShape, ContextOptions, DType, GpuBuffer, GpuContext, GpuWeight, KvCache, LinearKernel,
    MatvecShape, QuantType, Recorder, RopeTable, Rows, WeightDesc, CPU_MATMUL_MIN_ROWS,
    CPU_MATMUL_MIN_ROW_LEN, MATVEC_MAX_ROWS,
};
use meddr_reference::ops as r;

fn make_ctx(force_f32: bool) -> GpuContext {
    match GpuContext::new_blocking(ContextOptions { force_f32, ..Default::default() }) {
        Ok(c) => c,
        Err(e) => panic!("no usable GPU adapter for the engine tests: {e}. Install lavapipe: apt-get install -y mesa-vulkan-drivers libvulkan1"),
    }
}

/// The default context (shader-f16 when the adapter has it; lavapipe does).
fn ctx() -> &'static GpuContext {
    static C: OnceLock<GpuContext> = OnceLock::new();
    C.get_or_init(|| make_ctx(false))
}

/// The f32-only context: the path WebGPU devices without shader-f16 take.
fn ctx32() -> &'static GpuContext {
    static C: OnceLock<GpuContext> = OnceLock::new();
    C.get_or_init(|| make_ctx(true))
}

fn ctx16() -> &'static GpuContext {
    let c = ctx();
    assert!(
        c.info.f16,
        "the adapter {} lacks shader-f16, so the f16 path cannot be tested here",
        c.info.name
    );
    c
}

/// Deterministic values in [-1, 1).
fn rand_vec(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Quantizes random rows, uploads them, and returns the weight plus its dequantized f32 truth.
fn make_weight(
    c: &GpuContext,
    ty: QuantType,
    rows: usize,
    row_len: usize,
    seed: u64,
    max_part: Option<u64>,
) -> (GpuWeight, Vec<f32>) {
    let src = rand_vec(seed, rows * row_len);
    let mut bytes = Vec::new();
    meddr_quants::quantize(ty, &src, &mut bytes).unwrap();
    let mut deq = vec![0.0; src.len()];
    meddr_quants::dequantize(ty, &bytes, &mut deq).unwrap();
    let desc = WeightDesc {
        ty,
        rows: rows as u64,
        row_len: row_len as u64,
    };
    let w = GpuWeight::upload_with(c, desc, "w", max_part, |off, dst: &mut [u8]| {
        dst.copy_from_slice(&bytes[off as usize..off as usize + dst.len()]);
        Ok::<(), String>(())
    })
    .unwrap();
    (w, deq)
}

fn run(c: &GpuContext, f: impl FnOnce(&mut Recorder)) {
    let mut enc = c.encoder();
    f(&mut enc);
    c.submit(enc);
}

fn read(c: &GpuContext, b: &GpuBuffer) -> Vec<f32> {
    c.read_f32_blocking(b).unwrap()
}

/// Asserts |got − want| ≤ tol[i] elementwise, reporting the worst offender.
fn assert_within(what: &str, got: &[f32], want: &[f32], tol: impl Fn(usize) -> f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0.0f32);
    for i in 0..got.len() {
        let err = (got[i] - want[i]).abs();
        assert!(
            err.is_finite() || got[i] == want[i],
            "{what}[{i}]: got {} want {}",
            got[i],
            want[i]
        );
        let ratio = err / tol(i);
        if ratio > worst.1 {
            worst = (i, ratio);
        }
    }
    let i = worst.0;
    assert!(
        worst.1 <= 1.0,
        "{what}[{i}]: got {} want {} (error {:.3e} > tolerance {:.3e})",
        got[i],
        want[i],
        (got[i] - want[i]).abs(),
        tol(i)
    );
}

/// Naive `y[t, o] = Σ w[o, i] x[t, i] + b[o]` in f64, plus `Σ |w x|` per output for the tolerance.
fn naive_linear(
    x: &[f32],
    n: usize,
    k: usize,
    w: &[f32],
    rows: usize,
    bias: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>) {
    let mut y = Vec::new();
    let mut mag = Vec::new();
    for t in 0..n {
        for o in 0..rows {
            let (mut s, mut m) = (0.0f64, 0.0f64);
            for i in 0..k {
                let p = f64::from(w[o * k + i]) * f64::from(x[t * k + i]);
                s += p;
                m += p.abs();
            }
            let b = bias.map_or(0.0, |b| f64::from(b[o]));
            y.push((s + b) as f32);
            mag.push((m + b.abs()) as f32);
        }
    }
    (y, mag)
}

/// Row length per type: K-quants need 256-multiples, legacy quants 32; float rows use 92 (not a multiple of
/// the 32-wide K tile, so the tail masking is exercised).
fn row_len_for(ty: QuantType) -> usize {
    match ty.block_size() {
        1 => 92,
        32 => 160,
        _ => 512,
    }
}

/// Relative tolerance on Σ|w·x|: f32 accumulation over ≤ 512 terms in a different order than the f64 truth
/// errs by ≲ (terms per thread + log₂ tree)·2⁻²⁴·Σ|w·x| ≈ 1e-6 relative; 1e-5 leaves slack for FMA contraction in
/// the dequantisation, yet one wrongly decoded element (≳ 1/512 of the magnitude) would exceed it 200-fold.
const LIN_REL: f32 = 1e-5;

fn check_linear(
    c: &GpuContext,
    ty: QuantType,
    rows: usize,
    n: usize,
    tiled: bool,
    seed: u64,
    max_part: Option<u64>,
) {
    // x lives in a strided view: offset 3, row stride k + 5 (not 4-aligned: the matvec's scalar x path).
    check_linear_at(c, ty, rows, n, tiled, seed, max_part, 3, 5)
}

#[allow(clippy::too_many_arguments)]
fn check_linear_at(
    c: &GpuContext,
    ty: QuantType,
    rows: usize,
    n: usize,
    tiled: bool,
    seed: u64,
    max_part: Option<u64>,
    x_offset: usize,
    x_pad: usize,
) {
    check_linear_len(
        c,
        ty,
        rows,
        row_len_for(ty),
        n,
        tiled,
        seed,
        max_part,
        x_offset,
        x_pad,
    )
}

/// Which entry point a linear check calls: `false`/`true` for the matvec/the tiled matmul, or
/// `Linear` for `GpuContext::linear`, which picks one.
#[derive(Clone, Copy, Debug, PartialEq)]
enum LinearOp {
    Matvec,
    Matmul,
    Linear,
}

impl From<bool> for LinearOp {
    fn from(tiled: bool) -> Self {
        if tiled {
            LinearOp::Matmul
        } else {
            LinearOp::Matvec
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check_linear_len(
    c: &GpuContext,
    ty: QuantType,
    rows: usize,
    k: usize,
    n: usize,
    op: impl Into<LinearOp>,
    seed: u64,
    max_part: Option<u64>,
    x_offset: usize,
    x_pad: usize,
) {
    let op = op.into();
    let (w, deq) = make_weight(c, ty, rows, k, seed, max_part);
    let stride = k + x_pad;
    let xs = rand_vec(seed + 1, n * k);
    let mut xbuf = vec![9.0f32; x_offset + n * stride];
    for t in 0..n {
        let at = x_offset + t * stride;
        xbuf[at..at + k].copy_from_slice(&xs[t * k..(t + 1) * k]);
    }
    let bias = rand_vec(seed + 2, rows);
    let use_bias = seed % 2 == 0;
    let x = c.upload_f32(&xbuf, "x").unwrap();
    let b = c.upload_f32(&bias, "b").unwrap();
    let y = c.zeros(DType::F32, (n * rows) as u64, "y").unwrap();
    let xv = Rows {
        rows: n as u32,
        width: k as u32,
        offset: x_offset as u32,
        stride: stride as u32,
    };
    let yv = Rows::dense(n as u32, rows as u32);
    run(c, |enc| {
        let bias = use_bias.then_some(&b);
        match op {
            LinearOp::Matmul => c.matmul(enc, &w, &x, xv, bias, &y, yv).unwrap(),
            LinearOp::Matvec => c.matvec(enc, &w, &x, xv, bias, &y, yv).unwrap(),
            LinearOp::Linear => c.linear(enc, &w, &x, xv, bias, &y, yv).unwrap(),
        }
    });
    let got = read(c, &y);
    let (want, mag) = naive_linear(&xs, n, k, &deq, rows, use_bias.then_some(&bias[..]));
    let what = format!(
        "{op:?} {ty:?} rows {rows} n {n} parts {} x at {x_offset}+{stride}t, {:?}",
        w.parts.len(),
        c.info.matvec_shape
    );
    assert_within(&what, &got, &want, |i| LIN_REL * mag[i] + 1e-7);
}

#[test]
fn device_info_is_reported() {
    let c = ctx();
    println!("{}", c.info);
    assert!(c.max_binding_bytes() >= 1 << 20);
    assert!(!ctx32().info.f16, "force_f32 must disable shader-f16");
    assert_eq!(ctx32().kv_dtype(), DType::F32);
}

#[test]
fn matvec_every_type() {
    for (i, ty) in QuantType::ALL.into_iter().enumerate() {
        check_linear(ctx(), ty, 37, 1, false, 10 + i as u64, None);
        check_linear(ctx(), ty, 5, 3, false, 31 + i as u64, None);
    }
}

/// A context forcing one matvec work split (the subgroup one needs lavapipe's subgroups).
fn with_shape(shape: MatvecShape) -> GpuContext {
    GpuContext::new_blocking(ContextOptions {
        matvec_shape: Some(shape),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("matvec shape {shape}: {e}"))
}

/// The GPU work splits: workgroup-memory reduction, subgroup reduction (lavapipe's subgroups are 8 wide, so a
/// 32-lane row nominal takes 4 passes of a subgroup), a subgroup shape with more rows per workgroup than
/// subgroups, where each subgroup walks several rows, and `24x4s3`: a subgroup takes 3 rows at once (Q4_K's and
/// Q6_K's multi-row kernels; other types one after another), twice per workgroup (32 invocations are 4 of
/// lavapipe's subgroups, 12 rows a trip), so row counts that are not multiples of 3 or 24 end mid-trip.
fn gpu_shaped_contexts() -> [&'static GpuContext; 4] {
    static COOP: OnceLock<GpuContext> = OnceLock::new();
    static SUB: OnceLock<GpuContext> = OnceLock::new();
    static SUB_MANY: OnceLock<GpuContext> = OnceLock::new();
    static SUB_ROWS: OnceLock<GpuContext> = OnceLock::new();
    [
        COOP.get_or_init(|| with_shape(MatvecShape::COOPERATIVE)),
        SUB.get_or_init(|| with_shape(MatvecShape::SUBGROUP)),
        SUB_MANY.get_or_init(|| {
            with_shape(MatvecShape {
                rows_per_group: 8,
                lanes_per_row: 2,
                subgroup: true,
                rows_per_subgroup: 1,
            })
        }),
        SUB_ROWS.get_or_init(|| with_shape("24x4s3".parse().expect("a valid shape"))),
    ]
}

/// The CPU-driver work split (one lane per row) forced, whatever the adapter.
fn row_per_lane_context() -> &'static GpuContext {
    static ROW: OnceLock<GpuContext> = OnceLock::new();
    ROW.get_or_init(|| with_shape(MatvecShape::ROW_PER_LANE))
}

/// Rows long enough for many trips of each cooperative lane (Yi-34B's rows are 7168 and 20480 elements),
/// ending in a partial trip, on every GPU work split.
#[test]
fn matvec_long_rows_on_cooperative_lanes() {
    for c in gpu_shaped_contexts() {
        for (i, (ty, k)) in [
            (QuantType::Q4_K, 4352),
            (QuantType::Q4_K, 7168),
            (QuantType::Q6_K, 33 * 256),
            (QuantType::Q8_0, 8352),
            (QuantType::F16, 4160),
        ]
        .into_iter()
        .enumerate()
        {
            check_linear_len(c, ty, 9, k, 2, false, 300 + i as u64, None, 0, 0);
            check_linear_len(c, ty, 9, k, 1, false, 310 + i as u64, None, 3, 5);
        }
    }
}

/// The device reports subgroups on lavapipe and picks the subgroup split for GPUs that have them;
/// `no_subgroups` and a subgroup shape asked of a device without them are refused up front.
#[test]
fn subgroup_matvec_is_chosen_and_can_be_refused() {
    assert!(ctx().info.subgroups, "lavapipe has subgroups: {}", ctx().info);
    assert_eq!(
        MatvecShape::for_device(wgpu::DeviceType::DiscreteGpu, true),
        MatvecShape::SUBGROUP
    );
    assert_eq!(
        MatvecShape::for_device(wgpu::DeviceType::DiscreteGpu, false),
        MatvecShape::COOPERATIVE
    );
    assert_eq!(
        MatvecShape::for_device(wgpu::DeviceType::Cpu, true),
        MatvecShape::ROW_PER_LANE
    );
    let e = GpuContext::new_blocking(ContextOptions {
        matvec_shape: Some(MatvecShape::SUBGROUP),
        no_subgroups: true,
        ..Default::default()
    })
    .err()
    .expect("a subgroup shape without subgroups must be refused");
    assert!(e.to_string().contains("2x32s"), "{e}");
    for (text, want) in [
        ("2x32", Ok(MatvecShape::COOPERATIVE)),
        ("2x32s", Ok(MatvecShape::SUBGROUP)),
        ("32x1", Ok(MatvecShape::ROW_PER_LANE)),
        (
            "8x32s4",
            Ok(MatvecShape {
                rows_per_group: 8,
                lanes_per_row: 32,
                subgroup: true,
                rows_per_subgroup: 4,
            }),
        ),
        ("6x32s4", Err("divide the rows")),
        ("8x32s0", Err("1 to 8")),
        ("16x32s16", Err("1 to 8")),
        ("8x32sx", Err("not a whole number")),
        ("32x32s2", Err("≤ 256")),
        ("2x3s", Err("power of two")),
        ("0x32", Err("rows must be")),
        ("4x128", Err("≤ 256")),
        ("2by32", Err("not ROWSxLANES")),
    ] {
        let got = text.parse::<MatvecShape>();
        match want {
            Ok(shape) => {
                assert_eq!(got, Ok(shape), "{text}");
                assert_eq!(shape.to_string(), text);
            }
            Err(part) => assert!(got.as_ref().unwrap_err().contains(part), "{text}: {got:?}"),
        }
    }
}

/// Every matvec work split (the GPU ones and the CPU-driver one) with every x binding: 4-aligned views
/// (uniform array for one lane per row, vec4 storage otherwise) and unaligned ones (scalar storage), and
/// token counts that leave token slots of a workgroup empty.
#[test]
fn matvec_shapes_and_x_layouts() {
    let row = row_per_lane_context();
    let [coop, sub, sub_many, sub_rows] = gpu_shaped_contexts();
    for c in [coop, sub, sub_many, sub_rows, row] {
        for (i, ty) in QuantType::ALL.into_iter().enumerate() {
            let seed = 200 + 10 * i as u64;
            check_linear_at(c, ty, 37, 1, false, seed, None, 0, 0);
            check_linear_at(c, ty, 66, 3, false, seed + 1, None, 4, 4);
            check_linear_at(c, ty, 3, 2, false, seed + 2, None, 3, 5);
            // More tokens than one workgroup takes (8 on one-lane-per-row devices), last group partial.
            check_linear_at(c, ty, 9, 11, false, seed + 3, None, 0, 0);
        }
    }
}

/// `linear` on CPU drivers (one lane per row) takes the tiled matmul for a prefill through wide rows and the
/// matvec otherwise; GPU work splits take the matvec only for a few tokens. Both routes match the reference
/// there: 70 tokens (a full and a ragged 64-token tile) through 1056-wide rows, and just under each bound.
#[test]
fn linear_picks_the_kernel_by_tokens_and_row_width() {
    let row = row_per_lane_context();
    let [coop, sub, _, _] = gpu_shaped_contexts();
    for (n, k, want) in [
        (CPU_MATMUL_MIN_ROWS, CPU_MATMUL_MIN_ROW_LEN, LinearKernel::Matmul),
        (290, 7168, LinearKernel::Matmul),
        (CPU_MATMUL_MIN_ROWS - 1, 20480, LinearKernel::Matvec),
        (1025, CPU_MATMUL_MIN_ROW_LEN - 1, LinearKernel::Matvec),
        (1, 7168, LinearKernel::Matvec),
    ] {
        assert_eq!(
            row.linear_kernel(n, k),
            want,
            "CPU driver, {n} tokens, rows of {k}"
        );
    }
    for c in [coop, sub] {
        assert_eq!(c.linear_kernel(MATVEC_MAX_ROWS, 7168), LinearKernel::Matvec);
        assert_eq!(c.linear_kernel(MATVEC_MAX_ROWS + 1, 16), LinearKernel::Matmul);
    }
    for (i, (ty, k, n)) in [
        (QuantType::Q8_0, 1056, 70),
        (QuantType::Q4_K, 1024, 64),
        (QuantType::F16, 1024, 63),
        (QuantType::Q6_K, 768, 70),
    ]
    .into_iter()
    .enumerate()
    {
        check_linear_len(
            row,
            ty,
            67,
            k,
            n,
            LinearOp::Linear,
            500 + i as u64,
            None,
            0,
            0,
        );
    }
}

#[test]
fn matmul_every_type() {
    for (i, ty) in QuantType::ALL.into_iter().enumerate() {
        check_linear(ctx(), ty, 70, 33, true, 50 + i as u64, None);
    }
    // A single row and a single token through the tiled kernel.
    check_linear(ctx(), QuantType::Q4_K, 1, 1, true, 71, None);
    check_linear(ctx(), QuantType::Q6_K, 3, 45, true, 72, None);
    // Several 64 × 64 tiles in both directions, each ragged at its end.
    check_linear(ctx(), QuantType::Q8_0, 130, 133, true, 73, None);
    check_linear(ctx(), QuantType::Q4_K, 67, 129, true, 74, None);
}

#[test]
fn weight_split_across_bindings() {
    let c = ctx();
    // Q5_0 rows of 160 elements are 110 bytes; a 4-row binding limit gives parts of 4 rows (440 bytes).
    let (w, _) = make_weight(c, QuantType::Q5_0, 37, 160, 90, Some(440));
    assert_eq!(w.parts.len(), 10);
    assert_eq!(w.parts.iter().map(|p| p.n_rows).sum::<u64>(), 37);
    assert!(w
        .parts
        .windows(2)
        .all(|p| p[0].first_row + p[0].n_rows == p[1].first_row));
    assert!(
        w.gpu_bytes() < 37 * 110 + 4 * 10,
        "packed bytes are uploaded as-is"
    );
    check_linear(c, QuantType::Q5_0, 37, 2, false, 91, Some(440));
    check_linear(c, QuantType::Q5_0, 37, 9, true, 92, Some(440));
    check_linear(c, QuantType::Q6_K, 7, 1, false, 93, Some(420));
    // A row larger than the limit is refused with a typed error.
    let desc = WeightDesc {
        ty: QuantType::F32,
        rows: 2,
        row_len: 64,
    };
    let e = GpuWeight::upload_with(c, desc, "w", Some(100), |_, _: &mut [u8]| {
        Ok::<(), String>(())
    })
    .unwrap_err();
    assert!(e.to_string().contains("row_len"), "{e}");
}

#[test]
fn bad_shapes_are_typed_errors() {
    let c = ctx();
    let desc = WeightDesc {
        ty: QuantType::Q4_0,
        rows: 2,
        row_len: 48,
    };
    let e = GpuWeight::upload(c, desc, "w", &[0u8; 54]).unwrap_err();
    assert!(
        e.to_string().contains("row_len") && e.to_string().contains("48"),
        "{e}"
    );
    let (w, _) = make_weight(c, QuantType::Q8_0, 4, 64, 3, None);
    let x = c.zeros(DType::F32, 63, "x").unwrap();
    let y = c.zeros(DType::F32, 4, "y").unwrap();
    let mut enc = c.encoder();
    let e = c
        .matvec(
            &mut enc,
            &w,
            &x,
            Rows::dense(1, 63),
            None,
            &y,
            Rows::dense(1, 4),
        )
        .unwrap_err();
    assert!(
        e.to_string().contains("x.width") && e.to_string().contains("63"),
        "{e}"
    );
    let e = c
        .matvec(
            &mut enc,
            &w,
            &x,
            Rows::dense(1, 64),
            None,
            &y,
            Rows::dense(1, 4),
        )
        .unwrap_err();
    assert!(e.to_string().contains("`x`"), "{e}");
}

#[test]
fn rms_and_layer_norm() {
    let c = ctx();
    // q_norm-style: RMSNorm over the q third (width 300) of fused [rows, 900] rows, written densely; 300 rows
    // take the row-per-invocation kernel on CPU drivers.
    for rows in [5usize, 300] {
        rms_norm_q_third(c, rows);
    }
    // A long row whose width is not a multiple of 4, over enough rows for that kernel too.
    {
        let (rows, width) = (257usize, 3203usize);
        let xs = rand_vec(9, rows * width);
        let g = rand_vec(10, width);
        let (x, gb) = (
            c.upload_f32(&xs, "x").unwrap(),
            c.upload_f32(&g, "g").unwrap(),
        );
        let y = c.zeros(DType::F32, (rows * width) as u64, "y").unwrap();
        let dense = Rows::dense(rows as u32, width as u32);
        run(c, |e| {
            c.rms_norm(e, &x, dense, &gb, 1e-6, &y, dense).unwrap()
        });
        let want = r::rms_norm(&xs, rows, width, &g, 1e-6);
        assert_within("rms_norm 3203", &read(c, &y), &want, |i| {
            2e-6 * (1.0 + want[i].abs())
        });
    }
    layer_norms(c);
}

fn rms_norm_q_third(c: &GpuContext, rows: usize) {
    let (w3, width) = (900usize, 300usize);
    let xs = rand_vec(1, rows * w3);
    let g = rand_vec(2, width);
    let x = c.upload_f32(&xs, "x").unwrap();
    let gb = c.upload_f32(&g, "g").unwrap();
    let y = c.zeros(DType::F32, (rows * width) as u64, "y").unwrap();
    run(c, |e| {
        c.rms_norm(
            e,
            &x,
            Rows::columns(rows as u32, w3 as u32, 300, width as u32),
            &gb,
            1e-6,
            &y,
            Rows::dense(rows as u32, width as u32),
        )
        .unwrap()
    });
    let slice: Vec<f32> = (0..rows)
        .flat_map(|r| xs[r * w3 + 300..r * w3 + 600].to_vec())
        .collect();
    let want = r::rms_norm(&slice, rows, width, &g, 1e-6);
    assert_within("rms_norm", &read(c, &y), &want, |i| {
        2e-6 * (1.0 + want[i].abs())
    });
}

fn layer_norms(c: &GpuContext) {
    // LayerNorm with a large mean offset (the two-pass variance must not cancel) and a single row.
    for (rows, width) in [(3usize, 1000usize), (1, 7)] {
        let xs: Vec<f32> = rand_vec(3, rows * width)
            .iter()
            .map(|v| v * 3.0 + 50.0)
            .collect();
        let g = rand_vec(4, width);
        let b = rand_vec(5, width);
        let (x, gb, bb) = (
            c.upload_f32(&xs, "x").unwrap(),
            c.upload_f32(&g, "g").unwrap(),
            c.upload_f32(&b, "b").unwrap(),
        );
        let y = c.zeros(DType::F32, (rows * width) as u64, "y").unwrap();
        let v = Rows::dense(rows as u32, width as u32);
        run(c, |e| {
            c.layer_norm(e, &x, v, &gb, &bb, 1e-5, &y, v).unwrap()
        });
        let want = r::layer_norm(&xs, rows, width, &g, &b, 1e-5);
        // |x − mean| ~ 3 carries the f32 rounding of x ≈ 50 (2⁻¹⁹ relative to 50 ≈ 1e-4 of the centred value).
        assert_within("layer_norm", &read(c, &y), &want, |i| {
            2e-5 * (1.0 + want[i].abs())
        });
    }
}

#[test]
fn rope_adjacent_pairs() {
    let c = ctx();
    for (hd, heads, n, start) in [(16u32, 4u32, 3u32, 5u32), (128, 2, 2, 900), (64, 3, 1, 0)] {
        let table = RopeTable::new(c, 1024, hd, 5_000_000.0).unwrap();
        let width = (heads * hd) as usize;
        let xs = rand_vec(u64::from(hd), n as usize * width);
        let x = c.upload_f32(&xs, "x").unwrap();
        run(c, |e| {
            c.rope(e, &x, Rows::dense(n, width as u32), heads, start, &table)
                .unwrap()
        });
        let pos: Vec<usize> = (0..n as usize).map(|t| start as usize + t).collect();
        let want = r::rope_adjacent_pairs(
            &xs,
            n as usize,
            heads as usize,
            hd as usize,
            &pos,
            5_000_000.0,
        );
        // The table holds the reference's exact cos/sin; only the 2-term f32 rotation can round differently.
        assert_within("rope", &read(c, &x), &want, |_| 3e-7);
    }
    let table = RopeTable::new(c, 8, 16, 1e4).unwrap();
    let x = c.zeros(DType::F32, 32, "x").unwrap();
    let mut enc = c.encoder();
    let e = c
        .rope(&mut enc, &x, Rows::dense(2, 16), 1, 7, &table)
        .unwrap_err();
    assert!(e.to_string().contains("pos_start"), "{e}");
}

/// Attention tolerance: softmax weights and the weighted sum accumulate in f32 with GPU `exp` (a few ulp), and
/// outputs are convex combinations of |v| ≤ 1, so an absolute 2e-6 bound is about 30 ulp of the inputs.
const ATT_ABS: f32 = 2e-6;

#[test]
fn attention_bidirectional_from_fused_qkv() {
    let c = ctx();
    // 4 heads × 70 tokens = 280 (query, head) pairs: CPU drivers take the invocation-per-pair kernel.
    // Head size 6: keys and values element by element (rows not 4-aligned), in both kernels.
    for (hd, heads, n) in [
        (16u32, 3u32, 70u32),
        (128, 2, 65),
        (32, 1, 1),
        (16, 4, 70),
        (6, 4, 70),
        (6, 1, 9),
    ] {
        let cw = (heads * hd) as usize;
        let qkv = rand_vec(u64::from(hd + n), n as usize * 3 * cw);
        let buf = c.upload_f32(&qkv, "qkv").unwrap();
        let o = c.zeros(DType::F32, u64::from(n) * cw as u64, "o").unwrap();
        let view = |col: u32| Rows::columns(n, 3 * cw as u32, col, cw as u32);
        let shape = AttnShape {
            n_heads: heads,
            n_kv_heads: heads,
            head_dim: hd,
            causal_start: None,
        };
        run(c, |e| {
            c.attention(
                e,
                shape,
                &buf,
                view(0),
                &buf,
                view(cw as u32),
                &buf,
                view(2 * cw as u32),
                &o,
                Rows::dense(n, cw as u32),
            )
            .unwrap()
        });
        let split = |col: usize| -> Vec<f32> {
            (0..n as usize)
                .flat_map(|t| qkv[t * 3 * cw + col..t * 3 * cw + col + cw].to_vec())
                .collect()
        };
        let want = r::attention(
            &split(0),
            &split(cw),
            &split(2 * cw),
            n as usize,
            n as usize,
            heads as usize,
            heads as usize,
            hd as usize,
            None,
        );
        assert_within(
            &format!("attention hd {hd} n {n}"),
            &read(c, &o),
            &want,
            |_| ATT_ABS,
        );
    }
}

fn round_f16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
}

/// Prefill `n0` tokens then decode one, through kv_write + causal GQA attention on the cache.
fn check_causal(c: &GpuContext, hd: u32, n_kv_heads: u32, ratio: u32, n0: u32) {
    let heads = n_kv_heads * ratio;
    let (qw, kw) = ((heads * hd) as usize, (n_kv_heads * hd) as usize);
    let total = n0 + 1;
    let cache = KvCache::new(c, 1, total.max(80), kw as u32).unwrap();
    let ks = rand_vec(u64::from(hd * 7 + ratio), total as usize * kw);
    let vs = rand_vec(u64::from(hd * 11 + ratio), total as usize * kw);
    let qs = rand_vec(u64::from(hd * 13 + ratio), total as usize * qw);
    let f16 = cache.dtype() == DType::F16;
    let (kt, vt) = if f16 {
        (round_f16(&ks), round_f16(&vs))
    } else {
        (ks.clone(), vs.clone())
    };
    let mut got = Vec::new();
    for (start, n) in [(0u32, n0), (n0, 1)] {
        let (a, b) = (start as usize, (start + n) as usize);
        let k = c.upload_f32(&ks[a * kw..b * kw], "k").unwrap();
        let v = c.upload_f32(&vs[a * kw..b * kw], "v").unwrap();
        let q = c.upload_f32(&qs[a * qw..b * qw], "q").unwrap();
        let o = c.zeros(DType::F32, u64::from(n) * qw as u64, "o").unwrap();
        let shape = AttnShape {
            n_heads: heads,
            n_kv_heads,
            head_dim: hd,
            causal_start: Some(start),
        };
        run(c, |e| {
            c.kv_write(e, &k, Rows::dense(n, kw as u32), &cache.k[0], start)
                .unwrap();
            c.kv_write(e, &v, Rows::dense(n, kw as u32), &cache.v[0], start)
                .unwrap();
            let kv = cache.view(start + n);
            c.attention(
                e,
                shape,
                &q,
                Rows::dense(n, qw as u32),
                &cache.k[0],
                kv,
                &cache.v[0],
                kv,
                &o,
                Rows::dense(n, qw as u32),
            )
            .unwrap();
        });
        got.extend(read(c, &o));
    }
    let want = r::attention(
        &qs,
        &kt,
        &vt,
        total as usize,
        total as usize,
        heads as usize,
        n_kv_heads as usize,
        hd as usize,
        Some(0),
    );
    assert_within(
        &format!("causal hd {hd} kv {n_kv_heads} ratio {ratio} f16 {f16}"),
        &got,
        &want,
        |_| ATT_ABS,
    );
    // The cache holds exactly what was written (rounded to f16 on the f16 path).
    let cached = if f16 {
        c.read_f16_as_f32_blocking(&cache.k[0]).unwrap()
    } else {
        read(c, &cache.k[0])
    };
    assert_eq!(&cached[..total as usize * kw], &kt[..]);
}

#[test]
fn attention_causal_kv_cache_gqa_f32() {
    let c = ctx32();
    check_causal(c, 16, 2, 1, 5);
    check_causal(c, 32, 1, 3, 66);
    check_causal(c, 64, 2, 7, 4);
    check_causal(c, 128, 1, 7, 3);
    // A 130-token prefill over 4 heads (520 pairs: one invocation per pair on CPU drivers), then decode.
    check_causal(c, 64, 2, 2, 130);
}

/// Split keys (flash-decoding), which GPU-shaped contexts use when few (query, head) pairs see many keys:
/// chunks of whole 64-key tiles, the last one ragged, merged by `combine`; prefill rows whose causal window
/// ends before a chunk starts get empty partials.
#[test]
fn attention_split_keys_match_the_reference() {
    for f16 in [false, true] {
        let c = GpuContext::new_blocking(ContextOptions {
            force_f32: !f16,
            matvec_shape: Some(MatvecShape::COOPERATIVE),
            ..Default::default()
        })
        .unwrap();
        check_causal(&c, 128, 2, 7, 300);
        check_causal(&c, 64, 1, 3, 65);
        check_causal(&c, 32, 2, 1, 129);
        // Head size 6: keys and values element by element in the workgroup kernel, split and not.
        check_causal(&c, 6, 1, 2, 70);
        check_causal(&c, 6, 1, 1, 20);
    }
}

#[test]
fn attention_causal_kv_cache_gqa_f16() {
    let c = ctx16();
    check_causal(c, 16, 2, 3, 5);
    check_causal(c, 128, 2, 1, 70);
    check_causal(c, 64, 1, 7, 2);
    check_causal(c, 32, 2, 3, 100);
}

#[test]
fn gelu_silu_residual_softmax() {
    let c = ctx();
    // GELU over [-10, 10] (tails included).
    let xs: Vec<f32> = (0..2001).map(|i| (i as f32 - 1000.0) / 100.0).collect();
    let x = c.upload_f32(&xs, "x").unwrap();
    run(c, |e| c.gelu(e, &x, xs.len() as u64).unwrap());
    let want = r::gelu_erf(&xs);
    let got = read(c, &x);
    // erfc's 1.2e-7 relative error plus GPU exp and f32 rounding: 1e-6 relative to the output, with a 1e-7
    // absolute floor where the output crosses zero (x ≈ 0).
    assert_within("gelu", &got, &want, |i| 1e-6 * want[i].abs() + 1e-7);

    let (g, u) = (
        rand_vec(7, 999).iter().map(|v| v * 8.0).collect::<Vec<_>>(),
        rand_vec(8, 999),
    );
    let gb = c.upload_f32(&g, "g").unwrap();
    let ub = c.upload_f32(&u, "u").unwrap();
    run(c, |e| c.silu_mul(e, &gb, &ub, 999).unwrap());
    let want: Vec<f32> = r::silu(&g).iter().zip(&u).map(|(a, b)| a * b).collect();
    assert_within("silu_mul", &read(c, &gb), &want, |i| {
        2e-6 * (1.0 + want[i].abs())
    });

    let (rows, w) = (3u32, 77u32);
    let (a, b, ls) = (rand_vec(9, 231), rand_vec(10, 231), rand_vec(11, 77));
    for with_ls in [true, false] {
        let ab = c.upload_f32(&a, "a").unwrap();
        let bb = c.upload_f32(&b, "b").unwrap();
        let lb = c.upload_f32(&ls, "ls").unwrap();
        run(c, |e| {
            c.add_scaled(e, &ab, &bb, with_ls.then_some(&lb), rows, w)
                .unwrap()
        });
        let want: Vec<f32> = (0..231)
            .map(|i| a[i] + if with_ls { ls[i % 77] * b[i] } else { b[i] })
            .collect();
        assert_eq!(read(c, &ab), want, "add_scaled ls {with_ls}");
    }

    let xs: Vec<f32> = rand_vec(12, 3 * 300).iter().map(|v| v * 20.0).collect();
    let x = c.upload_f32(&xs, "x").unwrap();
    run(c, |e| c.softmax(e, &x, 3, 300).unwrap());
    let mut want = xs.clone();
    want.chunks_mut(300).for_each(r::softmax_inplace);
    assert_within("softmax", &read(c, &x), &want, |i| 1e-6 * want[i] + 1e-9);
}

#[test]
fn patch_embedding_cls_pos_and_pixel_shuffle() {
    let c = ctx();
    // 3×56×56 image, 14-pixel patches → 16 patches of 588; F16 conv weight (row_len 588 is not a tile multiple).
    let (s, p, cw) = (56u32, 14u32, 24usize);
    let g = s / p;
    let n_patches = (g * g) as usize;
    let pixels = rand_vec(20, 3 * (s * s) as usize);
    let (w, deq) = make_weight(c, QuantType::F16, cw, 588, 21, None);
    let bias = rand_vec(22, cw);
    let cls = rand_vec(23, cw);
    let pos = rand_vec(24, (n_patches + 1) * cw);
    let px = c.upload_f32(&pixels, "px").unwrap();
    let cols = c
        .zeros(DType::F32, (n_patches * 588) as u64, "cols")
        .unwrap();
    let pe = c.zeros(DType::F32, (n_patches * cw) as u64, "pe").unwrap();
    let (bb, cb, pb) = (
        c.upload_f32(&bias, "b").unwrap(),
        c.upload_f32(&cls, "cls").unwrap(),
        c.upload_f32(&pos, "pos").unwrap(),
    );
    let out = c
        .zeros(DType::F32, ((n_patches + 1) * cw) as u64, "out")
        .unwrap();
    let shuffled = c.zeros(DType::F32, (n_patches * cw) as u64, "sh").unwrap();
    run(c, |e| {
        c.im2col(e, &px, s, p, &cols).unwrap();
        c.matmul(
            e,
            &w,
            &cols,
            Rows::dense(n_patches as u32, 588),
            Some(&bb),
            &pe,
            Rows::dense(n_patches as u32, cw as u32),
        )
        .unwrap();
        c.cls_pos(e, &pe, &cb, &pb, n_patches as u32, cw as u32, &out)
            .unwrap();
        c.pixel_shuffle_v1(e, &out, g, cw as u32, 1, &shuffled)
            .unwrap();
    });
    let patches = r::patch_embed(&pixels, s as usize, p as usize, &deq, cw, &bias);
    let mut want: Vec<f32> = cls.clone();
    want.extend_from_slice(&patches);
    want.iter_mut().zip(&pos).for_each(|(a, b)| *a += b);
    let got = read(c, &out);
    assert_within("patch embed + cls + pos", &got, &want, |_| {
        1e-5 * 588.0 * 0.5
    });
    // Pixel shuffle is a pure permutation: compare exactly against the reference applied to the GPU's tokens.
    let want_sh = r::pixel_shuffle_v1(&got[cw..], g as usize, cw);
    assert_eq!(read(c, &shuffled), want_sh);
}

#[test]
fn embedding_lookup_with_image_splice() {
    let c = ctx();
    let (vocab, width) = (50usize, 64usize);
    // Split into parts of 8 rows to check the per-part dispatch (Q8_0 row = 68 bytes).
    let (table, deq) = make_weight(c, QuantType::Q8_0, vocab, width, 30, Some(8 * 68));
    assert_eq!(table.parts.len(), 7);
    let img_id = 42u32;
    let ids = [3u32, 42, 49, 42, 0, 42, 1000, 17, 42];
    let feats = rand_vec(31, 3 * width); // only 3 features for 4 image tokens: the 4th gets zeros
    let idb = c.upload_u32(&ids, "ids").unwrap();
    let fb = c.upload_f32(&feats, "f").unwrap();
    for splice in [true, false] {
        let out = c.upload_f32(&vec![7.0; ids.len() * width], "out").unwrap();
        run(c, |e| {
            c.embed(
                e,
                &table,
                &idb,
                ids.len() as u32,
                splice.then_some((&fb, 3, img_id)),
                &out,
            )
            .unwrap()
        });
        let got = read(c, &out);
        let mut k = 0;
        for (t, &id) in ids.iter().enumerate() {
            let row = &got[t * width..(t + 1) * width];
            let want: Vec<f32> = if splice && id == img_id {
                k += 1;
                if k <= 3 {
                    feats[(k - 1) * width..k * width].to_vec()
                } else {
                    vec![0.0; width]
                }
            } else if (id as usize) < vocab {
                deq[id as usize * width..(id as usize + 1) * width].to_vec()
            } else {
                vec![0.0; width]
            };
            assert_eq!(row, &want[..], "token {t} id {id} splice {splice}");
        }
    }
}

#[test]
fn argmax_and_top_n() {
    let c = ctx();
    let n = 1000usize;
    let mut logits = rand_vec(40, n);
    logits[700] = 5.0;
    logits[123] = 5.0; // tie: the lower index wins
    logits[5] = 4.5;
    logits[999] = f32::NAN; // never picked
    let lb = c.upload_f32(&logits, "l").unwrap();
    let out = c.zeros(DType::U32, 1 + 2 * 6, "out").unwrap();
    run(c, |e| {
        c.argmax(e, &lb, 0, n as u32, &out, 0).unwrap();
        c.top_n(e, &lb, 0, n as u32, 6, &out, 1).unwrap();
    });
    let got = c.read_u32_blocking(&out, 0, 13).unwrap();
    assert_eq!(got[0], 123);
    let finite: Vec<f32> = logits
        .iter()
        .map(|&v| if v.is_nan() { f32::NEG_INFINITY } else { v })
        .collect();
    let want = r::top_k(&finite, 6);
    for (j, (i, v)) in want.iter().enumerate() {
        assert_eq!(
            (got[1 + 2 * j] as usize, f32::from_bits(got[2 + 2 * j])),
            (*i, *v),
            "top_n rank {j}"
        );
    }
    // Fewer entries than k: the rest report u32::MAX. A sub-range with an offset.
    let out = c.zeros(DType::U32, 8, "out").unwrap();
    run(c, |e| c.top_n(e, &lb, 4, 3, 4, &out, 0).unwrap());
    let got = c.read_u32_blocking(&out, 0, 8).unwrap();
    let want: Vec<u32> = r::top_k(&logits[4..7], 3)
        .iter()
        .map(|&(i, _)| i as u32)
        .collect();
    assert_eq!(want[0], 1);
    assert_eq!(
        [got[0], got[2], got[4], got[6]],
        [want[0], want[1], want[2], u32::MAX]
    );
}

#[test]
fn slice_upload_and_linear_dispatch() {
    let c = ctx();
    let (rows, k) = (19usize, 96usize);
    let src = rand_vec(60, rows * k);
    let mut bytes = Vec::new();
    meddr_quants::quantize(QuantType::Q4_1, &src, &mut bytes).unwrap();
    let mut deq = vec![0.0; src.len()];
    meddr_quants::dequantize(QuantType::Q4_1, &bytes, &mut deq).unwrap();
    let desc = WeightDesc {
        ty: QuantType::Q4_1,
        rows: rows as u64,
        row_len: k as u64,
    };
    let w = GpuWeight::upload(c, desc, "w", &bytes).unwrap();
    assert_eq!(
        w.gpu_bytes(),
        bytes.len() as u64,
        "GPU bytes = file bytes (already a multiple of 4 here)"
    );
    // Both sides of MATVEC_MAX_ROWS.
    for n in [
        meddr_engine::MATVEC_MAX_ROWS as usize,
        meddr_engine::MATVEC_MAX_ROWS as usize + 3,
    ] {
        let xs = rand_vec(61 + n as u64, n * k);
        let x = c.upload_f32(&xs, "x").unwrap();
        let y = c.zeros(DType::F32, (n * rows) as u64, "y").unwrap();
        run(c, |e| {
            c.linear(
                e,
                &w,
                &x,
                Rows::dense(n as u32, k as u32),
                None,
                &y,
                Rows::dense(n as u32, rows as u32),
            )
            .unwrap()
        });
        let (want, mag) = naive_linear(&xs, n, k, &deq, rows, None);
        assert_within(&format!("linear n {n}"), &read(c, &y), &want, |i| {
            LIN_REL * mag[i] + 1e-7
        });
    }
}

/// Two greedy decode steps recorded as one encoder each, the sampled id fed back on the GPU (embed reads the
/// argmax output buffer) and only one u32 read back per step: the shape of the real decode loop.
#[test]
fn greedy_steps_feed_back_on_gpu() {
    let c = ctx();
    let (vocab, h) = (40usize, 64usize);
    let (embd, embd_f) = make_weight(c, QuantType::Q8_0, vocab, h, 70, None);
    let (head, head_f) = make_weight(c, QuantType::Q4_0, vocab, h, 71, None);
    let norm_w: Vec<f32> = rand_vec(72, h).iter().map(|v| 1.0 + 0.5 * v).collect();
    let nb = c.upload_f32(&norm_w, "norm").unwrap();
    let tok = c.upload_u32(&[5], "tok").unwrap();
    let (x, xn, logits) = (
        c.zeros(DType::F32, h as u64, "x").unwrap(),
        c.zeros(DType::F32, h as u64, "xn").unwrap(),
        c.zeros(DType::F32, vocab as u64, "logits").unwrap(),
    );
    let mut cpu_tok = 5usize;
    for step in 0..2 {
        let mut enc = c.encoder();
        c.embed(&mut enc, &embd, &tok, 1, None, &x).unwrap();
        c.rms_norm(
            &mut enc,
            &x,
            Rows::dense(1, h as u32),
            &nb,
            1e-5,
            &xn,
            Rows::dense(1, h as u32),
        )
        .unwrap();
        c.linear(
            &mut enc,
            &head,
            &xn,
            Rows::dense(1, h as u32),
            None,
            &logits,
            Rows::dense(1, vocab as u32),
        )
        .unwrap();
        c.argmax(&mut enc, &logits, 0, vocab as u32, &tok, 0)
            .unwrap();
        c.submit(enc);
        let got = c.read_u32_blocking(&tok, 0, 1).unwrap()[0] as usize;
        let xr = r::rms_norm(&embd_f[cpu_tok * h..(cpu_tok + 1) * h], 1, h, &norm_w, 1e-5);
        let l = r::matmul_wt(&xr, 1, h, &head_f, vocab, None);
        cpu_tok = r::argmax(&l).unwrap();
        assert_eq!(got, cpu_tok, "step {step}");
    }
}

/// The streaming-read yardstick of `meddr bench`: reads the whole (16-byte-rounded) buffer each pass, refuses
/// buffers under 1 MiB and zero passes, and is capped by the largest binding.
#[test]
fn read_bandwidth_measures_whole_passes_and_refuses_bad_sizes() {
    let c = ctx();
    let r = c.read_bandwidth((8 << 20) + 7, 3).unwrap();
    assert_eq!(r.bytes, 8 << 20);
    assert_eq!(r.passes, 3);
    assert!(
        r.seconds > 0.0 && r.gb_per_s().is_finite() && r.gb_per_s() > 0.0,
        "{r:?}"
    );
    let big = c.read_bandwidth(u64::MAX, 1).unwrap();
    assert_eq!(big.bytes, c.max_binding_bytes() / 16 * 16);
    assert!(c
        .read_bandwidth(1 << 19, 1)
        .unwrap_err()
        .to_string()
        .contains("below 1 MiB"));
    assert!(c
        .read_bandwidth(8 << 20, 0)
        .unwrap_err()
        .to_string()
        .contains("passes"));
}
