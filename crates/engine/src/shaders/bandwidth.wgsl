// Streaming read: the memory-bandwidth ceiling a plain WGSL kernel reaches on this adapter, the yardstick a
// decode step (bound by reading its weights once) is measured against in `meddr bench`.
//
// Each lane walks the buffer with a grid stride in 16-byte loads (the widest WGSL load), so consecutive lanes
// read consecutive words and every byte is read exactly once per dispatch. The XOR of everything read is
// compared with a value zero-filled data never produces, so no compiler can drop the loads as dead code, and
// the store that keeps them live never happens.

struct Params {
    n4: u32,      // vec4 words in the buffer
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> sink: array<u32>;

@compute @workgroup_size(256)
fn read_stream(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let lanes = nwg.x * nwg.y * 256u;
    var i = gid.x + gid.y * nwg.x * 256u;
    var acc = vec4<u32>(0u);
    loop {
        if (i >= P.n4) {
            break;
        }
        acc = acc ^ src[i];
        i = i + lanes;
    }
    let r = acc.x ^ acc.y ^ acc.z ^ acc.w;
    if (r == 0x9e3779b9u) {
        sink[0] = r;
    }
}
