//! timm `vision_transformer.py` (`VisionTransformer`, class token, learned absolute position embedding that
//! includes the class token, pre-norm blocks, `global_pool='token'`, `fc_norm` = Identity):
//! patch_embed (conv P×P/P) → cat cls → + pos_embed → blocks → norm (`forward_features` ends here: all
//! tokens, CLS first) → token 0 → head.

use burn_tensor::activation::{gelu, softmax};
use burn_tensor::Tensor;

use super::layers::{Conv2d, ConvSpec, LayerNorm, Linear};
use crate::error::Result;
use crate::weights::WeightStore;

/// Width, depth, heads and patch size (timm's registry: vit_tiny_patch16_224 = 192, 12, 3, 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VitSpec {
    pub embed: usize,
    pub depth: usize,
    pub heads: usize,
    pub patch: usize,
    /// The image side the position embedding was made for (`_224`).
    pub img: usize,
}

/// timm ViT LayerNorm: `partial(nn.LayerNorm, eps=1e-6)`.
const LN_EPS: f64 = 1e-6;
/// timm's default `mlp_ratio`.
const MLP_RATIO: usize = 4;

impl VitSpec {
    pub fn num_tokens(&self) -> usize {
        (self.img / self.patch).pow(2) + 1
    }
}

struct VitBlock {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

pub struct Vit {
    spec: VitSpec,
    patch_embed: Conv2d,
    cls_token: Tensor<3>,
    pos_embed: Tensor<3>,
    blocks: Vec<VitBlock>,
    norm: LayerNorm,
    head: Linear,
}

impl Vit {
    pub fn load(w: &mut WeightStore, spec: VitSpec, num_classes: usize) -> Result<Vit> {
        let d = spec.embed;
        let patch_embed = Conv2d::load(
            w,
            "patch_embed.proj",
            ConvSpec::new(3, d, spec.patch, spec.patch)
                .padding(0)
                .with_bias(),
        )?;
        let cls_token = w.tensor("cls_token", [1, 1, d])?;
        let pos_embed = w.tensor("pos_embed", [1, spec.num_tokens(), d])?;
        let mut blocks = Vec::new();
        for i in 0..spec.depth {
            let p = format!("blocks.{i}");
            blocks.push(VitBlock {
                norm1: LayerNorm::load(w, &format!("{p}.norm1"), d, LN_EPS)?,
                qkv: Linear::load(w, &format!("{p}.attn.qkv"), d, 3 * d)?,
                proj: Linear::load(w, &format!("{p}.attn.proj"), d, d)?,
                norm2: LayerNorm::load(w, &format!("{p}.norm2"), d, LN_EPS)?,
                fc1: Linear::load(w, &format!("{p}.mlp.fc1"), d, MLP_RATIO * d)?,
                fc2: Linear::load(w, &format!("{p}.mlp.fc2"), MLP_RATIO * d, d)?,
            });
        }
        let norm = LayerNorm::load(w, "norm", d, LN_EPS)?;
        let head = Linear::load(w, "head", d, num_classes)?;
        Ok(Vit {
            spec,
            patch_embed,
            cls_token,
            pos_embed,
            blocks,
            norm,
            head,
        })
    }

    /// `[B, 3, S, S]` → `[B, N, D]` tokens after the final LayerNorm (N = (S/P)² + 1, CLS first).
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<3> {
        let (d, h) = (self.spec.embed, self.spec.heads);
        let hd = d / h;
        let x = self.patch_embed.forward(x);
        let [b, _, gh, gw] = x.dims();
        // NCHW → [B, HW, C]: patches in row-major order (timm `PatchEmbed` flatten(2).transpose(1, 2)).
        let x = x.reshape([b, d, gh * gw]).swap_dims(1, 2);
        let cls = self.cls_token.clone().expand([b, 1, d]);
        let mut x = Tensor::cat(vec![cls, x], 1) + self.pos_embed.clone();
        let n = gh * gw + 1;
        let scale = (hd as f64).powf(-0.5);
        for blk in &self.blocks {
            let y = blk.norm1.forward(x.clone());
            // timm `Attention`: qkv.reshape(B, N, 3, heads, hd).permute(2, 0, 3, 1, 4).
            let qkv = blk.qkv.forward_tokens(y).reshape([b, n, 3, h, hd]);
            let part = |i: usize| {
                qkv.clone()
                    .slice([0..b, 0..n, i..i + 1, 0..h, 0..hd])
                    .reshape([b, n, h, hd])
                    .swap_dims(1, 2)
            };
            let (q, k, v) = (part(0), part(1), part(2));
            // F.scaled_dot_product_attention: softmax(q kᵀ · hd^−½) v.
            let attn = softmax(q.matmul(k.swap_dims(2, 3)).mul_scalar(scale), 3);
            let o = attn.matmul(v).swap_dims(1, 2).reshape([b, n, d]);
            x = x + blk.proj.forward_tokens(o);
            let y = blk.norm2.forward(x.clone());
            // nn.GELU(): the exact erf form.
            x = x + blk.fc2.forward_tokens(gelu(blk.fc1.forward_tokens(y)));
        }
        self.norm.forward(x)
    }

    /// `forward_head` with `global_pool='token'`: token 0 → head. Returns (logits, pre-logits).
    pub fn forward_head(&self, features: Tensor<3>) -> (Tensor<2>, Tensor<2>) {
        let [b, _, d] = features.dims();
        let cls = features.slice([0..b, 0..1, 0..d]).reshape([b, d]);
        (self.head.forward(cls.clone()), cls)
    }
}
