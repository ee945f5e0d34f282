//! The timm architectures a GSCo specialist can be: each written once, its shapes derived from timm's
//! registry entry (depths, widths, heads) and checked against the weights.

pub mod densenet;
pub mod efficientnet;
pub mod layers;
pub mod resnet;
pub mod vit;

use burn_tensor::Tensor;

use crate::error::Result;
use crate::weights::WeightStore;
use densenet::{DenseNet, DenseNetSpec};
use efficientnet::{EfficientNet, EfficientNetSpec};
use resnet::{ResNet, ResNetSpec};
use vit::{Vit, VitSpec};

/// A timm architecture with its registry hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Architecture {
    ResNet(ResNetSpec),
    DenseNet(DenseNetSpec),
    Vit(VitSpec),
    EfficientNet(EfficientNetSpec),
}

impl Architecture {
    /// timm names accepted (a `.tag` suffix such as `.augreg_in21k_ft_in1k` is ignored).
    pub const SUPPORTED: &'static [&'static str] = &[
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "densenet121",
        "densenet169",
        "densenet201",
        "densenet161",
        "vit_tiny_patch16_224",
        "vit_small_patch16_224",
        "vit_base_patch16_224",
        "vit_large_patch16_224",
        "efficientnet_b0",
        "efficientnet_b1",
        "efficientnet_b2",
        "efficientnet_b3",
        "efficientnet_b4",
    ];

    /// The architecture of a timm model name (timm's `model_entrypoint` registry values).
    pub fn from_timm_name(name: &str) -> Option<Architecture> {
        let base = name.split('.').next().unwrap_or(name).trim();
        let base = base.strip_prefix("timm/").unwrap_or(base);
        let resnet = |layers, bottleneck| Architecture::ResNet(ResNetSpec { layers, bottleneck });
        let dense = |growth, blocks, stem| {
            Architecture::DenseNet(DenseNetSpec {
                growth,
                blocks,
                stem,
            })
        };
        let vit = |embed, depth, heads| {
            Architecture::Vit(VitSpec {
                embed,
                depth,
                heads,
                patch: 16,
                img: 224,
            })
        };
        let eff = |channel_multiplier, depth_multiplier| {
            Architecture::EfficientNet(EfficientNetSpec {
                channel_multiplier,
                depth_multiplier,
            })
        };
        Some(match base {
            "resnet18" => resnet([2, 2, 2, 2], false),
            "resnet34" => resnet([3, 4, 6, 3], false),
            "resnet50" => resnet([3, 4, 6, 3], true),
            "resnet101" => resnet([3, 4, 23, 3], true),
            "resnet152" => resnet([3, 8, 36, 3], true),
            "densenet121" => dense(32, [6, 12, 24, 16], 64),
            "densenet169" => dense(32, [6, 12, 32, 32], 64),
            "densenet201" => dense(32, [6, 12, 48, 32], 64),
            "densenet161" => dense(48, [6, 12, 36, 24], 96),
            "vit_tiny_patch16_224" => vit(192, 12, 3),
            "vit_small_patch16_224" => vit(384, 12, 6),
            "vit_base_patch16_224" => vit(768, 12, 12),
            "vit_large_patch16_224" => vit(1024, 24, 16),
            "efficientnet_b0" => eff(1.0, 1.0),
            "efficientnet_b1" => eff(1.0, 1.1),
            "efficientnet_b2" => eff(1.1, 1.2),
            "efficientnet_b3" => eff(1.2, 1.4),
            "efficientnet_b4" => eff(1.4, 1.8),
            _ => return None,
        })
    }

    /// Width of the pooled features the classifier reads (timm's `num_features`).
    pub fn num_features(&self) -> usize {
        match self {
            Architecture::ResNet(s) => s.num_features(),
            Architecture::DenseNet(s) => s.num_features(),
            Architecture::Vit(s) => s.embed,
            Architecture::EfficientNet(s) => s.num_features(),
        }
    }

    /// timm's `global_pool` for the model (`config.json` stores it only where it is a string).
    pub fn global_pool(&self) -> &'static str {
        match self {
            Architecture::Vit(_) => "token",
            _ => "avg",
        }
    }

    /// CNNs take any multiple of 32; a ViT's position embedding fixes its input side.
    pub fn check_input_size(&self, s: u32) -> std::result::Result<(), String> {
        match self {
            Architecture::Vit(v) if s as usize != v.img => Err(format!(
                "{s}: this ViT's position embedding is for {0}×{0} inputs",
                v.img
            )),
            Architecture::Vit(_) => Ok(()),
            _ if s % 32 != 0 => Err(format!("{s} is not a multiple of 32")),
            _ => Ok(()),
        }
    }

    /// Shape of `forward_features` for one `input_size` image: `[C, H, W]` (CNNs) or `[tokens, D]` (ViT).
    pub fn feature_shape(&self, input_size: u32) -> Vec<usize> {
        let s = input_size as usize / 32;
        match self {
            Architecture::Vit(v) => vec![v.num_tokens(), v.embed],
            _ => vec![self.num_features(), s, s],
        }
    }
}

/// A loaded network.
pub enum Network {
    ResNet(ResNet),
    DenseNet(DenseNet),
    Vit(Vit),
    EfficientNet(EfficientNet),
}

/// One forward pass's outputs, on the device.
pub struct NetOutput {
    /// `[B, num_classes]`.
    pub logits: Tensor<2>,
    /// `forward_features` flattened per image in PyTorch's row-major order: `[B, D]`.
    pub features: Tensor<2>,
    /// The classifier's input (`forward_head(pre_logits=True)`): `[B, num_features]`.
    pub pooled: Tensor<2>,
}

impl Network {
    pub fn load(w: &mut WeightStore, arch: Architecture, num_classes: usize) -> Result<Network> {
        Ok(match arch {
            Architecture::ResNet(s) => Network::ResNet(ResNet::load(w, s, num_classes)?),
            Architecture::DenseNet(s) => Network::DenseNet(DenseNet::load(w, s, num_classes)?),
            Architecture::Vit(s) => Network::Vit(Vit::load(w, s, num_classes)?),
            Architecture::EfficientNet(s) => {
                Network::EfficientNet(EfficientNet::load(w, s, num_classes)?)
            }
        })
    }

    /// `[B, 3, S, S]` normalised, padded images → logits, flattened features and pooled features.
    pub fn forward(&self, x: Tensor<4>) -> NetOutput {
        let b = x.dims()[0];
        let cnn = |f: Tensor<4>, head: &dyn Fn(Tensor<4>) -> (Tensor<2>, Tensor<2>)| {
            let [_, c, h, w] = f.dims();
            let (logits, pooled) = head(f.clone());
            NetOutput {
                logits,
                features: f.reshape([b, c * h * w]),
                pooled,
            }
        };
        match self {
            Network::ResNet(m) => cnn(m.forward_features(x), &|f| m.forward_head(f)),
            Network::DenseNet(m) => cnn(m.forward_features(x), &|f| m.forward_head(f)),
            Network::EfficientNet(m) => cnn(m.forward_features(x), &|f| m.forward_head(f)),
            Network::Vit(m) => {
                let f = m.forward_features(x);
                let [_, n, d] = f.dims();
                let (logits, pooled) = m.forward_head(f.clone());
                NetOutput {
                    logits,
                    features: f.reshape([b, n * d]),
                    pooled,
                }
            }
        }
    }
}
