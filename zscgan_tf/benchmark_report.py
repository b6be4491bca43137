"""The benchmark's verdicts and its report: targets per teacher, results.md.

Pure functions of the results `benchmark_rows` computes (rows and measurements as
stored in rows.json), so that a report can be re-rendered or checked without rerunning
anything.
"""

import numpy as np

from zscgan_tf import progress
from zscgan_tf.evaluation_stage import LATENCY_THREADS

SOURCE_LABELS = {"real": "real-data", "zscgan": "ZS-CGAN"}  # The calibration sources of the spreads.
# The targets, in accuracy points.
# Figures are 100 * k / n in floating point: a gap of exactly the margin (79.30 against
# 80.30) must count as within it, not fall either side by rounding.
ROUNDING_SLACK_POINTS = 1e-9
W8A8_TOLERANCE_POINTS = 0.1
W4A4_VERSUS_REAL_QAT_POINTS = 1.0
W4A4_VERSUS_FP32_POINTS = 2.0  # Checked for ResNet teachers only.
MAX_INT8_SIZE_RATIO = 0.27
MIN_COMPILED_SPEEDUP = 1.5
REPRODUCIBILITY_POINTS = 0.3  # How far a rerun's row may move from an earlier run's (--compare_to).


def points(value: float) -> str:
    """A fraction as accuracy points with two decimals: 0.9062 -> "90.62"."""
    return f"{100 * value:.2f}"


def targets(teacher_name: str, rows: dict, measurements: dict) -> list:
    """Each target as {id, target, met, detail, measured, comparison, required, unit}: `met` is
    whether `measured <comparison> required` (">=", ">", "<=" or "<"; accuracy in points, within
    `ROUNDING_SLACK_POINTS`); `id` stays the same from run to run, where `target` is prose.
    Targets whose rows are missing are left out."""
    top1 = {row_id: 100 * row["top1"] for row_id, row in rows.items()}
    checks = []

    def check(target_id, name, figures, needed=()):
        """`figures()`: (measured, comparison, required, unit, detail), once the rows `needed` are there."""
        if all(row_id in top1 for row_id in needed):
            measured, comparison, required, unit, detail = figures()
            slack = ROUNDING_SLACK_POINTS if unit == "points" else 0.0
            met = {">=": measured >= required - slack, ">": measured > required,
                   "<=": measured <= required + slack, "<": measured < required}[comparison]
            checks.append({"id": target_id, "target": name, "met": bool(met), "detail": detail,
                           "measured": measured, "comparison": comparison, "required": required, "unit": unit})

    spread = measurements.get("ptq_spread")
    # The real-data PTQ figure is one calibration draw; with the spread measured, say how far others go.
    real_draws = "" if not spread else (
        f" (over {spread['draws']} other draws {100 * min(draw['top1'] for draw in spread['real']):.2f}-"
        f"{100 * max(draw['top1'] for draw in spread['real']):.2f})")
    for row_id in ("zscgan_ptq", "zscgan_qat_w8a8"):
        check(f"{row_id}_within_fp32", f"{rows.get(row_id, {}).get('label', row_id)} within {W8A8_TOLERANCE_POINTS} "
              "point of FP32 and not below real-data PTQ",
              lambda r=row_id: (top1[r], ">=", max(top1["fp32"] - W8A8_TOLERANCE_POINTS, top1["real_ptq"]), "points",
                                f"{top1[r]:.2f} vs FP32 {top1['fp32']:.2f} ({top1[r] - top1['fp32']:+.2f}), "
                                f"real-data PTQ {top1['real_ptq']:.2f}{real_draws}"),
              (row_id, "fp32", "real_ptq"))
    # W4A4 QAT moves by a point or more with the distillation seed and the generators drawn; with
    # repeats measured, the targets compare the means over the row's own run and the repeats.
    w4a4, w4a4_runs = w4a4_figures(top1, measurements.get("w4a4_spread"), measurements.get("w4a4_pool_spread"))
    check("zscgan_qat_w4a4_within_real_qat",
          f"ZS-CGAN QAT W4A4 within {W4A4_VERSUS_REAL_QAT_POINTS} point of real-data QAT W4A4{w4a4_runs}",
          lambda: (w4a4["zscgan"], ">=", w4a4["real"] - W4A4_VERSUS_REAL_QAT_POINTS, "points",
                   f"{w4a4['zscgan']:.2f} vs {w4a4['real']:.2f} ({w4a4['zscgan'] - w4a4['real']:+.2f})"),
          ("zscgan_qat_w4a4", "real_qat_w4a4"))
    if "resnet" in teacher_name.lower():
        check("zscgan_qat_w4a4_within_fp32",
              f"ZS-CGAN QAT W4A4 within {W4A4_VERSUS_FP32_POINTS} points of FP32 (ResNet){w4a4_runs}",
              lambda: (w4a4["zscgan"], ">=", top1["fp32"] - W4A4_VERSUS_FP32_POINTS, "points",
                       f"{w4a4['zscgan']:.2f} vs {top1['fp32']:.2f} ({w4a4['zscgan'] - top1['fp32']:+.2f})"),
              ("zscgan_qat_w4a4", "fp32"))
    for baseline in ("noise_ptq", "distilled_ptq"):
        check(f"zscgan_ptq_above_{baseline}", f"ZS-CGAN PTQ above {rows.get(baseline, {}).get('label', baseline)}",
              lambda b=baseline: (top1["zscgan_ptq"], ">", top1[b], "points",
                                  f"{top1['zscgan_ptq']:.2f} vs {top1[b]:.2f}"),
              ("zscgan_ptq", baseline))
    sizes = {row_id: row["tflite_bytes"] for row_id, row in rows.items() if "tflite_bytes" in row}
    for row_id in ("zscgan_ptq", "zscgan_ptq_per_tensor"):
        if row_id in sizes and "fp32" in sizes:
            ratio = sizes[row_id] / sizes["fp32"]
            check(f"{row_id}_size", f"{rows[row_id]['label']}: int8 file at most {MAX_INT8_SIZE_RATIO} of the float "
                  "file", lambda r=row_id, ratio=ratio: (
                      ratio, "<=", MAX_INT8_SIZE_RATIO, "ratio",
                      f"{sizes[r] / 1024:.1f} KiB / {sizes['fp32'] / 1024:.1f} KiB = {ratio:.3f}"))
    latency = measurements.get("latency")
    if latency:  # Of the float teacher and the ZS-CGAN PTQ int8 file (`benchmark_rows`).
        for threads in LATENCY_THREADS:
            float_ms, int8_ms = latency[f"float_{threads}_threads_ms"], latency[f"int8_{threads}_threads_ms"]
            check(f"int8_latency_{threads}_threads",
                  f"int8 faster than float in LiteRT ({threads} thread{'s' * (threads > 1)})",
                  lambda f=float_ms, i=int8_ms: (i, "<", f, "ms", f"{i:.3f} ms vs {f:.3f} ms ({f / i:.2f}x)"))
    speed = measurements.get("generator_speed")
    if speed:
        check("compiled_generator_speedup", f"compiled generator step at least {MIN_COMPILED_SPEEDUP}x the eager one",
              lambda: (speed["speedup"], ">=", MIN_COMPILED_SPEEDUP, "x",
                       f"{speed['compiled_samples_per_second']:.0f} vs {speed['eager_samples_per_second']:.0f} "
                       f"samples/s ({speed['speedup']:.2f}x)"))
    return checks


def w4a4_figures(top1: dict, spread, pool_spread=None) -> tuple:
    """({"zscgan": points, "real": points}, how they were formed) for the W4A4 targets: the rows'
    own top-1; with `spread` measured the mean over each row and its repeats; with `pool_spread`
    measured as well, ZS-CGAN's is the mean over every generator pool of those means."""
    figures = {source: top1.get(f"{source}_qat_w4a4") for source in SOURCE_LABELS}
    if None in figures.values() or not (spread or pool_spread):
        return figures, ""
    means = {source: float(np.mean([figures[source]] + [100 * run["top1"] for run in spread[source]]))
             if spread else figures[source] for source in SOURCE_LABELS}
    parts = [f"means over {spread['draws'] + 1} distillation seeds each"] if spread else []
    if pool_spread:
        means["zscgan"] = float(np.mean([means["zscgan"]] + [pool_mean(pool) for pool in pool_spread["pools"]]))
        parts.append(f"ZS-CGAN's {'' if spread else 'mean '}over {pool_spread['draws'] + 1} generator pools")
    return means, f" ({', '.join(parts)})"


def pool_mean(pool: dict) -> float:
    """A further generator pool's mean W4A4 top-1 over its distillation seeds, in points."""
    return float(np.mean([100 * run["top1"] for run in pool["runs"]]))


def format_results(results: dict) -> str:
    """results.md: the settings, then per teacher its table of rows, measurements and verdicts."""
    settings = results["settings"]
    lines = ["# Data-free quantization benchmark", "",
             f"QAT: {settings['qat_steps']} steps of {settings['qat_batch_size']} samples (lr "
             f"{settings['qat_learning_rate']}"
             + ("; ranges below 8 bits fitted by least squares and held" if settings.get("low_bit_ranges") == "mse"
                else "") + f"); generator: {settings['generator_steps']} steps of "
             f"{settings['generator_batch_size']}"
             + (f", blur sigma {settings['generator_blur_sigma']:g} px" if settings.get("generator_blur_sigma") else "")
             + (f", {settings['generator_pool_size']} generators pooled"
                if settings.get("generator_pool_size", 1) > 1 else "")
             + (f", BN layers weighted by {settings['bn_layer_weighting']}"
                if settings.get("bn_layer_weighting", "uniform") != "uniform" else "")
             + f"; calibration: {settings['calibration_samples']} samples; "
             f"seed {settings['seed']}.", ""]
    if "wall_seconds_this_session" in results:
        lines += [f"This invocation took {progress.format_duration(results['wall_seconds_this_session'])} "
                  "(rows already in the work directory are reused, not recomputed).", ""]
    for name, result in results["teachers"].items():
        preparation = ", ".join(result.get("eval_preparation", ()))
        lines += [f"## {name}", "", f"Top-1 on {result['eval_images']:,} {result['dataset']} test images"
                  + (f" ({preparation})." if preparation else "."), "",
                  "| row | top-1 | measured | time |", "|---|---|---|---|"]
        # JSON files sort their keys; the table keeps the order the rows run in.
        order = ["fp32", "real_ptq", "noise_ptq", "distilled_ptq", "zscgan_ptq", "zscgan_ptq_per_tensor"] + [
            f"{source}_qat_{scheme}" for scheme in settings["schemes"] for source in ("zscgan", "real")]
        for row in sorted(result["rows"].values(), key=lambda row: order.index(row["id"])):
            notes = ([f"Keras {points(row['keras_top1'])}%"] if "keras_top1" in row else []) + (
                [f"FP32 on its input {points(row['fp32_on_its_input'])}%"] if "fp32_on_its_input" in row else [])
            measured = row["measured"] + (f" ({'; '.join(notes)})" if notes else "")
            lines.append(f"| {row['label']} | {points(row['top1'])}% | {measured} | {row['seconds']:.0f} s |")
        if any("fp32_on_its_input" in row for row in result["rows"].values()):
            lines += ["", "TFLite models read the test images' pixels quantized as on a device, every pixel level "
                      "kept. \"FP32 on its input\": the float teacher on the input an int8 model computes on, "
                      "what its input's quantization alone costs."]
        lines += format_measurements(result)
        lines += ["", "Targets:", ""]
        lines += [f"- {'met' if t['met'] else 'MISSED'}: {t['target']}: {t['detail']}" for t in result["targets"]]
        lines += format_reproducibility(result.get("reproducibility"))
        lines.append("")
    return "\n".join(lines)


def format_measurements(result: dict) -> list:
    """Sizes, latency, generator speed and stage times of one teacher, as markdown lines."""
    lines = []
    sizes = {row_id: row["tflite_bytes"] for row_id, row in result["rows"].items() if "tflite_bytes" in row}
    if "fp32" in sizes and "zscgan_ptq" in sizes:
        line = (f"TFLite sizes: float {sizes['fp32'] / 1024:.1f} KiB, int8 {sizes['zscgan_ptq'] / 1024:.1f} KiB "
                f"(ratio {sizes['zscgan_ptq'] / sizes['fp32']:.3f})")
        if "zscgan_ptq_per_tensor" in sizes:
            line += (f", int8 with per-tensor weights {sizes['zscgan_ptq_per_tensor'] / 1024:.1f} KiB "
                     f"(ratio {sizes['zscgan_ptq_per_tensor'] / sizes['fp32']:.3f})")
        lines += ["", line + "."]
    latency = result["measurements"].get("latency")
    if latency:
        lines += ["", "LiteRT latency per image (median, ms):", "", "| model | "
                  + " | ".join(f"{threads} thread{'s' * (threads > 1)}" for threads in LATENCY_THREADS) + " |",
                  "|---|" + "---|" * len(LATENCY_THREADS)]
        for model_name in ("float", "int8"):
            lines.append(f"| {model_name} | " + " | ".join(f"{latency[f'{model_name}_{threads}_threads_ms']:.3f}"
                                                          for threads in LATENCY_THREADS) + " |")
    lines += format_spread(result["measurements"].get("ptq_spread"), result["rows"])
    lines += format_w4a4_spread(result["measurements"].get("w4a4_spread"), result["rows"])
    lines += format_w4a4_pool_spread(result["measurements"], result["rows"])
    speed = result["measurements"].get("generator_speed")
    if speed:
        lines += ["", f"Generator step (batch {speed['batch_size']}): compiled {speed['compiled_samples_per_second']:.0f}"
                      f" samples/s, eager {speed['eager_samples_per_second']:.0f} samples/s ({speed['speedup']:.2f}x); "
                      f"{speed['flops_per_step'] / 1e9:.3g} GFLOP per step, "
                      f"{speed['flops_per_step'] / speed['compiled_seconds'] / 1e9:.3g} GFLOP/s = "
                      f"{100 * speed['fraction_of_peak']:.0f}% of this CPU's measured peak "
                      f"({speed['peak_flops_per_second'] / 1e9:.0f} GFLOP/s, float32 matrix product)."]
    training = result.get("generator_training")
    stage_times = [f"{row['label']} {row['seconds']:.0f} s"
                   for row in [*result["rows"].values(), *result["measurements"].values()]]
    if training:
        pool = f"{training['generators']} generators, " if training.get("generators") else ""
        stage_times.insert(0, f"generator training {training['wall_time']} ({pool}{training['samples_per_second']:.0f} "
                              f"samples/s{', resumed' if training['resumed_from_step'] else ''})")
    lines += ["", "Wall time of each stage: " + "; ".join(stage_times) + "."]
    if "wall_seconds_this_session" in result:
        took = progress.format_duration(result["wall_seconds_this_session"])
        lines += ["", f"This teacher in this invocation: {took}."]
    return lines


def format_spread(spread, rows: dict) -> list:
    """The PTQ spread over calibration draws as a markdown table, with the rows' own draws beside it."""
    if not spread:
        return []
    lines = ["", f"PTQ over {spread['draws']} further calibration draws (how far one int8 top-1 moves by chance; "
                 "agreement: test images on which the int8 model picks the FP32 class):", "",
             "| calibration | top-1 mean | min | max | agreement with FP32 | the row's own draw |",
             "|---|---|---|---|---|---|"]
    for source, label in SOURCE_LABELS.items():
        top1 = [draw["top1"] for draw in spread[source]]
        agreement = float(np.mean([draw["agreement_with_fp32"] for draw in spread[source]]))
        own = rows.get(f"{source}_ptq")
        lines.append(f"| {label} | {points(float(np.mean(top1)))}% | {points(min(top1))}% | {points(max(top1))}% | "
                     f"{points(agreement)}% | {points(own['top1']) + '%' if own else '-'} |")
    return lines


def format_w4a4_spread(spread, rows: dict) -> list:
    """W4A4 QAT over further distillation seeds as a markdown table, with the rows' own runs beside it."""
    if not spread:
        return []
    seeds = f"{spread['draws']} further distillation seed{'s' * (spread['draws'] > 1)}"
    lines = ["", f"W4A4 QAT with {seeds} (how far one W4A4 top-1 moves by chance):", "",
             "| source | the row's own run | further seeds | mean of all | min | max |",
             "|---|---|---|---|---|---|"]
    for source, label in SOURCE_LABELS.items():
        own = rows.get(f"{source}_qat_w4a4")
        if not own:
            continue
        top1 = [own["top1"]] + [run["top1"] for run in spread[source]]
        lines.append(f"| {label} | {points(own['top1'])}% | {', '.join(points(t) + '%' for t in top1[1:])} | "
                     f"{points(float(np.mean(top1)))}% | {points(min(top1))}% | {points(max(top1))}% |")
    return lines


def format_w4a4_pool_spread(measurements: dict, rows: dict) -> list:
    """ZS-CGAN W4A4 QAT on each generator pool as a markdown table, the benchmark's own pool first."""
    pool_spread = measurements.get("w4a4_pool_spread")
    if not pool_spread or "zscgan_qat_w4a4" not in rows or "real_qat_w4a4" not in rows:
        return []
    spread = measurements.get("w4a4_spread")
    top1 = {row_id: 100 * row["top1"] for row_id, row in rows.items()}
    real = w4a4_figures(top1, spread)[0]["real"]
    own_runs = [rows["zscgan_qat_w4a4"]["top1"]] + [run["top1"] for run in (spread or {}).get("zscgan", [])]
    pools = [("the benchmark's own", pool_spread["generator_seed"], own_runs)] + [
        (f"further pool {index}", pool["generator_seed"], [run["top1"] for run in pool["runs"]])
        for index, pool in enumerate(pool_spread["pools"], 1)]
    lines = ["", f"ZS-CGAN W4A4 QAT on {pool_spread['draws']} further generator pool"
                 f"{'s' * (pool_spread['draws'] > 1)} (how far the W4A4 figure moves with the generators drawn; "
                 f"real-data QAT: {real:.2f}%):", "",
             "| generator pool | first member's seed | top-1 at each distillation seed | mean | gap to real-data QAT |",
             "|---|---|---|---|---|"]
    for label, seed, runs in pools:
        mean = float(np.mean([100 * run for run in runs]))
        lines.append(f"| {label} | {seed} | {', '.join(points(run) + '%' for run in runs)} | {mean:.2f}% | "
                     f"{real - mean:.2f} |")
    return lines


def format_reproducibility(reproducibility) -> list:
    """How far each row moved from an earlier run (`--compare_to`), as markdown lines."""
    if not reproducibility:
        return []
    lines = ["", f"Reproducibility against {reproducibility['compared_to']} (rows with the same settings):", ""]
    if reproducibility.get("unreadable"):  # Said as "no row there has the same settings", without a why.
        return lines + [f"- {reproducibility['unreadable']}, so no row was compared"]
    if not reproducibility["rows"]:
        return lines + ["- no row there has the same settings"]
    lines += [f"- {row['label']}: {points(row['top1'])}% vs {points(row['earlier_top1'])}% "
              f"({row['difference_points']:+.2f})" for row in reproducibility["rows"]]
    verdict = "met" if reproducibility["met"] else "MISSED"
    return lines + [f"- {verdict}: every row within {REPRODUCIBILITY_POINTS} point (largest difference "
                    f"{reproducibility['max_difference_points']:.2f})"]
