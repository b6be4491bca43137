"""What a run measured, in words: `report.md` from the `report.json` the pipeline writes.

The report gives the teacher, the generator's training (loss terms at the first and
last step, wall time, samples per second overall and after the first step), how often
the teacher classifies generated samples as the class asked for, the QAT losses, the
top-1 of every model on held-out real data against FP32's, and the TFLite files' sizes
and latency.
"""

import math
from typing import Optional

from zscgan_tf import quantization_stages, quantize
from zscgan_tf.progress import count_of, format_duration
from zscgan_tf.run_state import GENERATOR_FROM_KEY
from zscgan_tf.teacher_training import BATCHNORM_REESTIMATION_MAX_IMAGES

REPORT_JSON_FILE = "report.json"
REPORT_MARKDOWN_FILE = "report.md"
# In a report's training summary: the stage was found done, so its figures are from the earlier
# session that trained it, not from this one (which trained nothing).
EARLIER_SESSION_KEY = "trained_in_an_earlier_session"
# Who trained a stage that this session found done: one earlier session or several, the last had its figures.
LAST_SESSION = "the last session that trained it"
SAMPLES_FILE = "samples.png"
# Rows of report.md's per-class table of generated samples; beyond it, the classes of lowest agreement.
PER_CLASS_ROWS_SHOWN = 20
# The fully-integer models' names in the report's top-1 table, and their files.
INTEGER_TFLITE_FILES = {"ptq_int8_tflite": quantization_stages.PTQ_TFLITE_FILE,
                        "qat_int8_tflite": quantization_stages.QAT_TFLITE_FILE}
# Below this share of generated samples the teacher classifies as requested, the generator
# has not learned the classes, and what learned from its samples is suspect.
MIN_GENERATED_AGREEMENT = 0.5


def generator_training_summary(generator_state: dict) -> dict:
    """The generator stage's training summary from its `state.json` entry.

    One generator: its summary. A pool: the first generator's (its loss terms stand for
    the stage), with the wall time and samples/s of all the trainings, which ran one after
    the other; `generators`, their number; the step this session's first training started
    from (`resumed_from_step`: the pool's steps where none trained); and
    `generators_trained_before`, those it kept as trained in earlier sessions.
    """
    summary = generator_state.get("summary", {})
    members = generator_state.get("members")
    if not members:
        return summary
    wall_seconds = sum(member["wall_seconds"] for member in members)
    samples = sum(member["samples_per_second"] * member["wall_seconds"] for member in members)
    totals = [member.get("total_wall_seconds") for member in members]
    total = {} if None in totals else {"total_wall_seconds": sum(totals),
                                       "total_wall_time": format_duration(sum(totals))}
    # A pool grown by one said it resumed at its last step (the largest start), the new generator trained from 0.
    trained = [member for member in members if member["resumed_from_step"] < member["steps"]]
    kept = len(members) - len(trained)
    return {**summary, "generators": len(members), "wall_seconds": wall_seconds,
            "wall_time": format_duration(wall_seconds), **total,
            "samples_per_second": samples / wall_seconds if wall_seconds else 0.0,
            "steady_samples_per_second": _steady_samples_per_second(members),
            "resumed_from_step": next((member["resumed_from_step"] for member in trained),
                                      max(member["steps"] for member in members)),
            **({"generators_trained_before": kept} if kept else {})}


def _all_sessions(summary: dict, also: str = "") -> str:
    """" (1m20s over every session)" for a training resumed from an earlier session, with `also`
    in the same brackets (" (1m20s over every session; this one trained none)"); "" for a training
    of one session, with nothing to add. Where the earlier sessions' time is not known
    (`training_loop.TrainingSummary.total_wall_seconds`: checkpoints of an earlier version), it says so."""
    parts = []
    if summary.get("resumed_from_step") or summary.get("generators_trained_before"):
        parts.append(f"{summary['total_wall_time']} over every session" if summary.get("total_wall_time")
                     else "the earlier sessions' time is not recorded")
    if also:
        parts.append(also)
    return f" ({'; '.join(parts)})" if parts else ""


def _steady_samples_per_second(members: list) -> float:
    """The pool's throughput after each training's first step (see `training_loop.TrainingSummary`):
    the samples trained after it over the time taken after it, summed over the trainings, which
    ran one after the other; 0 where a training of this session predates the figure."""
    samples = seconds = 0.0
    for member in members:
        if "first_step_seconds" not in member:  # Recorded by an older version, which did not split its time.
            if member["wall_seconds"]:
                return 0.0
            continue
        after_first_step = member["wall_seconds"] - member["first_step_seconds"]
        samples += member["steady_samples_per_second"] * after_first_step
        seconds += after_first_step
    return samples / seconds if seconds > 0 else 0.0


# How the metrics `tools/train_teacher.py` records read in a report.
TEACHER_METRIC_WORDS = {"test_accuracy": "test top-1", "test_accuracy_training_mode": "test top-1 in training mode",
                        # On the training images its BN statistics were re-estimated on: a random subset, the
                        # classes in their proportions.
                        "train_accuracy": f"train top-1 (on at most {BATCHNORM_REESTIMATION_MAX_IMAGES:,} training "
                                          "images)"}


def _teacher_metrics(metrics: dict) -> str:
    """A sidecar's training metrics in words: "test top-1 92.78%, ..., 2 epochs, trained in 0m03s"."""
    parts = []
    for name, value in metrics.items():
        number = isinstance(value, (int, float))
        if (name in TEACHER_METRIC_WORDS or name.endswith("accuracy")) and number:
            parts.append(f"{TEACHER_METRIC_WORDS.get(name, name.replace('_', ' '))} {100 * value:.2f}%")
        elif name == "epochs" and number:
            parts.append(count_of(int(value), "epoch"))
        elif name == "wall_seconds" and number:
            parts.append(f"trained in {format_duration(value)}")
        elif value is None and (name in TEACHER_METRIC_WORDS or name.endswith("accuracy")):
            # NaN or infinite in the sidecar, null in report.json: it read "None".
            parts.append(f"{TEACHER_METRIC_WORDS.get(name, name.replace('_', ' '))} not a finite number")
        else:
            parts.append(f"{name.replace('_', ' ')} {value}")
    return ", ".join(parts)


def generated_samples_warning(report: dict) -> Optional[str]:
    """A warning when the teacher classifies too few generated samples as requested; else None."""
    agreement = report["generated_samples"]["teacher_agreement"]
    if agreement >= MIN_GENERATED_AGREEMENT:
        return None
    steps = report["generator_training"].get("steps")
    trained = f" in {count_of(steps, 'step')}" if steps else ""
    return (f"the teacher classifies only {_rough_percent(agreement)} of generated samples as the class asked for: the "
            f"generator has not learned the classes{trained}, and the int8 models were calibrated (and any QAT "
            "student trained) on its samples; train it longer (--generator_steps)")


def _rough_percent(fraction: float) -> str:
    """"10%", or for less than one percent as many decimals as show it: "0.1%" (not "0%")."""
    percent = 100 * fraction
    return f"{percent:.0f}%" if percent >= 1 or percent == 0 else f"{percent:.2g}%"


def format_report(report: dict) -> str:
    """The report as markdown for people."""
    teacher = report["teacher"]
    training = report["generator_training"]
    samples = report["generated_samples"]
    lines = [
        f"# zscgan_tf report: {teacher['name']}",
        "",
        f"Teacher: {teacher['name']}, input {'x'.join(str(v) for v in teacher['image_shape'])}, "
        f"{teacher['num_classes']} classes, {teacher['batchnorm_layers']} BN layers, "
        f"{teacher['parameters']:,} parameters, preprocessing `{teacher['preprocessing']['mode']}`.",
    ]
    if teacher.get("metrics"):
        lines.append(f"Teacher metrics from training: {_teacher_metrics(teacher['metrics'])}.")
    lines += [f"Warning: {warning}." for warning in teacher.get("warnings", ())]
    lines += ["", "## Generator training", ""]
    if report.get(GENERATOR_FROM_KEY):
        lines += [f"Taken from the run in {report[GENERATOR_FROM_KEY]} (`--generator_from`), where it trained; "
                  + ("then trained on or pooled anew here: the loss terms span its whole training, the wall time is "
                     "this session's." if report.get("generator_trained_here") else "the figures below are from there."),
                  ""]
    if training:
        first, last = training["first"], training["last"]
        session = LAST_SESSION if training.get(EARLIER_SESSION_KEY) else "this session"
        generators = training.get("generators")
        kept = training.get("generators_trained_before")
        # Restored, none trained (a pool shrunk, or its generators' files lost): "this session from step 4, 0m00s".
        if not training.get(EARLIER_SESSION_KEY) and training["resumed_from_step"] == training["steps"]:
            lines += [f"- steps: {training['steps']} (trained in earlier sessions; this one trained none)",
                      "- wall time: " + (f"{training['total_wall_time']} over every session"
                                         if training.get("total_wall_time") else "not recorded")
                      + (f" ({generators} generators, one after the other)" if generators else "")]
        else:
            lines += [
                f"- steps: {training['steps']} ({session} from step {training['resumed_from_step']}"
                + ("; this one trained none" if training.get(EARLIER_SESSION_KEY) else "")
                + (f"; {kept} of the {generators} generators trained before it" if kept else "") + ")",
                f"- wall time of {session}: {training['wall_time']}{_all_sessions(training)}, "
                f"{_samples_per_second(training)}"
                + (f" ({generators} generators, one after the other)" if generators else "")]
        lines += ["", *([f"Loss terms of generator 1 of {generators}:", ""] if generators else []),
                  "| term | first step | last step |", "|---|---|---|"]
        for term in ("total", "cross_entropy", "bn_statistics", "diversity", "mode_seeking", "accuracy"):
            if term in first and term in last:  # Histories from before a term existed lack it.
                lines.append(f"| {term} | {first[term]:#.4g} | {last[term]:#.4g} |")
        if report["bn_statistics_reduction"]:
            lines += ["", f"BN-statistics loss fell {report['bn_statistics_reduction']:.1f}-fold."]
    lines += [
        "", "## Generated samples judged by the teacher", "",
        f"{samples['samples_per_class']} samples per class, generator and teacher in inference mode: "
        f"{100 * samples['teacher_agreement']:.2f}% classified as the requested class "
        f"(worst class {100 * samples['worst_class_agreement']:.2f}%), mean confidence "
        f"{samples['mean_confidence']:.3f}. "
        + (f"Within-class spread (standard deviation over a class's samples, in teacher input units): "
           f"{samples['within_class_spread']:.3g}; near 0 means one image per class."
           if samples["samples_per_class"] > 1 else "Within-class spread: needs at least 2 samples per class."),
        "",
    ]
    warning = generated_samples_warning(report)
    if warning:
        lines += [f"Warning: {warning}.", ""]
    agreement = samples["per_class_agreement"]
    shown = range(len(agreement))
    if len(agreement) > PER_CLASS_ROWS_SHOWN:  # ImageNet's 1,000 rows would bury the rest of the report.
        shown = sorted(sorted(shown, key=lambda label: agreement[label])[:PER_CLASS_ROWS_SHOWN])
        lines += [f"The {PER_CLASS_ROWS_SHOWN} classes of lowest agreement ({REPORT_JSON_FILE} has all "
                  f"{len(agreement)}):", ""]
    lines += ["| class | agreement |", "|---|---|"]
    lines += [f"| {label} | {100 * agreement[label]:.1f}% |" for label in shown]
    lines += ["", f"![samples]({SAMPLES_FILE})", ""]
    lines += _format_quantization(report["quantization"])
    return "\n".join(lines)


def _samples_per_second(summary: dict) -> str:
    """A training's throughput in words: "1973 samples/s (3252 after the first step, which compiles
    the training step)", the second figure where the summary has it."""
    words = f"{summary['samples_per_second']:.0f} samples/s"
    steady = summary.get("steady_samples_per_second")
    if steady:
        words += f" ({steady:.0f} after the first step, which compiles the training step)"
    return words


def _format_quantization(quantization: dict) -> list:
    if "summary" not in quantization:  # --distillation_steps=0: --quantization names no model of this run.
        lines = ["## Quantization", "", "No QAT (--distillation_steps=0): the int8 model is the teacher's, quantized "
                 f"after training at 8 bits (`{quantization_stages.PTQ_TFLITE_FILE}`)."]
    else:
        scheme = quantize.QuantizationScheme.from_name(quantization["scheme"],
                                                       low_bit_ranges=quantization.get("low_bit_ranges", "min_max"))
        details = ([] if not scheme.uses_n_bit_scheme or quantization.get("keep_first_and_last_at_8_bits") is None
                   else ["first and last layers at 8 bits" if quantization["keep_first_and_last_at_8_bits"]
                         else "every layer at these widths"])
        details += ["per-tensor weights"] if quantization.get("per_channel") is False else []
        details += ["ranges below 8 bits fitted by least squares, held during QAT"] if (
            scheme.holds_ranges_in_training) else []
        lines = ["## Quantization", "", f"Scheme: {scheme.name}" + (f" ({'; '.join(details)})." if details else ".")]
        summary = quantization["summary"]
        first, last = summary["first"], summary["last"]
        earlier = quantization.get(EARLIER_SESSION_KEY)
        trained_by = LAST_SESSION if earlier else "this session"
        resumed = summary.get("resumed_from_step")  # The steps before it trained in an earlier session.
        lines.append(f"Data-free QAT: {summary['steps']} steps"
                     + (f" ({trained_by} from step {resumed})" if resumed else "")
                     + f", {summary['wall_time']} "
                     + ("this session" if not earlier else "in that session" if resumed else f"in {LAST_SESSION}")
                     + _all_sessions(summary, "this one trained none" if earlier else "") + ", "
                     f"{_samples_per_second(summary)}"
                     + (f"; distillation loss {first['distillation']:#.4g} -> {last['distillation']:#.4g}"
                        if "distillation" in first and "distillation" in last else "")  # Not with a lost history.
                     + (f", feature term {first['features']:#.4g} -> {last['features']:#.4g}"
                        if first.get("features") and "features" in last else "") + ".")
        if not scheme.exportable:
            lines.append(f"The {scheme.name} student is simulation only: TFLite has no kernels below 8 bits, so it is "
                         f"measured in Keras (`{scheme.name}_qat_keras`) and not exported; the int8 model is the "
                         f"teacher's, quantized after training at 8 bits (`{quantization_stages.PTQ_TFLITE_FILE}`).")
    if "io_dtype" in quantization:  # The export's settings were config.json's alone.
        lines.append(f"The int8 files: {quantization['io_dtype']} input and output, "
                     f"{'per-channel' if quantization['per_channel'] else 'per-tensor'} weights, calibrated on "
                     f"{quantization['calibration_samples']:,} generated samples"
                     + ("; ops without int8 kernels may stay float (--allow_float_ops)"
                        if quantization.get("allow_float_ops") else "") + ".")
    if quantization.get("float_layers"):
        lines.append(f"Layers left float by TF-MOT: {', '.join(quantization['float_layers'])}.")
    if "top1" in quantization:
        top1, images = quantization["top1"], quantization["images"]
        reference = top1.get("fp32_keras")
        # No split: a folder of class folders without split sub-folders, read whole.
        what = (f"{quantization['dataset']} {quantization['split']} images" if quantization["split"]
                else f"images of {quantization['dataset']} (the whole folder)")
        preparation = "".join(f"{step}, " for step in quantization.get("preparation", ()))
        if quantization.get("label_order_warning"):
            lines += ["", f"Warning: {quantization['label_order_warning']}."]
        lines += ["", f"Top-1 on {images:,} {what} "
                  f"({preparation}one image is {100 / images:.2g} points):", "",
                  "| model | top-1 | against FP32 | same class as FP32 | class furthest below FP32 |",
                  "|---|---|---|---|---|"]
        same_class = quantization.get("same_class_as_fp32", {})
        drops = quantization.get("largest_class_drop", {})
        decimals = percent_decimals(images)
        for name, value in top1.items():
            against = "" if reference is None or name == "fp32_keras" else f"{100 * (value - reference):+.{decimals}f}"
            same = f"{100 * same_class[name]:.{decimals}f}%" if name in same_class else ""
            lines.append(f"| {name} | {100 * value:.{decimals}f}% | {against} | {same} | "
                         f"{_class_drop(drops.get(name))} |")
        for name, value in quantization.get("agreement", {}).items():
            lines.append(f"\nArgmax agreement {name}: {100 * value:.{decimals}f}% (both on the same input: the pixels "
                         "as the int8 file reads them).")
        integer = {name: value for name, value in top1.items() if name in INTEGER_TFLITE_FILES}
        if integer:
            best = max(integer.values())
            files = " and ".join(f"`{INTEGER_TFLITE_FILES[name]}`" for name, value in integer.items() if value == best)
            kind = "int8" if quantization.get("float_ops") else "fully-integer"
            lines.append(f"\nMost accurate {kind} model on these images: {files} ({100 * best:.{decimals}f}%).")
    for kind, counts in quantization.get("float_ops", {}).items():
        ops = ", ".join(f"{name} x{count}" for name, count in counts.items())
        lines.append(f"\n`{INTEGER_TFLITE_FILES[kind + '_tflite']}` is int8 with float ops inside "
                     f"(--allow_float_ops; `{quantization_stages.EXPORT_REPORT_FILE}` names them): {ops}.")
    if quantization.get("edge_tpu"):
        verdicts = "; ".join(f"`{INTEGER_TFLITE_FILES[kind + '_tflite']}` {verdict}"
                             for kind, verdict in quantization["edge_tpu"].items())
        lines.append(f"\nCoral Edge TPU (a static check, the Edge TPU compiler was not run; "
                     f"`{quantization_stages.EXPORT_REPORT_FILE}` has the details): {verdicts}.")
    if "sizes_bytes" in quantization:
        runs = quantization.get("latency_runs")  # Not in reports of earlier versions.
        lines += ["", f"Latency: the median of {count_of(runs, 'run') if runs else 'the runs'} on one image, in "
                  "LiteRT's default interpreter (with its XNNPACK delegate), the files timed in turns.", "",
                  "| TFLite model | size | latency 1 thread | latency 2 threads |", "|---|---|---|---|"]
        for kind, size in quantization["sizes_bytes"].items():
            latency = quantization["latency_median_ms"][kind]
            lines.append(f"| {kind} | {size / 1024:.1f} KiB | {latency['1']:.3f} ms | {latency['2']:.3f} ms |")
    lines.append("")
    return lines


def percent_decimals(images: int) -> int:
    """Decimals for percentages over `images` images: 2, or as many more as keep one image's
    difference from rounding away (3 for ImageNet's 50,000, where one image is 0.002 points)."""
    return max(2, math.ceil(math.log10(max(images, 1) / 200)))


def _class_drop(drop: Optional[dict]) -> str:
    """A `largest_class_drop` entry in words: "6 (Shirt): 75.30% against 78.10%, 1000 images"."""
    if not drop:
        return ""
    name = f" ({drop['name']})" if drop.get("name") not in (None, str(drop["class"])) else ""
    return (f"{drop['class']}{name}: {100 * drop['model']:.2f}% against {100 * drop['fp32']:.2f}%, "
            f"{count_of(drop['images'], 'image')}")
