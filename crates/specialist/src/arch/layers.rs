//! The few layer types timm's CNNs and ViTs are made of, as burn functional ops over weights loaded by
//! timm key name. Each follows the PyTorch module it replaces (eval mode).

use burn_tensor::activation::{relu, silu};
use burn_tensor::module::{batch_norm, conv2d, layer_norm, linear};
use burn_tensor::ops::ConvOptions;
use burn_tensor::Tensor;

use crate::error::Result;
use crate::weights::WeightStore;

/// `nn.Conv2d` (symmetric padding; timm's PyTorch-native models never use TF "same" padding).
pub struct Conv2d {
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
}

/// Geometry of a convolution: `out ← in` channels, square kernel, stride, padding, groups, bias.
#[derive(Clone, Copy, Debug)]
pub struct ConvSpec {
    pub in_ch: usize,
    pub out_ch: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
    pub bias: bool,
}

impl ConvSpec {
    /// A convolution without bias, padding `k // 2` (timm's `get_padding` for stride 1 and for the
    /// odd-kernel stride-2 convolutions of these models), one group.
    pub fn new(in_ch: usize, out_ch: usize, kernel: usize, stride: usize) -> ConvSpec {
        ConvSpec {
            in_ch,
            out_ch,
            kernel,
            stride,
            padding: timm_padding(kernel, stride),
            groups: 1,
            bias: false,
        }
    }

    pub fn with_bias(mut self) -> ConvSpec {
        self.bias = true;
        self
    }

    pub fn depthwise(mut self) -> ConvSpec {
        self.groups = self.in_ch;
        self
    }

    pub fn padding(mut self, p: usize) -> ConvSpec {
        self.padding = p;
        self
    }
}

/// timm `layers.padding.get_padding`: `((stride − 1) + dilation·(k − 1)) // 2` (dilation 1).
pub fn timm_padding(kernel: usize, stride: usize) -> usize {
    ((stride - 1) + (kernel - 1)) / 2
}

impl Conv2d {
    pub fn load(w: &mut WeightStore, prefix: &str, s: ConvSpec) -> Result<Conv2d> {
        let weight = w.tensor(
            &format!("{prefix}.weight"),
            [s.out_ch, s.in_ch / s.groups, s.kernel, s.kernel],
        )?;
        let bias = if s.bias {
            Some(w.tensor(&format!("{prefix}.bias"), [s.out_ch])?)
        } else {
            None
        };
        Ok(Conv2d {
            weight,
            bias,
            options: ConvOptions::new([s.stride; 2], [s.padding; 2], [1, 1], s.groups),
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv2d(
            x,
            self.weight.clone(),
            self.bias.clone(),
            self.options.clone(),
        )
    }
}

/// The activation a timm `BatchNormAct2d` applies after normalising (`Identity` for a plain `BatchNorm2d`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    None,
    Relu,
    Silu,
}

impl Act {
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Act::None => x,
            Act::Relu => relu(x),
            Act::Silu => silu(x),
        }
    }
}

/// `nn.BatchNorm2d` in eval mode (running statistics, eps 1e-5: every GSCo specialist is a PyTorch-native
/// timm model, not a `tf_` port), optionally followed by an activation as timm's `BatchNormAct2d`.
pub struct BatchNorm {
    gamma: Tensor<1>,
    beta: Tensor<1>,
    mean: Tensor<1>,
    var: Tensor<1>,
    act: Act,
}

pub const BN_EPS: f64 = 1e-5;

impl BatchNorm {
    pub fn load(w: &mut WeightStore, prefix: &str, ch: usize, act: Act) -> Result<BatchNorm> {
        Ok(BatchNorm {
            gamma: w.tensor(&format!("{prefix}.weight"), [ch])?,
            beta: w.tensor(&format!("{prefix}.bias"), [ch])?,
            mean: w.tensor(&format!("{prefix}.running_mean"), [ch])?,
            var: w.tensor(&format!("{prefix}.running_var"), [ch])?,
            act,
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = batch_norm(
            x,
            self.gamma.clone(),
            self.beta.clone(),
            self.mean.clone(),
            self.var.clone(),
            BN_EPS,
        );
        self.act.apply(y)
    }
}

/// `nn.Linear`; the weight is kept as `[in, out]` because burn's `linear` does not transpose.
pub struct Linear {
    weight_t: Tensor<2>,
    bias: Tensor<1>,
}

impl Linear {
    pub fn load(w: &mut WeightStore, prefix: &str, in_f: usize, out_f: usize) -> Result<Linear> {
        Ok(Linear {
            weight_t: w
                .tensor(&format!("{prefix}.weight"), [out_f, in_f])?
                .transpose(),
            bias: w.tensor(&format!("{prefix}.bias"), [out_f])?,
        })
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        linear(x, self.weight_t.clone(), Some(self.bias.clone()))
    }

    /// `[B, N, in]` → `[B, N, out]` as one `[B·N, in] × [in, out]` product (a batched 3-D matmul would
    /// broadcast the weight per image).
    pub fn forward_tokens(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, n, d] = x.dims();
        let y = self.forward(x.reshape([b * n, d]));
        let out = y.dims()[1];
        y.reshape([b, n, out])
    }
}

/// `nn.LayerNorm(dim, eps)` with affine weight and bias.
pub struct LayerNorm {
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
}

impl LayerNorm {
    pub fn load(w: &mut WeightStore, prefix: &str, dim: usize, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm {
            gamma: w.tensor(&format!("{prefix}.weight"), [dim])?,
            beta: w.tensor(&format!("{prefix}.bias"), [dim])?,
            eps,
        })
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        layer_norm(x, self.gamma.clone(), Some(self.beta.clone()), self.eps)
    }
}

/// Global average pooling over H and W: `[B, C, H, W]` → `[B, C]` (timm `SelectAdaptivePool2d('avg')`).
pub fn global_avg_pool(x: Tensor<4>) -> Tensor<2> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h * w]).mean_dim(2).reshape([b, c])
}

/// timm's CNN head (`SelectAdaptivePool2d('avg')` → flatten → `Linear`): `(logits [B, C], pooled [B, F])`.
pub fn avg_pool_head(features: Tensor<4>, classifier: &Linear) -> (Tensor<2>, Tensor<2>) {
    let pooled = global_avg_pool(features);
    (classifier.forward(pooled.clone()), pooled)
}
