// ViT input glue: im2col for the patch-embedding matmul, and CLS prepend + position-embedding add.
//
// The conv weight is stored as rows of 3·p·p values in (channel, y, x) order, so im2col emits each patch in
// that order and the patch embedding becomes an ordinary [n_patches, 3p²] · Wᵀ matmul on the quantized kernel.

struct Params {
    image_size: u32,
    psize: u32,
    grid: u32,     // image_size / patch
    width: u32,    // C for cls_pos
    n: u32,        // total outputs
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@group(0) @binding(3) var<storage, read> CLS: array<f32>;
@group(0) @binding(4) var<storage, read> POS: array<f32>;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

// A = pixels [3, S, S] (CHW) → Y = [grid², 3·p·p].
@compute @workgroup_size(256)
fn im2col(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= P.n) {
        return;
    }
    let pp = P.psize * P.psize;
    let k = 3u * pp;
    let patch_idx = i / k;
    let r = i % k;
    let ch = r / pp;
    let y = (r % pp) / P.psize;
    let x = r % P.psize;
    let py = patch_idx / P.grid;
    let px = patch_idx % P.grid;
    Y[i] = A[(ch * P.image_size + py * P.psize + y) * P.image_size + px * P.psize + x];
}

// A = patch embeddings [grid², C] → Y = [1 + grid², C]: row 0 = CLS, then the patches, plus POS rows.
@compute @workgroup_size(256)
fn cls_pos(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= P.n) {
        return;
    }
    let row = i / P.width;
    let c = i % P.width;
    var v: f32;
    if (row == 0u) {
        v = CLS[c];
    } else {
        v = A[i - P.width];
    }
    Y[i] = v + POS[i];
}
