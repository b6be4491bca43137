"""Which of a teacher's layers TF-MOT quantizes, and the TF-MOT schemes that quantize them.

TF-MOT quantizes a fixed set of Keras layers (its registry). `quantizable_layer_names`
picks the teacher's layers to annotate: those the registry supports with an activation
its configs accept, BatchNormalization folded into the linear layer in front of it, and
`Multiply`, `Subtract`, `Maximum` and `Minimum` with an output-only config. The
scheme `tfmot_scheme` builds wraps TF-MOT's 8-bit or n-bit scheme so that its registry
disowns what its configs cannot quantize and, below 8 bits, the first and last weighted
layers can stay at 8 bits and DepthwiseConv2D kernels can be quantized per channel
(`depthwise_quantizer`). `quantize.quantize_student` applies them.
"""

import copy
from typing import TYPE_CHECKING, List, Sequence, Tuple

import tensorflow_model_optimization as tfmot
import tf_keras
# Not exported by tfmot's public API: the input quantizer layer, the activation its
# Conv/Dense + BatchNormalization transforms set, and the output-only QuantizeConfigs
# its registries give Add and Concatenate.
from tensorflow_model_optimization.python.core.quantization.keras import (
    quantize_aware_activation, quantize_layer)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_configs)
from tensorflow_model_optimization.python.core.quantization.keras.experimental.default_n_bit import (
    default_n_bit_quantize_configs)

from zscgan_tf import depthwise_quantizer, quantizer_ranges

if TYPE_CHECKING:
    from zscgan_tf.quantize import QuantizationScheme

_N_BIT = tfmot.quantization.keras.experimental.default_n_bit

# Bit width used for the first and last weighted layers when the scheme keeps them.
EDGE_LAYER_BITS = 8
# Layers whose fake quantization TF-MOT derives from the layer in front of them.
_FOLDABLE_INTO = (
    tf_keras.layers.Conv2D,
    tf_keras.layers.DepthwiseConv2D,
    tf_keras.layers.SeparableConv2D,
    tf_keras.layers.Dense,
)
# Not in TF-MOT's registry, but rewritten by its layout transforms into layers that are.
_SPLIT_BY_TRANSFORMS = (tf_keras.layers.SeparableConv1D, tf_keras.layers.SeparableConv2D)
# Merge layers outside TF-MOT's registries that TFLite runs as integer kernels (MUL,
# SUB, MAXIMUM, MINIMUM). They are annotated with TF-MOT's output-only config, as its
# registries annotate Add, so that QAT rounds their output as the int8 model will.
# Left float, the converter must calibrate them itself, and it can leave one float:
# MobileNetV3's hard-swish Multiply before a squeeze-excite pool of a 1x1 map.
_OUTPUT_QUANTIZED_LAYERS = (
    tf_keras.layers.Multiply,
    tf_keras.layers.Subtract,
    tf_keras.layers.Maximum,
    tf_keras.layers.Minimum,
)
# Pooling layers whose int8 TFLite kernel (AVERAGE_POOL_2D) needs its output on its input's
# scale. TF-MOT's registries give them an output quantizer of their own, and once QAT has
# moved its range away from the input's, the converter refuses the model ("quantization
# parameters violate the same scale constraint"; DenseNet121's transition layers). They get
# TF-MOT's no-op config instead, as its registries give MaxPooling2D, and the converter
# puts their output on their input's scale.
_SAME_SCALE_POOLING_LAYERS = (
    tf_keras.layers.AveragePooling1D,
    tf_keras.layers.AveragePooling2D,
)
# Layers counted when choosing the "first" and "last" layer kept at 8 bits.
_WEIGHTED_LAYERS = (
    tf_keras.layers.Conv2D,
    tf_keras.layers.DepthwiseConv2D,
    tf_keras.layers.Dense,
)
# The no-op configs of TF-MOT's 8-bit and n-bit schemes (two classes of one name).
_NO_OP_CONFIGS = (default_8bit_quantize_configs.NoOpQuantizeConfig, default_n_bit_quantize_configs.NoOpQuantizeConfig)
# Activation names `QuantizeAwareActivation` accepts inside Conv/Dense layers.
_LAYER_ACTIVATIONS = frozenset({"linear", "relu", "swish", "gelu", "softmax", "sigmoid", "tanh"})
# Activation names the registries accept in a standalone `Activation` layer.
_ACTIVATION_LAYER_NAMES_8_BIT = frozenset(
    {"relu", "relu6", "swish", "gelu", "linear", "softmax", "sigmoid", "tanh"})
_ACTIVATION_LAYER_NAMES_N_BIT = frozenset(
    {"relu", "relu6", "swish", "linear", "softmax", "sigmoid", "tanh"})


def _activation_name(activation) -> str:
    return getattr(activation, "__name__", activation.__class__.__name__)


def registry_for(scheme: "QuantizationScheme"):
    """The scheme's TF-MOT registry, disowning what its configs cannot quantize, as `quantize_apply` sees it."""
    if scheme.uses_n_bit_scheme:
        registry = _N_BIT.DefaultNBitQuantizeRegistry(
            disable_per_axis=not scheme.per_channel,
            num_bits_weight=scheme.weight_bits,
            num_bits_activation=scheme.activation_bits)
        if quantizes_depthwise_per_channel(scheme):
            registry = _DepthwisePerChannelRegistry(registry)
    else:
        registry = tfmot.quantization.keras.default_8bit.Default8BitQuantizeRegistry(
            disable_per_axis=not scheme.per_channel)
    return _SupportedActivationsRegistry(registry, scheme)


def quantizes_depthwise_per_channel(scheme: "QuantizationScheme") -> bool:
    """Whether the scheme's DepthwiseConv2D kernels get a range per channel: asked for, per-channel
    weights, and the n-bit scheme (weights or activations below 8 bits; W8A8 keeps TF-MOT's)."""
    return scheme.depthwise_per_channel and scheme.per_channel and scheme.uses_n_bit_scheme


def _is_quantizable(layer, registry, quantizable_names) -> bool:
    """Whether TF-MOT can quantize `layer` (its inputs already decided)."""
    if isinstance(layer, tf_keras.layers.InputLayer):
        return False
    if isinstance(layer, tf_keras.layers.BatchNormalization):
        inbound = quantizer_ranges.inbound_layers(layer)
        # Exact types: TF-MOT's patterns match class names, so subclasses such as
        # Conv2DTranspose are not folded.
        return (len(inbound) == 1 and type(inbound[0]) in _FOLDABLE_INTO  # pylint: disable=unidiomatic-typecheck
                and inbound[0].name in quantizable_names
                and _activation_name(inbound[0].activation) == "linear")
    if isinstance(layer, _SPLIT_BY_TRANSFORMS):
        return _activation_name(layer.activation) in _LAYER_ACTIVATIONS
    if type(layer) in _OUTPUT_QUANTIZED_LAYERS:  # pylint: disable=unidiomatic-typecheck
        return True
    return registry.supports(layer)


def _has_supported_activation(layer, scheme: "QuantizationScheme") -> bool:
    """Whether TF-MOT's quantize configs accept `layer`'s activation function, if any.

    Its registries claim every `Activation` layer and every Conv/Dense layer by class,
    and their configs raise only when the wrapped layer is built, for an activation
    outside a short list (elu, selu, softplus, mish, hard_sigmoid, ...).
    """
    if isinstance(layer, tf_keras.layers.Activation):
        allowed = (_ACTIVATION_LAYER_NAMES_N_BIT if scheme.uses_n_bit_scheme
                   else _ACTIVATION_LAYER_NAMES_8_BIT)
        return _activation_name(layer.activation) in allowed
    if isinstance(getattr(layer, "activation", None), quantize_aware_activation.NoOpActivation):
        return True  # Set by TF-MOT's own Conv/Dense + BatchNormalization transforms.
    if hasattr(layer, "activation") and not isinstance(layer, tf_keras.layers.ReLU):
        return _activation_name(layer.activation) in _LAYER_ACTIVATIONS
    return True


def quantizable_layer_names(teacher, registry) -> List[str]:
    """The names of the teacher's layers to annotate, given the scheme's `registry_for` registry."""
    names = []
    for layer in teacher.layers:  # topological order: inputs are decided first
        if _is_quantizable(layer, registry, names):
            names.append(layer.name)
    # Layers at the model input that pass values through without a quantizer of their own (a
    # Reshape) are left unannotated when only float layers read them. Annotated, TF-MOT puts its
    # input quantizer in front of them, and the converter drops a float Rescaling after
    # `QuantizeLayer -> Reshape` from the int8 model (weight scales 255 times too large, every
    # output 0). Further in, the same pattern converts correctly and is left as it is.
    at_input = set()
    for layer in teacher.layers:
        inbound = quantizer_ranges.inbound_layers(layer)
        if inbound and all(isinstance(source, tf_keras.layers.InputLayer) or source.name in at_input
                           for source in inbound) and passes_values_through(layer, registry):
            at_input.add(layer.name)
    for layer in reversed(teacher.layers):
        consumers = [node.outbound_layer for node in layer._outbound_nodes]  # pylint: disable=protected-access
        if (layer.name in at_input and layer.name in names and consumers
                and all(consumer.name not in names for consumer in consumers)):
            names.remove(layer.name)
    return names


def passes_values_through(layer, registry) -> bool:
    """Whether the registry (`registry_for`'s, which disowns the layers whose configs would
    raise) quantizes neither `layer`'s weights, activation nor output."""
    if not registry.supports(layer) or type(layer) in _OUTPUT_QUANTIZED_LAYERS:  # pylint: disable=unidiomatic-typecheck
        return False
    config = registry.get_quantize_config(layer)
    return not (config.get_weights_and_quantizers(layer) or config.get_activations_and_quantizers(layer)
                or config.get_output_quantizers(layer))


def edge_layer_names(teacher, quantizable_names: Sequence[str]) -> Tuple[str, ...]:
    """The first and last weighted layers to annotate, which a scheme below 8 bits may keep at 8."""
    weighted = [layer.name for layer in teacher.layers
                if isinstance(layer, _WEIGHTED_LAYERS) and layer.name in quantizable_names]
    if not weighted:
        return ()
    return tuple(dict.fromkeys((weighted[0], weighted[-1])))


def quantize_config_of(layer, scheme: "QuantizationScheme"):
    """The QuantizeConfig `layer` is annotated with; None: the scheme's registry chooses."""
    layer_type = type(layer)  # Exact types, as TF-MOT's registries match them.
    if layer_type in _OUTPUT_QUANTIZED_LAYERS:
        return _output_quantize_config(scheme)
    if layer_type in _SAME_SCALE_POOLING_LAYERS:
        return default_8bit_quantize_configs.NoOpQuantizeConfig()
    return None


def _output_quantize_config(scheme: "QuantizationScheme"):
    """TF-MOT's output-only QuantizeConfig at the scheme's activation width."""
    if scheme.uses_n_bit_scheme:
        return default_n_bit_quantize_configs.DefaultNBitOutputQuantizeConfig(
            num_bits_weight=scheme.weight_bits, num_bits_activation=scheme.activation_bits)
    return default_8bit_quantize_configs.Default8BitOutputQuantizeConfig()


def _with_bits(quantize_config, weight_bits: int, activation_bits: int):
    """The same n-bit QuantizeConfig rebuilt at other widths."""
    config = quantize_config.get_config()
    if "num_bits_weight" not in config:
        return quantize_config
    config.update(num_bits_weight=weight_bits, num_bits_activation=activation_bits)
    return type(quantize_config).from_config(config)


class _DepthwisePerChannelRegistry(tfmot.quantization.keras.QuantizeRegistry):
    """An n-bit registry whose DepthwiseConv2D configs quantize the kernel per channel
    (`depthwise_quantizer.DepthwisePerChannelQuantizeConfig`), at the widths the base config has."""

    def __init__(self, base_registry):
        self._base_registry = base_registry

    def supports(self, layer):
        return self._base_registry.supports(layer)

    def get_quantize_config(self, layer):
        quantize_config = self._base_registry.get_quantize_config(layer)
        if type(layer) is tf_keras.layers.DepthwiseConv2D:  # pylint: disable=unidiomatic-typecheck
            config = quantize_config.get_config()
            return depthwise_quantizer.DepthwisePerChannelQuantizeConfig(
                weight_attrs=config["weight_attrs"], activation_attrs=config["activation_attrs"],
                quantize_output=config["quantize_output"], num_bits_weight=config["num_bits_weight"],
                num_bits_activation=config["num_bits_activation"])
        return quantize_config


class _DepthwisePerChannelScheme(tfmot.quantization.keras.QuantizeScheme):
    """An n-bit scheme whose registry is wrapped in `_DepthwisePerChannelRegistry`."""

    def __init__(self, base_scheme):
        self._base_scheme = base_scheme

    def get_layout_transformer(self):
        return self._base_scheme.get_layout_transformer()

    def get_quantize_registry(self):
        return _DepthwisePerChannelRegistry(self._base_scheme.get_quantize_registry())


def _n_bit_scheme(scheme: "QuantizationScheme"):
    """TF-MOT's n-bit scheme at the scheme's widths, with per-channel depthwise kernels if asked."""
    n_bit_scheme = _N_BIT.DefaultNBitQuantizeScheme(
        disable_per_axis=not scheme.per_channel,
        num_bits_weight=scheme.weight_bits,
        num_bits_activation=scheme.activation_bits)
    if quantizes_depthwise_per_channel(scheme):
        return _DepthwisePerChannelScheme(n_bit_scheme)
    return n_bit_scheme


class _EdgeLayersAt8BitsRegistry(tfmot.quantization.keras.QuantizeRegistry):
    """The n-bit registry, except that named layers get 8-bit configs.

    The configs are rebuilt from the n-bit ones instead of asking a second
    `DefaultNBitQuantizeRegistry(8, 8)`: that class keeps its per-layer bit widths
    in class-level objects which every new instance overwrites, so two registries of
    different widths cannot coexist.
    """

    def __init__(self, base_registry, edge_layer_names: Sequence[str]):
        self._base_registry = base_registry
        self._edge_layer_names = frozenset(edge_layer_names)

    def supports(self, layer):
        return self._base_registry.supports(layer)

    def get_quantize_config(self, layer):
        quantize_config = self._base_registry.get_quantize_config(layer)
        if layer.name in self._edge_layer_names:
            return _with_bits(quantize_config, EDGE_LAYER_BITS, EDGE_LAYER_BITS)
        return quantize_config


class _EdgeLayersAt8BitsTransform(tfmot.quantization.keras.QuantizeLayoutTransform):
    """The n-bit layout transform, then the model input quantized at 8 bits."""

    def __init__(self, base_transform):
        self._base_transform = base_transform

    def apply(self, model, layer_quantize_map):
        model, layer_quantize_map = self._base_transform.apply(model, layer_quantize_map)
        for layer in model.layers:
            reads_model_input = any(isinstance(inbound, tf_keras.layers.InputLayer)
                                    for inbound in quantizer_ranges.inbound_layers(layer))
            if isinstance(layer, quantize_layer.QuantizeLayer) and reads_model_input:
                # quantize_apply rebuilds each QuantizeLayer from its config updated
                # with this map entry.
                quantizer_config = copy.deepcopy(layer.get_config()["quantizer"])
                quantizer_config["config"]["num_bits"] = EDGE_LAYER_BITS
                layer_quantize_map[layer.name] = {"quantizer": quantizer_config}
        return model, layer_quantize_map


class _EdgeLayersAt8BitsScheme(tfmot.quantization.keras.QuantizeScheme):
    """TF-MOT's n-bit scheme with the first and last weighted layers at 8 bits.

    Annotating those layers with a custom `QuantizeConfig` (the documented route)
    would switch off TF-MOT's Conv+BatchNorm(+ReLU) fusion for them, leaving a fake
    quantizer between the conv and its BN; choosing the config inside the registry
    keeps the fusion.
    """

    def __init__(self, scheme: "QuantizationScheme", edge_layer_names: Sequence[str]):
        self._base_scheme = _n_bit_scheme(scheme)
        self._edge_layer_names = tuple(edge_layer_names)

    def get_layout_transformer(self):
        return _EdgeLayersAt8BitsTransform(self._base_scheme.get_layout_transformer())

    def get_quantize_registry(self):
        return _EdgeLayersAt8BitsRegistry(self._base_scheme.get_quantize_registry(),
                                          self._edge_layer_names)


class _SupportedActivationsRegistry(tfmot.quantization.keras.QuantizeRegistry):
    """A registry that disowns layers whose activation its configs cannot quantize.

    Besides the annotated layers, `quantize_apply` gives an output quantizer to the
    unannotated layer in front of an annotated one, when the registry supports it
    (`requires_output_quantize`): an `Activation("elu")` before a convolution, for
    one. The registry supports every `Activation` layer by class, and building the
    wrapper then raises "Activation ... not supported". Disowned, such a layer stays
    float, as `quantize_student` reports it.
    """

    def __init__(self, base_registry, scheme: "QuantizationScheme"):
        self._base_registry = base_registry
        self._scheme = scheme

    def supports(self, layer):
        return self._base_registry.supports(layer) and _has_supported_activation(layer, self._scheme)

    def get_quantize_config(self, layer):
        return self._base_registry.get_quantize_config(layer)


class _WeightsKeptBeforeReLUTransform(tfmot.quantization.keras.QuantizeLayoutTransform):
    """TF-MOT's layout transform, except that a Conv2D, DepthwiseConv2D or Dense layer
    feeding a ReLU layer keeps its weight quantizers.

    TF-MOT's `LayerReLUQuantize` transform, written for an Add before a ReLU, gives such a
    layer `NoOpQuantizeConfig` so that nothing rounds its output before the ReLU (TFLite
    fuses the two). That config drops its weights' quantizers too: QAT trained those
    weights unrounded while the int8 file rounds them (MobileNetV3's squeeze-excite
    convolutions, a Conv2D then a ReLU layer without BatchNormalization between). Such a
    layer gets its registry's config without activation or output quantizers instead.
    """

    def __init__(self, base_transform, registry):
        self._base_transform = base_transform
        self._registry = registry

    def apply(self, model, layer_quantize_map):
        model, layer_quantize_map = self._base_transform.apply(model, layer_quantize_map)
        for layer in model.layers:
            entry = layer_quantize_map.get(layer.name) or {}
            if (isinstance(entry.get("quantize_config"), _NO_OP_CONFIGS)
                    and type(layer) in _WEIGHTED_LAYERS  # pylint: disable=unidiomatic-typecheck
                    and self._registry.supports(layer)):
                quantize_config = self._registry.get_quantize_config(layer)
                weights_only = {**quantize_config.get_config(), "activation_attrs": [], "quantize_output": False}
                entry["quantize_config"] = type(quantize_config).from_config(weights_only)
        return model, layer_quantize_map


class _SupportedActivationsScheme(tfmot.quantization.keras.QuantizeScheme):
    """A TF-MOT scheme whose registry is wrapped in `_SupportedActivationsRegistry`, and
    whose layout transform keeps weight quantizers before a ReLU layer
    (`_WeightsKeptBeforeReLUTransform`)."""

    def __init__(self, base_scheme, scheme: "QuantizationScheme"):
        self._base_scheme = base_scheme
        self._scheme = scheme

    def get_layout_transformer(self):
        return _WeightsKeptBeforeReLUTransform(self._base_scheme.get_layout_transformer(),
                                               self.get_quantize_registry())

    def get_quantize_registry(self):
        return _SupportedActivationsRegistry(self._base_scheme.get_quantize_registry(), self._scheme)


def tfmot_scheme(scheme: "QuantizationScheme", edge_layers: Sequence[str]):
    """The TF-MOT scheme `quantize_apply` quantizes the annotated teacher with (`edge_layers`: the
    layers a scheme below 8 bits keeps at 8, from `edge_layer_names`)."""
    if not scheme.uses_n_bit_scheme:
        base_scheme = tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme(
            disable_per_axis=not scheme.per_channel)
    elif scheme.keep_first_and_last_at_8_bits and edge_layers:
        base_scheme = _EdgeLayersAt8BitsScheme(scheme, edge_layers)
    else:
        base_scheme = _n_bit_scheme(scheme)
    return _SupportedActivationsScheme(base_scheme, scheme)
