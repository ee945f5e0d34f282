// Upstream InternVL pixel_shuffle(0.5), version 1 (no final permute), which leaves the token order transposed:
// output token t = c2·(g/2) + r2 is [g[2r2, 2c2], g[2r2, 2c2+1], g[2r2+1, 2c2], g[2r2+1, 2c2+1]].
// `skip` rows at the start of the input (the CLS token) are ignored.

struct Params {
    grid: u32,
    width: u32,  // C
    skip: u32,
    n: u32,      // (grid/2)² · 4C
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= P.n) {
        return;
    }
    let half = P.grid / 2u;
    let w4 = 4u * P.width;
    let t = i / w4;
    let r = i % w4;
    let q = r / P.width;     // which of the 4 neighbours
    let c = r % P.width;
    let c2 = t / half;
    let r2 = t % half;
    let row = 2u * r2 + (q >> 1u);
    let col = 2u * c2 + (q & 1u);
    Y[i] = X[(P.skip + row * P.grid + col) * P.width + c];
}
