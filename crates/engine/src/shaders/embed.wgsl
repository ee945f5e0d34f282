// Token embedding lookup from the packed `token_embd`, plus the image-token splice.
//
// Token ids live on the GPU (decode feeds the argmax output straight back), so nothing is read back.
// `embed_rows` runs once per weight part and fills the rows whose id falls in that part; `embed_fixup` then
// replaces image-context rows by the projector outputs in order (the k-th image token gets feature row k,
// counted on the GPU) and zeroes rows whose id is out of the vocabulary, so every output row is defined.

struct Params {
    n_tok: u32,
    width: u32,
    row_bytes: u32,
    first_row: u32,
    n_rows: u32,     // rows in this part (embed_rows) / vocabulary size (embed_fixup)
    img_id: u32,
    n_img: u32,      // image feature rows available
    splice: u32,     // 1: image-context ids take image features
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> IDS: array<u32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(4) var<storage, read> IMG: array<f32>;

{{DEQUANT}}

@compute @workgroup_size(64)
fn embed_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let t = wid.x + wid.y * nwg.x;
    if (t >= P.n_tok) {
        return;
    }
    let id = IDS[t];
    if ((P.splice != 0u && id == P.img_id) || id < P.first_row || id - P.first_row >= P.n_rows) {
        return;
    }
    let rb = (id - P.first_row) * P.row_bytes;
    for (var e = lid * 4u; e < P.width; e += 256u) {
        let v = dq4(rb, e);
        let o = t * P.width + e;
        Y[o] = v.x; Y[o + 1u] = v.y; Y[o + 2u] = v.z; Y[o + 3u] = v.w;
    }
}

var<workgroup> cnt: array<u32, 64>;

@compute @workgroup_size(64)
fn embed_fixup(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let t = wid.x + wid.y * nwg.x;
    if (t >= P.n_tok) {
        return;
    }
    // Rank of this token among the image-context tokens (only meaningful when splicing).
    var c = 0u;
    if (P.splice != 0u) {
        for (var j = lid; j < t; j += 64u) {
            c += select(0u, 1u, IDS[j] == P.img_id);
        }
    }
    cnt[lid] = c;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (lid < s) {
            cnt[lid] += cnt[lid + s];
        }
        workgroupBarrier();
    }
    let rank = cnt[0];
    let id = IDS[t];
    let o = t * P.width;
    if (P.splice != 0u && id == P.img_id) {
        for (var e = lid; e < P.width; e += 64u) {
            Y[o + e] = select(0.0, IMG[rank * P.width + e], rank < P.n_img);
        }
    } else if (id >= P.n_rows) {
        for (var e = lid; e < P.width; e += 64u) {
            Y[o + e] = 0.0;
        }
    }
}
