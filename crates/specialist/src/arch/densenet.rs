//! timm `densenet.py` (`DenseNet`, memory-efficient off, no anti-aliasing): features.conv0 7×7/2 → norm0
//! (BatchNormAct, ReLU) → pool0 max 3×3/2 → dense blocks and transitions → norm5 (BatchNormAct **with ReLU**:
//! timm folds the final ReLU into `features`, torchvision applies it outside) → avg pool → classifier.
//! timm's DenseNet has no `forward_head`; upstream calls `global_pool` + `classifier` itself.

use burn_tensor::module::{avg_pool2d, max_pool2d};
use burn_tensor::ops::{AvgPoolOptions, MaxPoolOptions};
use burn_tensor::Tensor;

use super::layers::{avg_pool_head, Act, BatchNorm, Conv2d, ConvSpec, Linear};
use crate::error::Result;
use crate::weights::WeightStore;

/// Growth rate, layers per block and stem width (timm's registry: densenet121 = 32, (6, 12, 24, 16), 64).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenseNetSpec {
    pub growth: usize,
    pub blocks: [usize; 4],
    pub stem: usize,
}

/// timm's `bn_size`: the bottleneck is `bn_size · growth` wide.
const BN_SIZE: usize = 4;

impl DenseNetSpec {
    pub fn num_features(&self) -> usize {
        let mut ch = self.stem;
        for (i, &n) in self.blocks.iter().enumerate() {
            ch += n * self.growth;
            if i < 3 {
                ch /= 2;
            }
        }
        ch
    }
}

struct DenseLayer {
    norm1: BatchNorm,
    conv1: Conv2d,
    norm2: BatchNorm,
    conv2: Conv2d,
}

struct Transition {
    norm: BatchNorm,
    conv: Conv2d,
}

struct Block {
    layers: Vec<DenseLayer>,
    transition: Option<Transition>,
}

pub struct DenseNet {
    conv0: Conv2d,
    norm0: BatchNorm,
    blocks: Vec<Block>,
    norm5: BatchNorm,
    classifier: Linear,
}

impl DenseNet {
    pub fn load(w: &mut WeightStore, spec: DenseNetSpec, num_classes: usize) -> Result<DenseNet> {
        let conv0 = Conv2d::load(w, "features.conv0", ConvSpec::new(3, spec.stem, 7, 2))?;
        let norm0 = BatchNorm::load(w, "features.norm0", spec.stem, Act::Relu)?;
        let mut ch = spec.stem;
        let mut blocks = Vec::new();
        let mid = BN_SIZE * spec.growth;
        for (b, &n) in spec.blocks.iter().enumerate() {
            let mut layers = Vec::new();
            for l in 0..n {
                let p = format!("features.denseblock{}.denselayer{}", b + 1, l + 1);
                let in_ch = ch + l * spec.growth;
                layers.push(DenseLayer {
                    norm1: BatchNorm::load(w, &format!("{p}.norm1"), in_ch, Act::Relu)?,
                    conv1: Conv2d::load(w, &format!("{p}.conv1"), ConvSpec::new(in_ch, mid, 1, 1))?,
                    norm2: BatchNorm::load(w, &format!("{p}.norm2"), mid, Act::Relu)?,
                    conv2: Conv2d::load(
                        w,
                        &format!("{p}.conv2"),
                        ConvSpec::new(mid, spec.growth, 3, 1),
                    )?,
                });
            }
            ch += n * spec.growth;
            let transition = if b < 3 {
                let p = format!("features.transition{}", b + 1);
                let t = Transition {
                    norm: BatchNorm::load(w, &format!("{p}.norm"), ch, Act::Relu)?,
                    conv: Conv2d::load(w, &format!("{p}.conv"), ConvSpec::new(ch, ch / 2, 1, 1))?,
                };
                ch /= 2;
                Some(t)
            } else {
                None
            };
            blocks.push(Block { layers, transition });
        }
        let norm5 = BatchNorm::load(w, "features.norm5", ch, Act::Relu)?;
        let classifier = Linear::load(w, "classifier", ch, num_classes)?;
        Ok(DenseNet {
            conv0,
            norm0,
            blocks,
            norm5,
            classifier,
        })
    }

    /// `forward_features` (= `features`): `[B, 3, S, S]` → `[B, C, S/32, S/32]`, ending with norm5 + ReLU.
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.norm0.forward(self.conv0.forward(x));
        // Post-ReLU input: the padding value of the max pool cannot win.
        let mut x = max_pool2d(
            x,
            MaxPoolOptions::new([3, 3])
                .with_stride([2, 2])
                .with_padding([1, 1]),
        );
        for block in &self.blocks {
            // timm `DenseBlock`: each layer sees the concatenation [input, new_0, …, new_{l−1}].
            let mut features = vec![x];
            for layer in &block.layers {
                let cat = Tensor::cat(features.clone(), 1);
                let y = layer.conv1.forward(layer.norm1.forward(cat));
                let y = layer.conv2.forward(layer.norm2.forward(y));
                features.push(y);
            }
            x = Tensor::cat(features, 1);
            if let Some(t) = &block.transition {
                let y = t.conv.forward(t.norm.forward(x));
                x = avg_pool2d(y, AvgPoolOptions::new([2, 2]));
            }
        }
        self.norm5.forward(x)
    }

    /// `global_pool` (avg) → `classifier`.
    pub fn forward_head(&self, features: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        avg_pool_head(features, &self.classifier)
    }
}
