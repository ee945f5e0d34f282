//! Rough kernel timings on whatever adapter wgpu picks (lavapipe here): `cargo run -p meddr-engine --example
//! kernel_timing --release`. Weights are random packed bytes (timing does not depend on their values).

use std::time::Instant;

use meddr_engine::{
    AttnShape, ContextOptions, DType, GpuContext, GpuWeight, QuantType, Recorder, Rows, WeightDesc,
};

fn time(c: &GpuContext, what: &str, reps: u32, f: impl Fn(&mut Recorder)) {
    let mut enc = c.encoder();
    f(&mut enc); // warm-up: pipeline compilation
    c.submit(enc);
    c.poll_wait();
    let t = Instant::now();
    for _ in 0..reps {
        let mut enc = c.encoder();
        f(&mut enc);
        c.submit(enc);
    }
    c.poll_wait();
    println!(
        "{what}: {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3 / f64::from(reps)
    );
}

fn main() -> meddr_engine::Result<()> {
    let c = GpuContext::new_blocking(ContextOptions::default())?;
    println!("{}", c.info);
    let (rows, k) = (2048u64, 2048u64);
    for ty in [
        QuantType::F16,
        QuantType::Q8_0,
        QuantType::Q4_K,
        QuantType::Q6_K,
    ] {
        let desc = WeightDesc {
            ty,
            rows,
            row_len: k,
        };
        let n = desc.total_bytes()? as usize;
        // Bytes that decode to finite values: small f16 scales everywhere.
        let bytes: Vec<u8> = (0..n)
            .map(|i| if i % 2 == 1 { 0x20 } else { (i * 7) as u8 })
            .collect();
        let w = GpuWeight::upload(&c, desc, "w", &bytes)?;
        let x = c.zeros(DType::F32, 128 * k, "x")?;
        let y = c.zeros(DType::F32, 128 * rows, "y")?;
        time(&c, &format!("matvec {ty:?} {rows}x{k}"), 10, |e| {
            c.matvec(
                e,
                &w,
                &x,
                Rows::dense(1, k as u32),
                None,
                &y,
                Rows::dense(1, rows as u32),
            )
            .unwrap()
        });
        time(&c, &format!("matmul {ty:?} 128 tok x {rows}x{k}"), 3, |e| {
            c.matmul(
                e,
                &w,
                &x,
                Rows::dense(128, k as u32),
                None,
                &y,
                Rows::dense(128, rows as u32),
            )
            .unwrap()
        });
    }
    let (n, heads, hd) = (257u32, 4u32, 64u32);
    let q = c.zeros(DType::F32, u64::from(n * heads * hd), "q")?;
    let o = c.zeros(DType::F32, u64::from(n * heads * hd), "o")?;
    let v = Rows::dense(n, heads * hd);
    let shape = AttnShape {
        n_heads: heads,
        n_kv_heads: heads,
        head_dim: hd,
        causal_start: None,
    };
    time(
        &c,
        &format!("attention {n} tok, {heads} heads x {hd}"),
        3,
        |e| c.attention(e, shape, &q, v, &q, v, &q, v, &o, v).unwrap(),
    );
    Ok(())
}
