//! timm `efficientnet.py` (`_gen_efficientnet`, the PyTorch-native B0…B4, SiLU, BatchNorm eps 1e-5):
//! conv_stem 3×3/2 → bn1 (BatchNormAct, SiLU) → blocks (one depthwise-separable stage, six inverted-residual
//! stages, squeeze-excite in every block) → conv_head 1×1 → bn2 (BatchNormAct, SiLU) (`forward_features` ends
//! here) → avg pool → classifier. Widths and depths come from timm's scaling rules
//! (`round_channels`, `_scale_stage_depth` with `ceil`), not from a table of shapes.

use burn_tensor::activation::{sigmoid, silu};
use burn_tensor::Tensor;

use super::layers::{avg_pool_head, global_avg_pool, Act, BatchNorm, Conv2d, ConvSpec, Linear};
use crate::error::Result;
use crate::weights::WeightStore;

/// `efficientnet_bN`'s channel and depth multipliers (timm's registry).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EfficientNetSpec {
    pub channel_multiplier: f64,
    pub depth_multiplier: f64,
}

/// timm `_gen_efficientnet`'s `arch_def`: block type (`ds`/`ir`), repeats, kernel, stride, expansion,
/// output channels; `se0.25` on every stage.
const STAGES: [(bool, usize, usize, usize, usize, usize); 7] = [
    (false, 1, 3, 1, 1, 16),
    (true, 2, 3, 2, 6, 24),
    (true, 2, 5, 2, 6, 40),
    (true, 3, 3, 2, 6, 80),
    (true, 3, 5, 1, 6, 112),
    (true, 4, 5, 2, 6, 192),
    (true, 1, 3, 1, 6, 320),
];
const SE_RATIO: f64 = 0.25;

/// timm `make_divisible(v, divisor=8, min_value=None, round_limit=0.9)`.
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut new_v =
        (((v + d / 2.0) as i64 / divisor as i64) * divisor as i64).max(divisor as i64) as usize;
    if (new_v as f64) < 0.9 * v {
        new_v += divisor;
    }
    new_v
}

/// Python's `round()` (half to even) for the positive values used here.
fn py_round(x: f64) -> usize {
    let f = x.floor();
    let diff = x - f;
    let r = if diff > 0.5 || (diff == 0.5 && (f as i64) % 2 != 0) {
        f + 1.0
    } else {
        f
    };
    r as usize
}

impl EfficientNetSpec {
    /// timm `round_channels(c, multiplier)`.
    pub fn round_chs(&self, c: usize) -> usize {
        make_divisible(c as f64 * self.channel_multiplier, 8)
    }

    /// `_scale_stage_depth(..., depth_trunc='ceil')` for a one-block-type stage.
    pub fn repeats(&self, r: usize) -> usize {
        ((r as f64 * self.depth_multiplier).ceil() as usize).max(1)
    }

    pub fn num_features(&self) -> usize {
        self.round_chs(1280)
    }
}

struct SqueezeExcite {
    reduce: Conv2d,
    expand: Conv2d,
}

impl SqueezeExcite {
    fn load(w: &mut WeightStore, p: &str, ch: usize, rd_ratio: f64) -> Result<SqueezeExcite> {
        // timm `SqueezeExcite`: rd_channels = round(in_chs · rd_ratio).
        let rd = py_round(ch as f64 * rd_ratio).max(1);
        Ok(SqueezeExcite {
            reduce: Conv2d::load(
                w,
                &format!("{p}.conv_reduce"),
                ConvSpec::new(ch, rd, 1, 1).with_bias(),
            )?,
            expand: Conv2d::load(
                w,
                &format!("{p}.conv_expand"),
                ConvSpec::new(rd, ch, 1, 1).with_bias(),
            )?,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, _, _] = x.dims();
        let s = global_avg_pool(x.clone()).reshape([b, c, 1, 1]);
        let s = self.expand.forward(silu(self.reduce.forward(s)));
        x * sigmoid(s)
    }
}

enum Block {
    /// `DepthwiseSeparableConv`: conv_dw → bn1 (SiLU) → se → conv_pw → bn2 (no act).
    DepthwiseSeparable {
        conv_dw: Conv2d,
        bn1: BatchNorm,
        se: SqueezeExcite,
        conv_pw: Conv2d,
        bn2: BatchNorm,
        skip: bool,
    },
    /// `InvertedResidual`: conv_pw → bn1 (SiLU) → conv_dw → bn2 (SiLU) → se → conv_pwl → bn3 (no act).
    InvertedResidual {
        conv_pw: Conv2d,
        bn1: BatchNorm,
        conv_dw: Conv2d,
        bn2: BatchNorm,
        se: SqueezeExcite,
        conv_pwl: Conv2d,
        bn3: BatchNorm,
        skip: bool,
    },
}

impl Block {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Block::DepthwiseSeparable {
                conv_dw,
                bn1,
                se,
                conv_pw,
                bn2,
                skip,
            } => {
                let y = bn1.forward(conv_dw.forward(x.clone()));
                let y = bn2.forward(conv_pw.forward(se.forward(y)));
                if *skip {
                    y + x
                } else {
                    y
                }
            }
            Block::InvertedResidual {
                conv_pw,
                bn1,
                conv_dw,
                bn2,
                se,
                conv_pwl,
                bn3,
                skip,
            } => {
                let y = bn1.forward(conv_pw.forward(x.clone()));
                let y = bn2.forward(conv_dw.forward(y));
                let y = bn3.forward(conv_pwl.forward(se.forward(y)));
                if *skip {
                    y + x
                } else {
                    y
                }
            }
        }
    }
}

pub struct EfficientNet {
    conv_stem: Conv2d,
    bn1: BatchNorm,
    blocks: Vec<Block>,
    conv_head: Conv2d,
    bn2: BatchNorm,
    classifier: Linear,
}

impl EfficientNet {
    pub fn load(
        w: &mut WeightStore,
        spec: EfficientNetSpec,
        num_classes: usize,
    ) -> Result<EfficientNet> {
        let stem = spec.round_chs(32);
        let conv_stem = Conv2d::load(w, "conv_stem", ConvSpec::new(3, stem, 3, 2))?;
        let bn1 = BatchNorm::load(w, "bn1", stem, Act::Silu)?;
        let mut in_ch = stem;
        let mut blocks = Vec::new();
        for (s, &(ir, r, k, stride0, exp, c)) in STAGES.iter().enumerate() {
            let out = spec.round_chs(c);
            for i in 0..spec.repeats(r) {
                let p = format!("blocks.{s}.{i}");
                let stride = if i == 0 { stride0 } else { 1 };
                let skip = stride == 1 && in_ch == out;
                let block = if ir {
                    let mid = make_divisible(in_ch as f64 * exp as f64, 8);
                    Block::InvertedResidual {
                        conv_pw: Conv2d::load(
                            w,
                            &format!("{p}.conv_pw"),
                            ConvSpec::new(in_ch, mid, 1, 1),
                        )?,
                        bn1: BatchNorm::load(w, &format!("{p}.bn1"), mid, Act::Silu)?,
                        conv_dw: Conv2d::load(
                            w,
                            &format!("{p}.conv_dw"),
                            ConvSpec::new(mid, mid, k, stride).depthwise(),
                        )?,
                        bn2: BatchNorm::load(w, &format!("{p}.bn2"), mid, Act::Silu)?,
                        // se_from_exp is off: the ratio is relative to the block input (0.25 / exp_ratio of mid).
                        se: SqueezeExcite::load(w, &format!("{p}.se"), mid, SE_RATIO / exp as f64)?,
                        conv_pwl: Conv2d::load(
                            w,
                            &format!("{p}.conv_pwl"),
                            ConvSpec::new(mid, out, 1, 1),
                        )?,
                        bn3: BatchNorm::load(w, &format!("{p}.bn3"), out, Act::None)?,
                        skip,
                    }
                } else {
                    Block::DepthwiseSeparable {
                        conv_dw: Conv2d::load(
                            w,
                            &format!("{p}.conv_dw"),
                            ConvSpec::new(in_ch, in_ch, k, stride).depthwise(),
                        )?,
                        bn1: BatchNorm::load(w, &format!("{p}.bn1"), in_ch, Act::Silu)?,
                        se: SqueezeExcite::load(
                            w,
                            &format!("{p}.se"),
                            in_ch,
                            SE_RATIO / exp as f64,
                        )?,
                        conv_pw: Conv2d::load(
                            w,
                            &format!("{p}.conv_pw"),
                            ConvSpec::new(in_ch, out, 1, 1),
                        )?,
                        bn2: BatchNorm::load(w, &format!("{p}.bn2"), out, Act::None)?,
                        skip,
                    }
                };
                blocks.push(block);
                in_ch = out;
            }
        }
        let nf = spec.num_features();
        let conv_head = Conv2d::load(w, "conv_head", ConvSpec::new(in_ch, nf, 1, 1))?;
        let bn2 = BatchNorm::load(w, "bn2", nf, Act::Silu)?;
        let classifier = Linear::load(w, "classifier", nf, num_classes)?;
        Ok(EfficientNet {
            conv_stem,
            bn1,
            blocks,
            conv_head,
            bn2,
            classifier,
        })
    }

    /// `forward_features`: `[B, 3, S, S]` → `[B, F, S/32, S/32]`, ending with bn2 + SiLU.
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = self.bn1.forward(self.conv_stem.forward(x));
        for b in &self.blocks {
            x = b.forward(x);
        }
        self.bn2.forward(self.conv_head.forward(x))
    }

    pub fn forward_head(&self, features: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        avg_pool_head(features, &self.classifier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_rules_match_timm() {
        // timm efficientnet_b0…b4: stem, head and the stage depths it builds.
        let cases = [
            (1.0, 1.0, 32, 1280, [1, 2, 2, 3, 3, 4, 1]),
            (1.0, 1.1, 32, 1280, [2, 3, 3, 4, 4, 5, 2]),
            (1.1, 1.2, 32, 1408, [2, 3, 3, 4, 4, 5, 2]),
            (1.2, 1.4, 40, 1536, [2, 3, 3, 5, 5, 6, 2]),
            (1.4, 1.8, 48, 1792, [2, 4, 4, 6, 6, 8, 2]),
        ];
        for (cm, dm, stem, head, depths) in cases {
            let s = EfficientNetSpec {
                channel_multiplier: cm,
                depth_multiplier: dm,
            };
            assert_eq!(s.round_chs(32), stem, "stem of ({cm}, {dm})");
            assert_eq!(s.num_features(), head, "head of ({cm}, {dm})");
            let got: Vec<usize> = STAGES.iter().map(|st| s.repeats(st.1)).collect();
            assert_eq!(got, depths, "depths of ({cm}, {dm})");
        }
    }
}
