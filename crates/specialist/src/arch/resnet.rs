//! timm `resnet.py` (`ResNet` with `BasicBlock` / `Bottleneck`, the default "deep stem off" variant):
//! conv1 7×7/2 → bn1 → ReLU → maxpool 3×3/2 → layer1..4 → (`forward_features` ends here) → avg pool → fc.

use burn_tensor::activation::relu;
use burn_tensor::module::max_pool2d;
use burn_tensor::ops::MaxPoolOptions;
use burn_tensor::Tensor;

use super::layers::{avg_pool_head, Act, BatchNorm, Conv2d, ConvSpec, Linear};
use crate::error::Result;
use crate::weights::WeightStore;

/// Depth, block type and blocks per stage, from timm's model registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResNetSpec {
    pub layers: [usize; 4],
    pub bottleneck: bool,
}

impl ResNetSpec {
    pub fn expansion(&self) -> usize {
        if self.bottleneck {
            4
        } else {
            1
        }
    }

    pub fn num_features(&self) -> usize {
        512 * self.expansion()
    }
}

struct Block {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    /// Bottleneck only.
    conv3: Option<(Conv2d, BatchNorm)>,
    downsample: Option<(Conv2d, BatchNorm)>,
}

impl Block {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let shortcut = match &self.downsample {
            Some((c, b)) => b.forward(c.forward(x.clone())),
            None => x.clone(),
        };
        let y = self.bn1.forward(self.conv1.forward(x));
        let y = self.bn2.forward(self.conv2.forward(y));
        let y = match &self.conv3 {
            Some((c, b)) => b.forward(c.forward(y)),
            None => y,
        };
        relu(y + shortcut)
    }
}

pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm,
    blocks: Vec<Block>,
    fc: Linear,
}

impl ResNet {
    pub fn load(w: &mut WeightStore, spec: ResNetSpec, num_classes: usize) -> Result<ResNet> {
        let conv1 = Conv2d::load(w, "conv1", ConvSpec::new(3, 64, 7, 2))?;
        let bn1 = BatchNorm::load(w, "bn1", 64, Act::Relu)?;
        let exp = spec.expansion();
        let mut inplanes = 64;
        let mut blocks = Vec::new();
        for (stage, &n) in spec.layers.iter().enumerate() {
            let planes = 64 << stage;
            for i in 0..n {
                let p = format!("layer{}.{i}", stage + 1);
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                let out = planes * exp;
                // timm `make_blocks`: a projection shortcut where the shape changes.
                let downsample = if i == 0 && (stride != 1 || inplanes != out) {
                    Some((
                        Conv2d::load(
                            w,
                            &format!("{p}.downsample.0"),
                            ConvSpec::new(inplanes, out, 1, stride).padding(0),
                        )?,
                        BatchNorm::load(w, &format!("{p}.downsample.1"), out, Act::None)?,
                    ))
                } else {
                    None
                };
                let block = if spec.bottleneck {
                    // The stride sits on the 3×3 convolution (timm `Bottleneck`, torchvision v1.5).
                    Block {
                        conv1: Conv2d::load(
                            w,
                            &format!("{p}.conv1"),
                            ConvSpec::new(inplanes, planes, 1, 1),
                        )?,
                        bn1: BatchNorm::load(w, &format!("{p}.bn1"), planes, Act::Relu)?,
                        conv2: Conv2d::load(
                            w,
                            &format!("{p}.conv2"),
                            ConvSpec::new(planes, planes, 3, stride),
                        )?,
                        bn2: BatchNorm::load(w, &format!("{p}.bn2"), planes, Act::Relu)?,
                        conv3: Some((
                            Conv2d::load(
                                w,
                                &format!("{p}.conv3"),
                                ConvSpec::new(planes, out, 1, 1),
                            )?,
                            BatchNorm::load(w, &format!("{p}.bn3"), out, Act::None)?,
                        )),
                        downsample,
                    }
                } else {
                    Block {
                        conv1: Conv2d::load(
                            w,
                            &format!("{p}.conv1"),
                            ConvSpec::new(inplanes, planes, 3, stride),
                        )?,
                        bn1: BatchNorm::load(w, &format!("{p}.bn1"), planes, Act::Relu)?,
                        conv2: Conv2d::load(
                            w,
                            &format!("{p}.conv2"),
                            ConvSpec::new(planes, planes, 3, 1),
                        )?,
                        bn2: BatchNorm::load(w, &format!("{p}.bn2"), planes, Act::None)?,
                        conv3: None,
                        downsample,
                    }
                };
                blocks.push(block);
                inplanes = out;
            }
        }
        let fc = Linear::load(w, "fc", spec.num_features(), num_classes)?;
        Ok(ResNet {
            conv1,
            bn1,
            blocks,
            fc,
        })
    }

    /// `forward_features`: `[B, 3, S, S]` → `[B, C, S/32, S/32]` (after layer4's final ReLU).
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.bn1.forward(self.conv1.forward(x));
        // Inputs are post-ReLU (≥ 0), so burn's padding value and PyTorch's −∞ give the same maxima.
        let mut x = max_pool2d(
            x,
            MaxPoolOptions::new([3, 3])
                .with_stride([2, 2])
                .with_padding([1, 1]),
        );
        for b in &self.blocks {
            x = b.forward(x);
        }
        x
    }

    /// `forward_head`: average pool → fc.
    pub fn forward_head(&self, features: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        avg_pool_head(features, &self.fc)
    }
}
