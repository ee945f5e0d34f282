// RoPE on adjacent pairs (llama.cpp "normal" mode), in place, one invocation per pair.
//
// cos/sin come from a table computed once on the CPU in f64 (`RopeTable`): GPU sin/cos are only specified to
// ~2⁻¹¹ absolute on [−π, π] and positions reach thousands of radians, so computing them here would drift
// from the reference.

struct Params {
    n_tok: u32,
    n_heads: u32,
    half_dim: u32,   // head_dim / 2
    x_offset: u32,
    x_stride: u32,
    pos_start: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(2) var<storage, read> T: array<vec2<f32>>; // [pos][half_dim] (cos, sin)

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    let per_tok = P.n_heads * P.half_dim;
    if (idx >= P.n_tok * per_tok) {
        return;
    }
    let t = idx / per_tok;
    let rem = idx % per_tok;
    let h = rem / P.half_dim;
    let i = rem % P.half_dim;
    let cs = T[(P.pos_start + t) * P.half_dim + i];
    let b = P.x_offset + t * P.x_stride + h * 2u * P.half_dim + 2u * i;
    let x0 = X[b];
    let x1 = X[b + 1u];
    X[b] = x0 * cs.x - x1 * cs.y;
    X[b + 1u] = x0 * cs.y + x1 * cs.x;
}
