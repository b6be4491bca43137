"""Per-channel weight quantization of DepthwiseConv2D kernels (`QuantizationScheme.depthwise_per_channel`).

TF-MOT's per-axis weight quantizer keeps one range per entry of the kernel's last
dimension. A DepthwiseConv2D kernel is (kh, kw, C, M), M the depth multiplier (1 in
MobileNets), so TF-MOT gives it M ranges: in effect one for the whole tensor, at every
width. TFLite's int8 depthwise kernel is (1, kh, kw, C*M) and quantized per axis over its
last dimension, one scale per output channel. `DepthwisePerChannelWeightsQuantizer`
simulates that: one symmetric range per output channel c*M+m, i.e. per input channel for
M = 1, taken over the (kh, kw) taps.

Only the n-bit scheme (weights below 8 bits) uses it (`tfmot_schemes`): at W4 the
per-tensor depthwise ranges cost 1.4-3.1 times the rounding error of per-channel ones.
"""

import tensorflow as tf
import tf_keras
from tensorflow_model_optimization.python.core.quantization.keras import quant_ops, quantizers
from tensorflow_model_optimization.python.core.quantization.keras.experimental.default_n_bit import (
    default_n_bit_quantize_registry)

_PACKAGE = "zscgan_tf"


def range_count(kernel_shape) -> int:
    """How many ranges the quantizer keeps for a depthwise kernel of `kernel_shape` (kh, kw, C, M): C*M."""
    return int(kernel_shape[-2]) * int(kernel_shape[-1])


def as_per_channel_columns(kernel):
    """The (kh, kw, C, M) kernel as (kh, kw, 1, C*M): one last-axis entry per output channel (c*M + m), as
    TFLite lays a depthwise kernel out, so that TF-MOT's per-axis ops quantize each channel apart."""
    shape = tf.shape(kernel)
    return tf.reshape(kernel, tf.stack([shape[0], shape[1], 1, shape[2] * shape[3]]))


@tf_keras.utils.register_keras_serializable(package=_PACKAGE)
class DepthwisePerChannelWeightsQuantizer(quantizers.LastValueQuantizer):
    """Symmetric, narrow-range weight quantizer with one range per depthwise output channel.

    As TF-MOT's `DefaultNBitConvWeightsQuantizer` (LastValueQuantizer, per axis, symmetric,
    narrow range: levels -(2^(b-1)-1)..2^(b-1)-1 times the step), but the per-axis ranges run
    over C*M channels of the (kh, kw, C, M) kernel instead of its last dimension M.
    """

    def __init__(self, num_bits: int, per_axis: bool = True, symmetric: bool = True, narrow_range: bool = True):
        if not (per_axis and symmetric and narrow_range):
            raise ValueError("DepthwisePerChannelWeightsQuantizer is per axis, symmetric and narrow-range")
        super().__init__(num_bits=num_bits, per_axis=True, symmetric=True, narrow_range=True)

    def build(self, tensor_shape, name, layer):
        channels = range_count(tensor_shape)
        min_weight = layer.add_weight(name + "_min", shape=(channels,),
                                      initializer=tf_keras.initializers.Constant(-6.0), trainable=False)
        max_weight = layer.add_weight(name + "_max", shape=(channels,),
                                      initializer=tf_keras.initializers.Constant(6.0), trainable=False)
        return {"min_var": min_weight, "max_var": max_weight}

    def __call__(self, inputs, training, weights, **kwargs):
        columns = as_per_channel_columns(inputs)
        outputs = quant_ops.LastValueQuantize(columns, weights["min_var"], weights["max_var"], is_training=training,
                                              num_bits=self.num_bits, per_channel=True, symmetric=True,
                                              narrow_range=True)
        return tf.reshape(outputs, tf.shape(inputs))

    def __eq__(self, other):
        return type(other) is type(self) and super().__eq__(other)

    def __ne__(self, other):
        return not self.__eq__(other)

    __hash__ = None


@tf_keras.utils.register_keras_serializable(package=_PACKAGE)
class DepthwisePerChannelQuantizeConfig(default_n_bit_quantize_registry.DefaultNBitConvQuantizeConfig):
    """TF-MOT's n-bit DepthwiseConv2D config (`depthwise_kernel` weights, `activation`), with the
    kernel quantized per channel by `DepthwisePerChannelWeightsQuantizer`."""

    def __init__(self, weight_attrs=("depthwise_kernel",), activation_attrs=("activation",),
                 quantize_output=False, num_bits_weight: int = 8, num_bits_activation: int = 8):
        super().__init__(list(weight_attrs), list(activation_attrs), quantize_output,
                         num_bits_weight=num_bits_weight, num_bits_activation=num_bits_activation)
        self.weight_quantizer = DepthwisePerChannelWeightsQuantizer(num_bits_weight)
