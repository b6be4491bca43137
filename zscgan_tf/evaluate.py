"""Accuracy, agreement and latency of Keras and TFLite classifiers.

Everything here returns float logits, so a float teacher, a TF-MOT student and an
int8 TFLite model can be compared on the same images. Keras models take inputs in the
teacher's input space (float, already preprocessed). TFLite models take either those
(`TfliteClassifier.predict`) or the images' uint8 pixels (`predict_pixels`), which
quantizes each pixel level the way a device would, through a fixed table.

Example:

    classifier = TfliteClassifier(model_bytes)
    tflite_logits = classifier.predict_pixels(pixels, teacher.preprocessing)
    student_logits = keras_predict(student, teacher.preprocessing.apply(pixels))
    print(top1_accuracy(tflite_logits, labels), agreement(tflite_logits, student_logits))
    print(measure_latency(model_bytes))
    print(measure_latencies({"float": float_bytes, "int8": model_bytes}))  # in turns, to compare
"""

import dataclasses
import time
from typing import Dict, Mapping, Optional

import numpy as np
import tf_keras
from ai_edge_litert.interpreter import Interpreter

from zscgan_tf import cpu_cores, native_output
from zscgan_tf.errors import UserError
from zscgan_tf.preprocessing import PIXEL_MAX, Preprocessing

DEFAULT_BATCH_SIZE = 64
DEFAULT_NUM_THREADS = 1
DEFAULT_LATENCY_RUNS = 50
DEFAULT_LATENCY_WARMUP = 5
LATENCY_PERCENTILE = 90
# Timed runs per model are taken in up to this many turns, the models compared in rotation.
LATENCY_TURNS = 10
MILLISECONDS_PER_SECOND = 1000.0
_INTEGER_IO_TYPES = (np.int8, np.uint8, np.int16)
# A pixel level whose quantized value lies this close to a half-integer, relative to its
# distance from the zero point, is a rounding tie: with [-1, 1] inputs and an integer zero
# point every level is one, but for the float32 rounding of the input scale (6e-8 of the
# value). A fixed 1e-3 also took caffe's -44.50037 for a tie, and rounded it to -44.
PIXEL_TIE_RELATIVE_TOLERANCE = 1e-6
# Beyond this many threads a batch-1 interpreter gains little, and the spare cores are a
# shared machine's.
MAX_EVALUATION_THREADS = 8


def evaluation_threads() -> int:
    """Interpreter threads for measuring accuracy: the CPU cores this process may use
    (`cpu_cores.usable_cores`), at most `MAX_EVALUATION_THREADS`.

    A model's outputs are the same at any thread count (checked on int8 and float
    MobileNetV2 and ResNet50), and a large model's evaluation goes faster: ResNet50's float
    model at 64x64 took 7.1 ms an image on 2 cores against 13.3 ms on one. Latency is
    measured at `evaluation_stage.LATENCY_THREADS` instead.
    """
    return max(1, min(cpu_cores.usable_cores(), MAX_EVALUATION_THREADS))


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_logits(name: str, logits) -> np.ndarray:
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N>0, classes), got {logits.shape}")
    return logits


def quantized_pixel_levels(scale: np.ndarray, offset: np.ndarray, input_scale: float, zero_point: int,
                           limits) -> np.ndarray:
    """Each pixel level 0 to 255 preprocessed (`pixel * scale + offset`, per channel) and
    quantized (`/ input_scale + zero_point`, rounded, clipped to `limits`), as float64 array
    (channels, 256). Rounding ties (`PIXEL_TIE_RELATIVE_TOLERANCE`) of a channel all round one
    way, the one that keeps the most levels distinct; other values round to the nearest."""
    levels = np.arange(PIXEL_MAX + 1, dtype=np.float64)
    exact = (levels[None, :] * scale[:, None] + offset[:, None]) / input_scale + zero_point
    ties = np.abs(exact - np.floor(exact) - 0.5) <= PIXEL_TIE_RELATIVE_TOLERANCE * np.abs(exact - zero_point)
    rows = []
    for channel_exact, channel_ties in zip(exact, ties):
        up = np.clip(np.where(channel_ties, np.ceil(channel_exact), np.round(channel_exact)), limits.min, limits.max)
        down = np.clip(np.where(channel_ties, np.floor(channel_exact), np.round(channel_exact)),
                       limits.min, limits.max)
        rows.append(down if len(np.unique(down)) > len(np.unique(up)) else up)
    return np.stack(rows)


class TfliteClassifier:
    """Runs a batch-1 TFLite classifier on float, teacher-space inputs.

    Integer inputs are quantized with the input tensor's scale and zero point
    (rounded, clipped to the type's range); integer outputs are dequantized with the
    output tensor's. Samples run one at a time, as the exported models have batch 1.

    Attributes:
      input_details: the interpreter's input details.
      output_details: the interpreter's output details.
      num_threads: the interpreter's CPU threads.
    """

    def __init__(self, model_bytes: bytes, num_threads: int = DEFAULT_NUM_THREADS):
        """Loads the model.

        Args:
          model_bytes: a TFLite flatbuffer with one input and one output.
          num_threads: CPU threads of the interpreter.

        Raises:
          UserError: if the bytes do not load or the model has several inputs/outputs.
          ValueError: if `model_bytes` is not bytes or `num_threads` not a positive integer.
        """
        if not isinstance(model_bytes, (bytes, bytearray)):
            raise ValueError(f"model_bytes must be bytes, got {type(model_bytes).__name__}")
        _check_positive_int("num_threads", num_threads)
        self.num_threads = int(num_threads)
        try:
            with native_output.native_stderr_discarded():  # LiteRT's "INFO: Created ... XNNPACK delegate".
                self._interpreter = Interpreter(model_content=bytes(model_bytes), num_threads=self.num_threads)
                self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise UserError(f"cannot load the TFLite model: {error}") from error
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(
                f"expected a model with one input and one output, got {len(inputs)} inputs "
                f"and {len(outputs)} outputs")
        self.input_details = inputs[0]
        self.output_details = outputs[0]

    @property
    def input_shape(self):
        """The input shape, batch included, e.g. (1, 32, 32, 3)."""
        return tuple(int(dim) for dim in self.input_details["shape"])

    def _input_quantization(self):
        """(scale, zero point, integer limits) of an integer input.

        Raises:
          UserError: if the input has no quantization scale.
        """
        scale, zero_point = self.input_details["quantization"]
        if scale == 0:
            raise UserError("the model has an integer input without a quantization scale")
        return scale, zero_point, np.iinfo(self.input_details["dtype"])

    def _quantize_input(self, sample: np.ndarray) -> np.ndarray:
        dtype = self.input_details["dtype"]
        if dtype not in _INTEGER_IO_TYPES:
            return sample.astype(dtype)
        scale, zero_point, limits = self._input_quantization()
        quantized = np.round(sample / scale + zero_point)
        return np.clip(quantized, limits.min, limits.max).astype(dtype)

    def _dequantize_output(self, output: np.ndarray) -> np.ndarray:
        if self.output_details["dtype"] not in _INTEGER_IO_TYPES:
            return output.astype(np.float32)
        scale, zero_point = self.output_details["quantization"]
        return ((output.astype(np.float32) - zero_point) * scale).astype(np.float32)

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Runs every sample.

        Args:
          inputs: float array (N, ...) whose per-sample shape matches the model input.

        Returns:
          float32 array (N, classes) of dequantized outputs.

        Raises:
          ValueError: for an empty array or a per-sample shape that does not match.
        """
        inputs = np.asarray(inputs, dtype=np.float32)
        self._check_sample_shape(inputs)
        return self._run(self._quantize_input(sample) for sample in inputs[:, None])

    def pixel_table(self, preprocessing: Preprocessing) -> Optional[np.ndarray]:
        """The model's integer input for each pixel level, per channel of the teacher's input.

        Each level is preprocessed exactly and quantized with the input's scale and zero point.
        When levels fall on rounding ties, as every one does for [-1, 1] inputs, float noise
        would round some up and some down and merge neighbouring levels; all ties here round
        the same way, the one that keeps the most levels distinct within the integer type.

        Args:
          preprocessing: the teacher's preprocessing.

        Returns:
          array (channels, 256) of the input type, row c for input channel c (after any
          channel reversal of `preprocessing`); None for a float input.

        Raises:
          UserError: for an integer input without a scale, or statistics that do not fit
            the model's channels.
        """
        dtype = self.input_details["dtype"]
        if dtype not in _INTEGER_IO_TYPES:
            return None
        input_scale, zero_point, limits = self._input_quantization()
        scale, offset = preprocessing.scale_and_offset(self.input_shape[-1], dtype=np.float64)
        return quantized_pixel_levels(scale, offset, input_scale, zero_point, limits).astype(dtype)

    def predict_pixels(self, pixels: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
        """Runs every image given as uint8 pixels (N, height, width, channels).

        An integer-input model gets each pixel through `pixel_table`; a float-input one gets
        `preprocessing.apply(pixels)`.

        Returns:
          float32 array (N, classes) of dequantized outputs.

        Raises:
          ValueError: for pixels that are not uint8, an empty array or a shape that does not match.
        """
        pixels = self._checked_pixels(pixels)
        table = self.pixel_table(preprocessing)
        if table is None:
            return self.predict(preprocessing.apply(pixels))
        return self._run(self._table_lookup(table, pixels, preprocessing)[:, None])

    def describe_pixel_input(self, preprocessing: Preprocessing) -> Optional[str]:
        """How a device turns uint8 pixels into this model's integer input, as one line for
        reports: `pixel_table` as a formula where one fits. None for a float input."""
        table = self.pixel_table(preprocessing)
        if table is None:
            return None
        channels = table.shape[0]
        reversed_note = " (pixel channels in reverse order)" if preprocessing.reverses_channels(channels) else ""
        offsets = table.astype(np.int64) - np.arange(PIXEL_MAX + 1, dtype=np.int64)
        if all(len(np.unique(row)) == 1 for row in offsets):
            shifts = [int(row[0]) for row in offsets]
            if len(set(shifts)) > 1:
                formula = f"pixel + ({', '.join(map(str, shifts))}) per channel"
            else:
                formula = "pixel" + (f" {'-' if shifts[0] < 0 else '+'} {abs(shifts[0])}" if shifts[0] else "")
        else:
            input_scale, zero_point = self.input_details["quantization"]
            scale, offset = preprocessing.scale_and_offset(channels, dtype=np.float64)

            def listed(values):
                return f"{values[0]:.6g}" if channels == 1 else f"({', '.join(f'{v:.6g}' for v in values)})"
            formula = (f"round(pixel * a + b), a = {listed(scale / input_scale)}, "
                       f"b = {listed(offset / input_scale + zero_point)}" + (" per channel" if channels > 1 else ""))
        kept = min(len(np.unique(row)) for row in table)
        dtype_name = np.dtype(self.input_details["dtype"]).name
        levels = "all 256 pixel levels kept" if kept == PIXEL_MAX + 1 else f"{kept} of 256 pixel levels kept"
        return f"from uint8 pixels: {dtype_name} input = {formula}{reversed_note}; {levels}"

    def input_as_seen(self, pixels: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
        """The float input the model computes on for these pixels: `pixel_table`'s values
        dequantized, or `preprocessing.apply(pixels)` for a float input. A float model run on
        these shows what the input's quantization alone costs."""
        pixels = self._checked_pixels(pixels)
        table = self.pixel_table(preprocessing)
        if table is None:
            return preprocessing.apply(pixels)
        input_scale, zero_point = self.input_details["quantization"]
        quantized = self._table_lookup(table, pixels, preprocessing)
        return ((quantized.astype(np.float32) - zero_point) * input_scale).astype(np.float32)

    def _checked_pixels(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8:
            raise ValueError(f"pixels must be uint8, got {pixels.dtype}")
        self._check_sample_shape(pixels)
        return pixels

    @staticmethod
    def _table_lookup(table: np.ndarray, pixels: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
        if preprocessing.reverses_channels(pixels.shape[-1]):
            pixels = pixels[..., ::-1]
        return table[np.arange(table.shape[0]), pixels]

    def _check_sample_shape(self, inputs: np.ndarray) -> None:
        sample_shape = self.input_shape[1:]
        if inputs.ndim != len(self.input_shape) or tuple(inputs.shape[1:]) != sample_shape \
                or inputs.shape[0] == 0:
            raise ValueError(
                f"inputs must have shape (N>0,) + {sample_shape}, got {inputs.shape}")

    def _run(self, model_inputs) -> np.ndarray:
        """Invokes the model on each batch-1 array of the input type; dequantized outputs stacked."""
        outputs = []
        for model_input in model_inputs:
            self._interpreter.set_tensor(self.input_details["index"], model_input)
            self._interpreter.invoke()
            raw = self._interpreter.get_tensor(self.output_details["index"])
            outputs.append(self._dequantize_output(raw).reshape(-1))
        return np.stack(outputs)


def keras_predict(model: tf_keras.Model, inputs: np.ndarray,
                  batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Runs a tf_keras model in inference mode (`training=False`), batch by batch.

    Args:
      model: a tf_keras model (teacher or TF-MOT student).
      inputs: float array (N, ...).
      batch_size: samples per call.

    Returns:
      float32 array of the outputs, concatenated along the batch.
    """
    if not isinstance(model, tf_keras.Model):
        raise ValueError(f"model must be a tf_keras.Model, got {type(model).__name__}")
    _check_positive_int("batch_size", batch_size)
    inputs = np.asarray(inputs, dtype=np.float32)
    if inputs.ndim < 1 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must have shape (N>0, ...), got {inputs.shape}")
    outputs = [np.asarray(model(inputs[start:start + batch_size], training=False))
               for start in range(0, inputs.shape[0], batch_size)]
    return np.concatenate(outputs).astype(np.float32)


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose highest logit is the label.

    Args:
      logits: (N, classes) scores (logits or probabilities).
      labels: (N,) integer class indices.

    Returns:
      Accuracy in [0, 1].
    """
    logits = _check_logits("logits", logits)
    labels = np.asarray(labels)
    if labels.shape != (logits.shape[0],):
        raise ValueError(
            f"labels must have shape ({logits.shape[0]},) to match logits, got {labels.shape}")
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def agreement(logits_a: np.ndarray, logits_b: np.ndarray) -> float:
    """Fraction of samples on which two classifiers pick the same class.

    Args:
      logits_a: (N, classes) scores of the first classifier.
      logits_b: (N, classes) scores of the second, same shape.

    Returns:
      Agreement in [0, 1].
    """
    logits_a = _check_logits("logits_a", logits_a)
    logits_b = _check_logits("logits_b", logits_b)
    if logits_a.shape != logits_b.shape:
        raise ValueError(
            f"logits must have the same shape, got {logits_a.shape} and {logits_b.shape}")
    return float(np.mean(np.argmax(logits_a, axis=1) == np.argmax(logits_b, axis=1)))


@dataclasses.dataclass(frozen=True)
class ClassDrop:
    """The class on which a model's top-1 falls furthest below a reference model's.

    Attributes:
      label: the class index.
      images: images of that class.
      reference: the reference model's top-1 on them.
      model: the model's top-1 on them.
    """

    label: int
    images: int
    reference: float
    model: float


def largest_class_drop(reference_classes: np.ndarray, model_classes: np.ndarray,
                       labels: np.ndarray) -> Optional[ClassDrop]:
    """The class whose top-1 `model_classes` lowers most against `reference_classes` (the
    lowest label on a tie), or None when it lowers none.

    Overall top-1 can hide a quantized model that fails one class: gains elsewhere offset it.

    Args:
      reference_classes: (N,) classes the reference (FP32) model predicts.
      model_classes: (N,) classes the model predicts.
      labels: (N,) true classes.
    """
    labels = np.asarray(labels)
    if not np.asarray(reference_classes).shape == np.asarray(model_classes).shape == labels.shape:
        raise ValueError("the predicted classes and the labels must have one shape")
    lost = (np.asarray(reference_classes) == labels).astype(np.int64) - (np.asarray(model_classes) == labels)
    classes, index = np.unique(labels, return_inverse=True)
    drop = np.bincount(index, weights=lost, minlength=len(classes)) / np.bincount(index, minlength=len(classes))
    worst = int(np.argmax(drop))
    if drop[worst] <= 0:
        return None
    chosen = index == worst
    return ClassDrop(label=int(classes[worst]), images=int(chosen.sum()),
                     reference=float(np.mean(np.asarray(reference_classes)[chosen] == labels[chosen])),
                     model=float(np.mean(np.asarray(model_classes)[chosen] == labels[chosen])))


# A class "mostly predicted as another" when that other class takes at least this share of its
# images; the labels look misordered when at least `MISLABELLED_CLASSES_SHARE` of the classes
# (and two) are.
MOSTLY_ANOTHER_CLASS = 0.5
MISLABELLED_CLASSES_SHARE = 0.2
# Label mappings shown in the warning.
SHOWN_MAPPINGS = 3


def label_order_warning(reference_classes: np.ndarray, labels: np.ndarray, num_classes: int,
                        label_names=(), output_names=(), from_class_folders: bool = True) -> Optional[str]:
    """A warning when the FP32 teacher's predictions say the evaluation labels (named
    `label_names`) are not its output indices (named `output_names`): class folders sorted
    in another order than the teacher's outputs, or images read with the wrong
    preprocessing. Else None. `from_class_folders`: the labels are class folders' (the
    warning says how those are read), not a dataset's own.

    For each label, the class the teacher predicts most often: when for at least
    `MISLABELLED_CLASSES_SHARE` of the labels (and two) that is another class, taking at least
    `MOSTLY_ANOTHER_CLASS` of the label's images, the labels look misordered. A poor teacher
    spreads its errors instead.
    """
    labels, reference_classes = np.asarray(labels), np.asarray(reference_classes)
    label_values = np.unique(labels)
    mappings = []
    for label in label_values:
        predicted = np.bincount(reference_classes[labels == label], minlength=num_classes)
        most = int(np.argmax(predicted))
        if most != label and predicted[most] >= MOSTLY_ANOTHER_CLASS * predicted.sum():
            mappings.append((int(label), most))
    if len(mappings) < max(2, MISLABELLED_CLASSES_SHARE * len(label_values)):
        return None

    def named(index, names):
        return f"{index} ({names[index]!r})" if len(names) > index else str(index)

    shown = ", ".join(f"label {named(label, label_names)} -> output {named(output, output_names)}"
                      for label, output in mappings[:SHOWN_MAPPINGS])
    top1 = float(np.mean(reference_classes == labels))
    return (f"the FP32 teacher scores {100 * top1:.2f}% on the evaluation data, and for {len(mappings)} of its "
            f"{len(label_values)} labels it mostly predicts another class ({shown}"
            f"{', ...' if len(mappings) > SHOWN_MAPPINGS else ''}): are the labels in the teacher's output order, "
            "and the preprocessing right?" + (" (class folders are taken in sorted order, unless a sidecar's "
                                              "class_names match them by name)" if from_class_folders else ""))


@dataclasses.dataclass(frozen=True)
class LatencyResult:
    """Single-sample latency of a TFLite model on this machine's CPU.

    Attributes:
      median_ms: median over the timed runs, in milliseconds.
      p90_ms: 90th percentile, in milliseconds.
      runs: timed runs (warm-up runs excluded).
      threads: interpreter threads.
    """

    median_ms: float
    p90_ms: float
    runs: int
    threads: int

    def format(self) -> str:
        return (f"median {self.median_ms:.3f} ms, p{LATENCY_PERCENTILE} {self.p90_ms:.3f} ms "
                f"({self.runs} runs, {self.threads} threads)")


def _latency_input(interpreter, details: dict, seed: Optional[int]) -> None:
    """Sets one random input of the model's shape and type."""
    random = np.random.default_rng(seed)
    if np.issubdtype(details["dtype"], np.integer):
        limits = np.iinfo(details["dtype"])
        sample = random.integers(limits.min, limits.max, size=details["shape"],
                                 endpoint=True).astype(details["dtype"])
    else:
        sample = random.standard_normal(details["shape"]).astype(details["dtype"])
    interpreter.set_tensor(details["index"], sample)


def measure_latencies(models: Mapping[str, bytes], num_threads: int = DEFAULT_NUM_THREADS,
                      runs: int = DEFAULT_LATENCY_RUNS,
                      warmup: int = DEFAULT_LATENCY_WARMUP,
                      seed: Optional[int] = 0) -> Dict[str, LatencyResult]:
    """Times `invoke()` of each model on one random input, the models taking turns.

    Each model's timed runs are split into up to `LATENCY_TURNS` turns, and the models take
    their turns in rotation, so that a slow spell of the machine (another process busy for
    a while) falls on every model compared rather than on whichever was being timed: 200
    runs of a small model take a twentieth of a second.

    Args:
      models: name -> TFLite flatbuffer.
      num_threads: interpreter threads.
      runs: timed runs per model.
      warmup: untimed runs of each model first (allocation, caches); may be 0.
      seed: seed of the random input.

    Returns:
      name -> latency summary, in the order of `models`.
    """
    _check_positive_int("runs", runs)
    if isinstance(warmup, bool) or not isinstance(warmup, (int, np.integer)) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}")
    classifiers = {name: TfliteClassifier(model_bytes, num_threads=num_threads) for name, model_bytes in models.items()}
    interpreters = {name: classifier._interpreter  # pylint: disable=protected-access
                    for name, classifier in classifiers.items()}
    for name, interpreter in interpreters.items():
        _latency_input(interpreter, classifiers[name].input_details, seed)
        for _ in range(warmup):
            interpreter.invoke()
    turns = min(LATENCY_TURNS, int(runs))
    runs_per_turn = [runs // turns + (1 if turn < runs % turns else 0) for turn in range(turns)]
    durations_ms = {name: [] for name in interpreters}
    for turn_runs in runs_per_turn:
        for name, interpreter in interpreters.items():
            for _ in range(turn_runs):
                start = time.perf_counter()
                interpreter.invoke()
                durations_ms[name].append((time.perf_counter() - start) * MILLISECONDS_PER_SECOND)
    return {name: LatencyResult(median_ms=float(np.median(durations)),
                                p90_ms=float(np.percentile(durations, LATENCY_PERCENTILE)),
                                runs=int(runs), threads=int(num_threads))
            for name, durations in durations_ms.items()}


def measure_latency(model_bytes: bytes, num_threads: int = DEFAULT_NUM_THREADS,
                    runs: int = DEFAULT_LATENCY_RUNS,
                    warmup: int = DEFAULT_LATENCY_WARMUP,
                    seed: Optional[int] = 0) -> LatencyResult:
    """Times `invoke()` of one model on one random input, after `warmup` untimed runs
    (`measure_latencies` of that model alone)."""
    return measure_latencies({"model": model_bytes}, num_threads, runs, warmup, seed)["model"]
