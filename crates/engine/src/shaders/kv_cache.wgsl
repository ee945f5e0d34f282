{{ENABLE_F16}}
// Writes rows of K or V (f32 activations, a strided view) into a layer's cache at positions pos .. pos + n.
// The cache element type is spliced in: f16 halves the cache when the device has shader-f16.

struct Params {
    n_tok: u32,
    width: u32,
    src_offset: u32,
    src_stride: u32,
    pos: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> S: array<f32>;
@group(0) @binding(2) var<storage, read_write> C: array<{{KV_T}}>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    if (idx >= P.n_tok * P.width) {
        return;
    }
    let t = idx / P.width;
    let c = idx % P.width;
    C[(P.pos + t) * P.width + c] = {{KV_T}}(S[P.src_offset + t * P.src_stride + c]);
}
