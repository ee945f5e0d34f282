//! Op wrappers: validate shapes on the CPU, then record one or more dispatches into a caller's encoder.
//!
//! Nothing here submits or reads back, so a whole decode step (every layer, the logits and the argmax) can
//! be recorded into one [`Recorder`] (one encoder, one compute pass) and submitted once. Every op reads and writes [`GpuBuffer`]s.

use crate::context::{GpuContext, Recorder};
use crate::error::{invalid, EngineError, Result};
use crate::kv::RopeTable;
use crate::shaders::{self, render};
use crate::tensor::{DType, GpuBuffer, Rows};
use crate::weight::GpuWeight;

type Enc = Recorder;

/// Query rows at or below this count use the matvec kernel in [`GpuContext::linear`]: below it the tiled
/// matmul's 64-token tiles would be mostly empty while it still streams the whole weight.
pub const MATVEC_MAX_ROWS: u32 = 4;

/// On one-lane-per-row devices (CPU drivers), [`GpuContext::linear`] takes the tiled matmul from this many
/// tokens (one 64-token tile) when the weight's rows are at least [`CPU_MATMUL_MIN_ROW_LEN`] long.
pub const CPU_MATMUL_MIN_ROWS: u32 = 64;

/// See [`CPU_MATMUL_MIN_ROWS`]: rows (input widths) from which the matmul pays on CPU drivers.
pub const CPU_MATMUL_MIN_ROW_LEN: u64 = 1024;

/// Most tokens one matvec workgroup applies each decoded weight group to (one-lane-per-row devices).
const MATVEC_TOKENS: u32 = 8;

/// Attention geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnShape {
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    /// `None`: bidirectional (ViT). `Some(pos_start)`: causal; query row t is at position pos_start + t and
    /// sees keys 0 ..= pos_start + t.
    pub causal_start: Option<u32>,
}

fn f(x: f32) -> u32 {
    x.to_bits()
}

fn u(op: &'static str, field: &'static str, v: u64) -> Result<u32> {
    u32::try_from(v).map_err(|_| invalid(op, field, v, "does not fit u32"))
}

/// Attention's K or V binding `name` (`array<T>`, or `array<vec4<T>>` when `vec4`) with its accessors:
/// `{name}4: bool`, `{name}load(i)` (element i) and `{name}load4(i)` (elements i .. i + 4, i 4-aligned), so
/// `attention.wgsl` reads either layout through the same calls.
fn kv_binding(binding: u32, name: &str, t: &str, vec4: bool) -> String {
    let l = name.to_lowercase();
    if vec4 {
        format!(
            "@group(0) @binding({binding}) var<storage, read> {name}: array<vec4<{t}>>;\n\
             const {name}4: bool = true;\n\
             fn {l}load(i: u32) -> f32 {{ return f32({name}[i >> 2u][i & 3u]); }}\n\
             fn {l}load4(i: u32) -> vec4<f32> {{ return vec4<f32>({name}[i >> 2u]); }}"
        )
    } else {
        format!(
            "@group(0) @binding({binding}) var<storage, read> {name}: array<{t}>;\n\
             const {name}4: bool = false;\n\
             fn {l}load(i: u32) -> f32 {{ return f32({name}[i]); }}\n\
             fn {l}load4(i: u32) -> vec4<f32> {{ return vec4<f32>({l}load(i), {l}load(i + 1u), {l}load(i + 2u), \
             {l}load(i + 3u)); }}"
        )
    }
}

fn same_width(op: &'static str, field: &'static str, got: u32, want: u64) -> Result<()> {
    if u64::from(got) != want {
        return Err(invalid(op, field, got, format!("must equal {want}")));
    }
    Ok(())
}

/// The two kernels behind [`GpuContext::linear`]: `matvec_quant.wgsl` (a weight row per lane or per 32 lanes,
/// up to 8 tokens per weight read) and the tiled `matmul.wgsl` (64 × 64 tiles).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearKernel {
    Matvec,
    Matmul,
}

impl LinearKernel {
    /// The op's name in error messages and profiles.
    pub fn name(self) -> &'static str {
        match self {
            LinearKernel::Matvec => "matvec",
            LinearKernel::Matmul => "matmul",
        }
    }
}

impl GpuContext {
    /// `y[t] = W x[t] (+ b)` for each row t of `xv` via the matvec kernel (decode; few rows).
    #[allow(clippy::too_many_arguments)]
    pub fn matvec(
        &self,
        enc: &mut Enc,
        w: &GpuWeight,
        x: &GpuBuffer,
        xv: Rows,
        bias: Option<&GpuBuffer>,
        y: &GpuBuffer,
        yv: Rows,
    ) -> Result<()> {
        self.linear_impl(enc, LinearKernel::Matvec, w, x, xv, bias, y, yv)
    }

    /// `Y = X Wᵀ (+ b)` via the tiled matmul (prefill, ViT).
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        &self,
        enc: &mut Enc,
        w: &GpuWeight,
        x: &GpuBuffer,
        xv: Rows,
        bias: Option<&GpuBuffer>,
        y: &GpuBuffer,
        yv: Rows,
    ) -> Result<()> {
        self.linear_impl(enc, LinearKernel::Matmul, w, x, xv, bias, y, yv)
    }

    /// The kernel [`GpuContext::linear`] runs for `rows` tokens through a weight of `row_len`-element rows.
    ///
    /// GPU work splits: the matvec for up to [`MATVEC_MAX_ROWS`] tokens, the tiled matmul beyond. One lane
    /// per row (CPU drivers): the matvec, which streams the weight once per 8 tokens, except for at least
    /// [`CPU_MATMUL_MIN_ROWS`] tokens through rows of at least [`CPU_MATMUL_MIN_ROW_LEN`] elements, where
    /// the tiled matmul, decoding each weight once per 64 tokens, wins on both CPU drivers. Measured with
    /// `meddr bench --text-only` on synthetic q8_0 models (prefill tok/s, matvec → matmul): hidden 7168
    /// (Yi-34B) SwiftShader 0.51 → 1.69 (64 tokens), lavapipe 3.68 → 5.14 (128); hidden 1536 SwiftShader
    /// 6.6 → 13.2, lavapipe 37 → 51; hidden 512 61.9 → 61.6 (a tie); the dev fixture's 192-wide model
    /// 230 → 58 on SwiftShader, where the matmul's few, short tiles cost more than they save.
    pub fn linear_kernel(&self, rows: u32, row_len: u64) -> LinearKernel {
        let matmul = if self.info.matvec_shape.cooperative() {
            rows > MATVEC_MAX_ROWS
        } else {
            rows >= CPU_MATMUL_MIN_ROWS && row_len >= CPU_MATMUL_MIN_ROW_LEN
        };
        if matmul {
            LinearKernel::Matmul
        } else {
            LinearKernel::Matvec
        }
    }

    /// `y[t] = W x[t] (+ b)` through the kernel [`GpuContext::linear_kernel`] picks.
    #[allow(clippy::too_many_arguments)]
    pub fn linear(
        &self,
        enc: &mut Enc,
        w: &GpuWeight,
        x: &GpuBuffer,
        xv: Rows,
        bias: Option<&GpuBuffer>,
        y: &GpuBuffer,
        yv: Rows,
    ) -> Result<()> {
        let kernel = self.linear_kernel(xv.rows, w.row_len);
        self.linear_impl(enc, kernel, w, x, xv, bias, y, yv)
    }

    #[allow(clippy::too_many_arguments)]
    fn linear_impl(
        &self,
        enc: &mut Enc,
        kernel: LinearKernel,
        w: &GpuWeight,
        x: &GpuBuffer,
        xv: Rows,
        bias: Option<&GpuBuffer>,
        y: &GpuBuffer,
        yv: Rows,
    ) -> Result<()> {
        let op = kernel.name();
        x.expect(op, "x", DType::F32)?;
        y.expect(op, "y", DType::F32)?;
        same_width(op, "x.width", xv.width, w.row_len)?;
        same_width(op, "y.width", yv.width, w.rows)?;
        same_width(op, "y.rows", yv.rows, u64::from(xv.rows))?;
        xv.check(op, "x", x)?;
        yv.check(op, "y", y)?;
        if let Some(b) = bias {
            b.expect(op, "bias", DType::F32)?;
            b.check_span(op, "bias", 0, w.rows)?;
        }
        let n = xv.rows;
        if n == 0 {
            return Ok(());
        }
        let b = bias.map_or(&self.dummy, |b| &b.buffer);
        if kernel == LinearKernel::Matvec {
            return self.record_matvec(enc, w, x, xv, b, bias.is_some(), y, yv);
        }
        let pipeline = self.pipeline(&format!("matmul/{}", w.ty.ggml().name()), "main", || {
            render(shaders::MATMUL, &[("DEQUANT", &shaders::dequant(w.ty))])
        });
        for part in &w.parts {
            let params = linear_params(op, w, part, xv, yv, bias.is_some())?;
            let gx = part.n_rows.div_ceil(64);
            let gy = u64::from(n).div_ceil(64);
            let max = u64::from(self.info.limits.max_compute_workgroups_per_dimension);
            if gx > max || gy > max {
                return Err(invalid(
                    op,
                    "x.rows",
                    n,
                    "tile grid exceeds the workgroup limit",
                ));
            }
            self.dispatch(
                enc,
                &pipeline,
                &params,
                &[(1, &part.buffer), (2, &x.buffer), (3, b), (4, &y.buffer)],
                [gx as u32, gy as u32, 1],
            );
        }
        Ok(())
    }

    /// The matvec dispatches. x is read through the cheapest binding its layout allows: a uniform array when
    /// each invocation owns a row (CPU drivers) and the span fits the uniform limit, else a vec4 or a scalar
    /// storage array (x views at unaligned offsets, as the tests use).
    #[allow(clippy::too_many_arguments)]
    fn record_matvec(
        &self,
        enc: &mut Enc,
        w: &GpuWeight,
        x: &GpuBuffer,
        xv: Rows,
        b: &wgpu::Buffer,
        has_bias: bool,
        y: &GpuBuffer,
        yv: Rows,
    ) -> Result<()> {
        let op = "matvec";
        let n = xv.rows;
        let shape = self.info.matvec_shape;
        // Tokens per workgroup: with one lane per row the decoded weights stay in registers for up to 8
        // tokens (a power of two, so few pipeline variants); cooperative rows take one token each.
        let tokens = if !shape.cooperative() {
            n.min(MATVEC_TOKENS).next_power_of_two()
        } else {
            1
        };
        let z = n.div_ceil(tokens);
        if z > self.info.limits.max_compute_workgroups_per_dimension {
            return Err(invalid(
                op,
                "x.rows",
                n,
                "too many rows for matvec; use matmul",
            ));
        }
        let aligned = xv.offset % 4 == 0 && (n == 1 || xv.stride % 4 == 0);
        // Elements of x the dispatch reads; `xv.check` already proved the span lies inside the buffer.
        let span =
            u64::from(xv.offset) + u64::from(n - 1) * u64::from(xv.stride) + u64::from(xv.width);
        let vec4s = span.div_ceil(4);
        let (source, key, binding) = if aligned
            && !shape.cooperative()
            && vec4s * 16 <= self.info.limits.max_uniform_buffer_binding_size
            && vec4s * 16 <= x.buffer.size()
        {
            (
                format!(
                    "@group(0) @binding(2) var<uniform> XU: array<vec4<f32>, {vec4s}>;\n\
                     fn xv4(e: u32) -> vec4<f32> {{ return XU[e >> 2u]; }}"
                ),
                format!("u{vec4s}"),
                wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &x.buffer,
                    offset: 0,
                    size: std::num::NonZeroU64::new(vec4s * 16),
                }),
            )
        } else if aligned && vec4s * 16 <= x.buffer.size() {
            (
                "@group(0) @binding(2) var<storage, read> X4: array<vec4<f32>>;\n\
                 fn xv4(e: u32) -> vec4<f32> { return X4[e >> 2u]; }"
                    .to_string(),
                "v".to_string(),
                x.buffer.as_entire_binding(),
            )
        } else {
            (
                "@group(0) @binding(2) var<storage, read> X: array<f32>;\n\
                 fn xv4(e: u32) -> vec4<f32> { return vec4<f32>(X[e], X[e + 1u], X[e + 2u], X[e + 3u]); }"
                    .to_string(),
                "s".to_string(),
                x.buffer.as_entire_binding(),
            )
        };
        let key = format!("matvec/{}/{shape}/t{tokens}/{key}", w.ty.ggml().name());
        // Several rows per subgroup where the type has a kernel for it; other types walk those rows one
        // after another with the one-row subgroup kernel (same workgroup size, same rows per workgroup).
        let rows_kernel = if shape.subgroup && shape.rows_per_subgroup > 1 {
            shaders::dequant_dot_rows(w.ty)
        } else {
            None
        };
        let (main, dequant, vec4) = if let Some((src, vec4)) = rows_kernel {
            (shaders::MatvecMain::SubgroupRows, src, vec4)
        } else if shape.subgroup {
            let (src, vec4) = shaders::dequant_dot_subgroup(w.ty);
            (shaders::MatvecMain::Subgroup, src, vec4)
        } else if shape.lanes_per_row > 1 {
            (
                shaders::MatvecMain::Workgroup,
                shaders::dequant_dot_cooperative(w.ty),
                false,
            )
        } else {
            (
                shaders::MatvecMain::Workgroup,
                shaders::dequant_dot(w.ty),
                false,
            )
        };
        let rsg = if main == shaders::MatvecMain::SubgroupRows {
            shape.rows_per_subgroup
        } else {
            1
        };
        let pipeline = self.pipeline(&key, "main", || {
            render(
                &shaders::matvec(main),
                &[
                    ("X_SOURCE", &source),
                    ("ROWS", &shape.rows_per_group.to_string()),
                    ("LANES", &shape.lanes_per_row.to_string()),
                    ("TOKENS", &tokens.to_string()),
                    ("RSG", &rsg.to_string()),
                    ("WG", &shape.workgroup_size().to_string()),
                    (
                        "W4",
                        if vec4 {
                            "@group(0) @binding(5) var<storage, read> W4: array<vec4<u32>>;"
                        } else {
                            ""
                        },
                    ),
                    ("DEQUANT", &dequant),
                ],
            )
        });
        for part in &w.parts {
            let params = linear_params(op, w, part, xv, yv, has_bias)?;
            let [gx, gy, _] =
                self.grid(op, part.n_rows.div_ceil(u64::from(shape.rows_per_group)))?;
            let mut entries = vec![
                (1, part.buffer.as_entire_binding()),
                (2, binding.clone()),
                (3, b.as_entire_binding()),
                (4, y.buffer.as_entire_binding()),
            ];
            if vec4 {
                // Rows of whole 144-byte super-blocks: the part's size is a multiple of 16 (checked, since a
                // vec4 view of a shorter tail would be a validation error, not a wrong answer).
                if part.buffer.size() % 16 != 0 {
                    return Err(invalid(
                        op,
                        "w.part bytes",
                        part.buffer.size(),
                        "must be a multiple of 16 for 16-byte weight loads",
                    ));
                }
                entries.push((5, part.buffer.as_entire_binding()));
            }
            self.dispatch_bound(enc, &pipeline, &params, &entries, [gx, gy, z]);
        }
        Ok(())
    }

    /// RMSNorm of each row: `x · rsqrt(mean(x²) + eps) · g`. Also the ViT's q/k norms (width = all heads).
    #[allow(clippy::too_many_arguments)]
    pub fn rms_norm(
        &self,
        enc: &mut Enc,
        x: &GpuBuffer,
        xv: Rows,
        g: &GpuBuffer,
        eps: f32,
        y: &GpuBuffer,
        yv: Rows,
    ) -> Result<()> {
        self.norm(enc, "rms_norm", x, xv, g, None, eps, y, yv)
    }

    /// LayerNorm of each row with affine weight and bias (the projector's first layer).
    #[allow(clippy::too_many_arguments)]
    pub fn layer_norm(
        &self,
        enc: &mut Enc,
        x: &GpuBuffer,
        xv: Rows,
        g: &GpuBuffer,
        b: &GpuBuffer,
        eps: f32,
        y: &GpuBuffer,
        yv: Rows,
    ) -> Result<()> {
        self.norm(enc, "layer_norm", x, xv, g, Some(b), eps, y, yv)
    }

    #[allow(clippy::too_many_arguments)]
    fn norm(
        &self,
        enc: &mut Enc,
        op: &'static str,
        x: &GpuBuffer,
        xv: Rows,
        g: &GpuBuffer,
        b: Option<&GpuBuffer>,
        eps: f32,
        y: &GpuBuffer,
        yv: Rows,
    ) -> Result<()> {
        x.expect(op, "x", DType::F32)?;
        y.expect(op, "y", DType::F32)?;
        g.expect(op, "weight", DType::F32)?;
        xv.check(op, "x", x)?;
        yv.check(op, "y", y)?;
        same_width(op, "y.width", yv.width, u64::from(xv.width))?;
        same_width(op, "y.rows", yv.rows, u64::from(xv.rows))?;
        g.check_span(op, "weight", 0, u64::from(xv.width))?;
        if let Some(b) = b {
            b.expect(op, "bias", DType::F32)?;
            b.check_span(op, "bias", 0, u64::from(xv.width))?;
        }
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(invalid(
                op,
                "eps",
                eps.to_bits(),
                format!("{eps} must be finite and ≥ 0"),
            ));
        }
        // CPU drivers with rows to fill every core: a row per invocation (see norm.wgsl).
        let lane = op == "rms_norm" && !self.info.matvec_shape.cooperative() && xv.rows >= 256;
        let entry = if lane { "rms_norm_lane" } else { op };
        let pipeline = self.pipeline(entry, entry, || shaders::NORM.to_string());
        let groups = if lane {
            self.grid(op, u64::from(xv.rows).div_ceil(64))?
        } else {
            self.grid(op, u64::from(xv.rows))?
        };
        let params = [
            xv.rows,
            xv.width,
            xv.offset,
            xv.stride,
            yv.offset,
            yv.stride,
            f(eps),
            0,
        ];
        let mut bufs = vec![(1, &x.buffer), (2, &g.buffer), (3, &y.buffer)];
        if let Some(b) = b {
            bufs.push((4, &b.buffer));
        }
        self.dispatch(enc, &pipeline, &params, &bufs, groups);
        Ok(())
    }

    /// RoPE on adjacent pairs, in place, for rows at positions `pos_start ..`.
    pub fn rope(
        &self,
        enc: &mut Enc,
        x: &GpuBuffer,
        xv: Rows,
        n_heads: u32,
        pos_start: u32,
        table: &RopeTable,
    ) -> Result<()> {
        const OP: &str = "rope";
        x.expect(OP, "x", DType::F32)?;
        xv.check(OP, "x", x)?;
        same_width(
            OP,
            "x.width",
            xv.width,
            u64::from(n_heads) * u64::from(table.head_dim),
        )?;
        let end = u64::from(pos_start) + u64::from(xv.rows);
        if end > u64::from(table.max_pos) {
            return Err(invalid(
                OP,
                "pos_start",
                pos_start,
                format!(
                    "+ {} rows passes the table's {} positions",
                    xv.rows, table.max_pos
                ),
            ));
        }
        let pipeline = self.pipeline(OP, "main", || shaders::ROPE.to_string());
        let half = table.head_dim / 2;
        let params = [
            xv.rows, n_heads, half, xv.offset, xv.stride, pos_start, 0, 0,
        ];
        let total = u64::from(xv.rows) * u64::from(n_heads) * u64::from(half);
        self.dispatch(
            enc,
            &pipeline,
            &params,
            &[(1, &x.buffer), (2, &table.buffer.buffer)],
            self.grid(OP, total.div_ceil(64))?,
        );
        Ok(())
    }

    /// Attention of `qv.rows` queries over `kv.rows` keys/values (f32 activations or the f16/f32 KV cache),
    /// written to `o`. Memory is O(head_dim) per (query, head) whatever the sequence length.
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        enc: &mut Enc,
        shape: AttnShape,
        q: &GpuBuffer,
        qv: Rows,
        k: &GpuBuffer,
        kv: Rows,
        v: &GpuBuffer,
        vv: Rows,
        o: &GpuBuffer,
        ov: Rows,
    ) -> Result<()> {
        const OP: &str = "attention";
        let AttnShape {
            n_heads,
            n_kv_heads,
            head_dim,
            causal_start,
        } = shape;
        if head_dim == 0 || head_dim > 256 {
            return Err(invalid(OP, "head_dim", head_dim, "must be in 1..=256"));
        }
        if n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(invalid(
                OP,
                "n_kv_heads",
                n_kv_heads,
                format!("must divide n_heads = {n_heads}"),
            ));
        }
        q.expect(OP, "q", DType::F32)?;
        o.expect(OP, "o", DType::F32)?;
        if k.dtype != v.dtype || k.dtype == DType::U32 {
            return Err(EngineError::DType {
                op: OP,
                field: "v",
                expected: k.dtype,
                got: v.dtype,
            });
        }
        same_width(
            OP,
            "q.width",
            qv.width,
            u64::from(n_heads) * u64::from(head_dim),
        )?;
        same_width(OP, "o.width", ov.width, u64::from(qv.width))?;
        same_width(OP, "o.rows", ov.rows, u64::from(qv.rows))?;
        same_width(
            OP,
            "k.width",
            kv.width,
            u64::from(n_kv_heads) * u64::from(head_dim),
        )?;
        same_width(OP, "v.width", vv.width, u64::from(kv.width))?;
        same_width(OP, "v.rows", vv.rows, u64::from(kv.rows))?;
        qv.check(OP, "q", q)?;
        kv.check(OP, "k", k)?;
        vv.check(OP, "v", v)?;
        ov.check(OP, "o", o)?;
        // K and V rows as vec4 when every row starts 4-aligned and the binding holds whole vec4s.
        let aligned = |view: Rows, b: &GpuBuffer| {
            head_dim % 4 == 0
                && view.offset % 4 == 0
                && view.stride % 4 == 0
                && b.buffer.size() % (4 * b.dtype.size()) == 0
        };
        let (k4, v4) = (aligned(kv, k), aligned(vv, v));
        let key = format!(
            "attention/{}{}{}",
            k.dtype.wgsl(),
            if k4 { "/k4" } else { "" },
            if v4 { "/v4" } else { "" }
        );
        let kv_t = k.dtype.wgsl();
        let source = || {
            let [kt, f16] = shaders::kv_vars(k.dtype);
            render(
                shaders::ATTENTION,
                &[
                    kt,
                    f16,
                    ("K_DECL", &kv_binding(2, "K", kv_t, k4)),
                    ("V_DECL", &kv_binding(3, "V", kv_t, v4)),
                ],
            )
        };
        let scale = 1.0 / (head_dim as f32).sqrt();
        // Split the keys when few (query, head) pairs would leave most of a GPU idle (decode): enough chunks
        // of whole 64-key tiles for ~512 workgroups. CPU drivers (one matvec lane per row, the same signal
        // `linear` uses) gain nothing from more workgroups.
        let jobs = u64::from(qv.rows) * u64::from(n_heads);
        let n_kv = u64::from(kv.rows);
        let gpu_like = self.info.matvec_shape.cooperative();
        let (n_split, chunk) = if gpu_like && n_kv > 64 && jobs < 256 {
            let want = n_kv.div_ceil(64).min(512u64.div_ceil(jobs)).max(1);
            let chunk = n_kv.div_ceil(want).div_ceil(64) * 64;
            (n_kv.div_ceil(chunk), chunk)
        } else if !gpu_like && n_kv > 64 && jobs < 256 {
            // CPU drivers: ~256 invocations (four workgroups at least, one per core and more) of ≥ 32 keys.
            let chunk = n_kv.div_ceil(256u64.div_ceil(jobs)).max(32);
            (n_kv.div_ceil(chunk), chunk)
        } else {
            (1, n_kv.max(1))
        };
        let params = [
            qv.rows,
            n_heads,
            n_kv_heads,
            head_dim,
            qv.offset,
            qv.stride,
            kv.offset,
            kv.stride,
            vv.offset,
            vv.stride,
            ov.offset,
            ov.stride,
            kv.rows,
            u32::from(causal_start.is_some()),
            causal_start.unwrap_or(0),
            f(scale),
            n_split as u32,
            chunk as u32,
            0,
            0,
        ];
        // CPU drivers: an invocation per (query, head) pair, or per pair and key chunk when pairs are few
        // (decode), with no barriers; the chunks' partials are merged by `combine` as on GPUs.
        let (pipeline, per_group) = if gpu_like {
            (self.pipeline(&key, "main", source), 1)
        } else {
            (
                self.pipeline(&format!("{key}/lane"), "main_lane", source),
                64,
            )
        };
        let partials = if n_split > 1 {
            Some(self.attention_scratch(jobs * n_split * (u64::from(head_dim) + 2))?)
        } else {
            None
        };
        self.dispatch(
            enc,
            &pipeline,
            &params,
            &[
                (1, &q.buffer),
                (2, &k.buffer),
                (3, &v.buffer),
                (4, &o.buffer),
                (5, partials.as_ref().unwrap_or(&self.dummy)),
            ],
            self.grid(OP, (jobs * n_split).div_ceil(per_group))?,
        );
        let Some(scratch) = partials else {
            return Ok(());
        };
        // `combine` reads only the parameters and the partials and writes O: its derived layout has those.
        let combine = self.pipeline(&format!("{key}/combine"), "combine", source);
        self.dispatch(
            enc,
            &combine,
            &params,
            &[(4, &o.buffer), (5, &scratch)],
            self.grid(OP, jobs)?,
        );
        Ok(())
    }

    /// Copies the rows of `src` (K or V of new tokens) into `cache` rows `pos .. pos + rows`.
    pub fn kv_write(
        &self,
        enc: &mut Enc,
        src: &GpuBuffer,
        sv: Rows,
        cache: &GpuBuffer,
        pos: u32,
    ) -> Result<()> {
        const OP: &str = "kv_write";
        src.expect(OP, "src", DType::F32)?;
        sv.check(OP, "src", src)?;
        if cache.dtype == DType::U32 {
            return Err(EngineError::DType {
                op: OP,
                field: "cache",
                expected: DType::F32,
                got: cache.dtype,
            });
        }
        let start = u64::from(pos) * u64::from(sv.width);
        cache.check_span(OP, "pos", start, u64::from(sv.rows) * u64::from(sv.width))?;
        let key = format!("kv_write/{}", cache.dtype.wgsl());
        let pipeline = self.pipeline(&key, "main", || {
            render(shaders::KV_CACHE, &shaders::kv_vars(cache.dtype))
        });
        let params = [sv.rows, sv.width, sv.offset, sv.stride, pos, 0, 0, 0];
        let total = u64::from(sv.rows) * u64::from(sv.width);
        self.dispatch(
            enc,
            &pipeline,
            &params,
            &[(1, &src.buffer), (2, &cache.buffer)],
            self.grid(OP, total.div_ceil(64))?,
        );
        Ok(())
    }

    fn elementwise(
        &self,
        enc: &mut Enc,
        entry: &'static str,
        n: u64,
        width: u32,
        has_scale: bool,
        bufs: &[(u32, &wgpu::Buffer)],
    ) -> Result<()> {
        let pipeline = self.pipeline(entry, entry, || shaders::ACTIVATION.to_string());
        let params = [u(entry, "n", n)?, width, u32::from(has_scale), 0];
        self.dispatch(
            enc,
            &pipeline,
            &params,
            bufs,
            self.grid(entry, n.div_ceil(256))?,
        );
        Ok(())
    }

    /// Exact-erf GELU on the first `n` elements, in place.
    pub fn gelu(&self, enc: &mut Enc, x: &GpuBuffer, n: u64) -> Result<()> {
        x.expect("gelu", "x", DType::F32)?;
        x.check_span("gelu", "n", 0, n)?;
        self.elementwise(enc, "gelu", n, 1, false, &[(1, &x.buffer)])
    }

    /// `gate = silu(gate) · up` on the first `n` elements (LLaMA MLP), in place in `gate`.
    pub fn silu_mul(&self, enc: &mut Enc, gate: &GpuBuffer, up: &GpuBuffer, n: u64) -> Result<()> {
        gate.expect("silu_mul", "gate", DType::F32)?;
        up.expect("silu_mul", "up", DType::F32)?;
        gate.check_span("silu_mul", "n", 0, n)?;
        up.check_span("silu_mul", "n", 0, n)?;
        self.elementwise(
            enc,
            "silu_mul",
            n,
            1,
            false,
            &[(1, &gate.buffer), (2, &up.buffer)],
        )
    }

    /// Residual `x += ls ⊙ y` over `rows × width` (layer scale per column), or `x += y` without `ls`.
    pub fn add_scaled(
        &self,
        enc: &mut Enc,
        x: &GpuBuffer,
        y: &GpuBuffer,
        ls: Option<&GpuBuffer>,
        rows: u32,
        width: u32,
    ) -> Result<()> {
        const OP: &str = "add_scaled";
        x.expect(OP, "x", DType::F32)?;
        y.expect(OP, "y", DType::F32)?;
        let n = u64::from(rows) * u64::from(width);
        x.check_span(OP, "rows", 0, n)?;
        y.check_span(OP, "rows", 0, n)?;
        if let Some(s) = ls {
            s.expect(OP, "ls", DType::F32)?;
            s.check_span(OP, "width", 0, u64::from(width))?;
        }
        let s = ls.map_or(&self.dummy, |s| &s.buffer);
        self.elementwise(
            enc,
            OP,
            n,
            width.max(1),
            ls.is_some(),
            &[(1, &x.buffer), (2, &y.buffer), (3, s)],
        )
    }

    /// Softmax of each of `rows` rows of `width`, in place.
    pub fn softmax(&self, enc: &mut Enc, x: &GpuBuffer, rows: u32, width: u32) -> Result<()> {
        const OP: &str = "softmax_rows";
        x.expect(OP, "x", DType::F32)?;
        let n = u64::from(rows) * u64::from(width);
        x.check_span(OP, "rows", 0, n)?;
        if width == 0 {
            return Ok(());
        }
        let pipeline = self.pipeline(OP, OP, || shaders::ACTIVATION.to_string());
        let params = [u(OP, "n", n)?, width, 0, 0];
        self.dispatch(
            enc,
            &pipeline,
            &params,
            &[(1, &x.buffer)],
            self.grid(OP, u64::from(rows))?,
        );
        Ok(())
    }

    /// Token embeddings: row `ids[t]` of the packed `token_embd`, dequantized, for each of `n_tok` ids
    /// (read on the GPU). With `image = Some((features, n_img, img_id))` the k-th `img_id` token gets
    /// `features` row k instead (zeros past `n_img`). Ids outside the vocabulary give zero rows.
    pub fn embed(
        &self,
        enc: &mut Enc,
        table: &GpuWeight,
        ids: &GpuBuffer,
        n_tok: u32,
        image: Option<(&GpuBuffer, u32, u32)>,
        out: &GpuBuffer,
    ) -> Result<()> {
        const OP: &str = "embed";
        ids.expect(OP, "ids", DType::U32)?;
        out.expect(OP, "out", DType::F32)?;
        ids.check_span(OP, "n_tok", 0, u64::from(n_tok))?;
        let width = u(OP, "row_len", table.row_len)?;
        out.check_span(OP, "n_tok", 0, u64::from(n_tok) * u64::from(width))?;
        let (img_buf, n_img, img_id) = match image {
            Some((b, n_img, id)) => {
                b.expect(OP, "image", DType::F32)?;
                b.check_span(OP, "n_img", 0, u64::from(n_img) * u64::from(width))?;
                (&b.buffer, n_img, id)
            }
            None => (&self.dummy, 0, 0),
        };
        let splice = u32::from(image.is_some());
        let key = format!("embed_rows/{}", table.ty.ggml().name());
        let rows = self.pipeline(&key, "embed_rows", || {
            render(shaders::EMBED, &[("DEQUANT", &shaders::dequant(table.ty))])
        });
        let groups = self.grid(OP, u64::from(n_tok))?;
        for part in &table.parts {
            let params = [
                n_tok,
                width,
                u(OP, "row_bytes", table.row_bytes)?,
                u(OP, "first_row", part.first_row)?,
                u(OP, "n_rows", part.n_rows)?,
                img_id,
                n_img,
                splice,
            ];
            self.dispatch(
                enc,
                &rows,
                &params,
                &[(1, &part.buffer), (2, &ids.buffer), (3, &out.buffer)],
                groups,
            );
        }
        // The fixup kernel never decodes weights; any type's source works, F32 is as good as any.
        let fixup = self.pipeline("embed_fixup", "embed_fixup", || {
            render(
                shaders::EMBED,
                &[("DEQUANT", &shaders::dequant(crate::QuantType::F32))],
            )
        });
        let params = [
            n_tok,
            width,
            0,
            0,
            u(OP, "vocab", table.rows)?,
            img_id,
            n_img,
            splice,
        ];
        self.dispatch(
            enc,
            &fixup,
            &params,
            &[(2, &ids.buffer), (3, &out.buffer), (4, img_buf)],
            groups,
        );
        Ok(())
    }

    /// im2col for the patch embedding: CHW pixels `[3, S, S]` → `[(S/p)², 3p²]` rows in (channel, y, x) order.
    pub fn im2col(
        &self,
        enc: &mut Enc,
        pixels: &GpuBuffer,
        image_size: u32,
        patch: u32,
        out: &GpuBuffer,
    ) -> Result<()> {
        const OP: &str = "im2col";
        pixels.expect(OP, "pixels", DType::F32)?;
        out.expect(OP, "out", DType::F32)?;
        if patch == 0 || image_size % patch != 0 {
            return Err(invalid(
                OP,
                "image_size",
                image_size,
                format!("must be a multiple of patch = {patch}"),
            ));
        }
        let s = u64::from(image_size);
        pixels.check_span(OP, "image_size", 0, 3 * s * s)?;
        out.check_span(OP, "out", 0, 3 * s * s)?;
        let pipeline = self.pipeline(OP, OP, || shaders::VISION.to_string());
        let n = u(OP, "image_size", 3 * s * s)?;
        let params = [image_size, patch, image_size / patch, 0, n, 0, 0, 0];
        self.dispatch(
            enc,
            &pipeline,
            &params,
            &[(1, &pixels.buffer), (2, &out.buffer)],
            self.grid(OP, u64::from(n).div_ceil(256))?,
        );
        Ok(())
    }

    /// `out = [cls; patches] + pos`: prepends the class embedding to `n_patches` rows of width `c` and adds the
    /// `(n_patches + 1) × c` position embedding.
    #[allow(clippy::too_many_arguments)]
    pub fn cls_pos(
        &self,
        enc: &mut Enc,
        patches: &GpuBuffer,
        cls: &GpuBuffer,
        pos: &GpuBuffer,
        n_patches: u32,
        c: u32,
        out: &GpuBuffer,
    ) -> Result<()> {
        const OP: &str = "cls_pos";
        for (field, b) in [
            ("patches", patches),
            ("cls", cls),
            ("pos", pos),
            ("out", out),
        ] {
            b.expect(OP, field, DType::F32)?;
        }
        let n = (u64::from(n_patches) + 1) * u64::from(c);
        patches.check_span(OP, "patches", 0, u64::from(n_patches) * u64::from(c))?;
        cls.check_span(OP, "c", 0, u64::from(c))?;
        pos.check_span(OP, "pos", 0, n)?;
        out.check_span(OP, "out", 0, n)?;
        let pipeline = self.pipeline(OP, OP, || shaders::VISION.to_string());
        let params = [0, 0, 0, c, u(OP, "n_patches", n)?, 0, 0, 0];
        self.dispatch(
            enc,
            &pipeline,
            &params,
            &[
                (1, &patches.buffer),
                (2, &out.buffer),
                (3, &cls.buffer),
                (4, &pos.buffer),
            ],
            self.grid(OP, n.div_ceil(256))?,
        );
        Ok(())
    }

    /// Upstream pixel shuffle v1 on a `grid × grid` token grid of width `c` that starts after `skip` rows
    /// (1 to drop CLS): writes `(grid/2)²` tokens of width `4c`.
    pub fn pixel_shuffle_v1(
        &self,
        enc: &mut Enc,
        x: &GpuBuffer,
        grid: u32,
        c: u32,
        skip: u32,
        out: &GpuBuffer,
    ) -> Result<()> {
        const OP: &str = "pixel_shuffle_v1";
        x.expect(OP, "x", DType::F32)?;
        out.expect(OP, "out", DType::F32)?;
        if grid % 2 != 0 {
            return Err(invalid(OP, "grid", grid, "must be even"));
        }
        let cells = u64::from(grid) * u64::from(grid) * u64::from(c);
        x.check_span(OP, "x", u64::from(skip) * u64::from(c), cells)?;
        out.check_span(OP, "out", 0, cells)?;
        let pipeline = self.pipeline(OP, "main", || shaders::PIXEL_SHUFFLE.to_string());
        let params = [grid, c, skip, u(OP, "grid", cells)?];
        self.dispatch(
            enc,
            &pipeline,
            &params,
            &[(1, &x.buffer), (2, &out.buffer)],
            self.grid(OP, cells.div_ceil(256))?,
        );
        Ok(())
    }

    /// Greedy pick: `out[out_index]` = index of the largest of `logits[offset .. offset + n]` (first on ties).
    pub fn argmax(
        &self,
        enc: &mut Enc,
        logits: &GpuBuffer,
        offset: u32,
        n: u32,
        out: &GpuBuffer,
        out_index: u32,
    ) -> Result<()> {
        self.sampling(enc, "argmax", logits, offset, n, 1, out, out_index)
    }

    /// The `k` best `(index, value bits)` pairs of `logits[offset .. offset + n]`, best first, into
    /// `out[out_index ..  out_index + 2k]` (index `u32::MAX` when fewer than k exist).
    #[allow(clippy::too_many_arguments)]
    pub fn top_n(
        &self,
        enc: &mut Enc,
        logits: &GpuBuffer,
        offset: u32,
        n: u32,
        k: u32,
        out: &GpuBuffer,
        out_index: u32,
    ) -> Result<()> {
        self.sampling(enc, "top_n", logits, offset, n, k, out, out_index)
    }

    #[allow(clippy::too_many_arguments)]
    fn sampling(
        &self,
        enc: &mut Enc,
        op: &'static str,
        logits: &GpuBuffer,
        offset: u32,
        n: u32,
        k: u32,
        out: &GpuBuffer,
        out_index: u32,
    ) -> Result<()> {
        logits.expect(op, "logits", DType::F32)?;
        out.expect(op, "out", DType::U32)?;
        logits.check_span(op, "n", u64::from(offset), u64::from(n))?;
        let slots = if op == "argmax" { 1 } else { 2 * u64::from(k) };
        out.check_span(op, "out_index", u64::from(out_index), slots)?;
        if k > 1024 {
            return Err(invalid(
                op,
                "k",
                k,
                "must be ≤ 1024 (one pass over the logits per pick)",
            ));
        }
        let pipeline = self.pipeline(op, op, || shaders::SAMPLING.to_string());
        let params = [n, offset, k, out_index];
        self.dispatch(
            enc,
            &pipeline,
            &params,
            &[(1, &logits.buffer), (2, &out.buffer)],
            [1, 1, 1],
        );
        Ok(())
    }
}

/// The uniform block shared by matvec_quant.wgsl and matmul_quant.wgsl for one part of a weight.
fn linear_params(
    op: &'static str,
    w: &GpuWeight,
    part: &crate::weight::WeightPart,
    xv: Rows,
    yv: Rows,
    has_bias: bool,
) -> Result<[u32; 12]> {
    Ok([
        u(op, "part.n_rows", part.n_rows)?,
        u(op, "row_len", w.row_len)?,
        u(op, "row_bytes", w.row_bytes)?,
        u(op, "part.first_row", part.first_row)?,
        xv.offset,
        xv.stride,
        yv.offset,
        yv.stride,
        u32::from(has_bias),
        xv.rows,
        0,
        0,
    ])
}
