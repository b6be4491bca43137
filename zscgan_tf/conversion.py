"""What `tools/convert.py` does with a checked `ConversionConfig`: loads the model it names (a
run's QAT student, a saved student or a float teacher), converts it to TFLite with its
calibration inputs, writes the file and its labels, and prints what the file is: its ops,
its pixel input and its Edge TPU compatibility."""

import contextlib
import os
from typing import Optional

import numpy as np

from zscgan_tf import custom_objects, edge_tpu, errors, evaluate, export, exported_model, files, model_files
from zscgan_tf import quantization_stages, quantize, quantizer_ranges, representative_data, run_conversion, run_state
from zscgan_tf import teachers, tflite_model
from zscgan_tf import generator as generator_lib
from zscgan_tf.conversion_calibration import calibration_inputs
from zscgan_tf.conversion_config import ConversionConfig
from zscgan_tf.errors import UserError, first_line
from zscgan_tf.preprocessing import Preprocessing


def convert(config: ConversionConfig) -> None:
    """Validates `config`, then exports the model it names, holding a --run_dir's lock meanwhile.

    Raises:
      UserError: for bad input, worded with `tools/convert.py`'s flags.
      InUseError: for a --run_dir a run is training in.
    """
    config.validate()
    if config.run_dir:  # Refused before its lock is taken, which rewrites its .lock file.
        run_conversion.check_run(config, run_conversion.read_run_config(config.run_dir))
    # A run training in --run_dir would delete the checkpoint being read, and one started meanwhile is refused;
    # other conversions of it share the lock.
    with (files.exclusive_use(config.run_dir, what="conversion", advice="convert it once that run has finished or "
                              "stopped", shared=True) if config.run_dir else contextlib.nullcontext()):
        _load_and_export(config)


def _load_and_export(config: ConversionConfig) -> None:
    """Loads the model `config` names, writes its .tflite file and labels, and prints the report:
    `convert`'s work once the settings are checked and the run directory is locked."""
    model, calibration, description, preprocessing, class_names = _model_to_convert(config)
    _check_weight_scales(model, config.per_channel_given)
    # The input's range covers every pixel where the preprocessing says what pixels become.
    input_range = preprocessing.input_range(int(model.inputs[0].shape[-1])) if preprocessing else None
    representative = (representative_data.representative_dataset_from_array(calibration, input_range,
                                                                progress_description="calibration")
                      if calibration is not None else None)
    # The conversion says nothing until it is written: 50 s calibrating on 10,000 samples on 2 CPU cores.
    print(f"converting {description} to {config.mode} TFLite"
          + (f" with {len(calibration):,} calibration samples" if representative else ""), flush=True)
    model_bytes = _converted(model, representative, config, output_path=config.output)
    report = tflite_model.inspect_tflite(model_bytes)
    lines = [f"wrote {config.output} ({len(model_bytes) / 1024:.1f} KiB) from {description}"] + report.format()
    labels_path = labels_path_for(config.output)
    stale_labels = not class_names and os.path.exists(labels_path)
    try:
        wrote_labels = exported_model.write_labels(labels_path, class_names)  # Else a stale one goes.
    except OSError as error:  # A stale file is gone: another model's labels do not stay beside this one.
        if errors.is_storage_full(error):
            raise
        raise UserError(f"wrote {config.output}, but cannot write its labels {labels_path!r}: "
                        f"{error.strerror}") from error
    if wrote_labels:
        lines.append(f"- labels: {labels_path}, the teacher's {len(class_names)} class names one a line in output "
                     f"order (output 0 is {class_names[0]!r})")
    elif stale_labels:  # It went without a word.
        lines.append(f"- labels: removed {labels_path}, which an earlier model left: this model's class names are "
                     "not known")
    float_ops = export.float_ops_description(report, model) if config.mode == "int8" else ""
    if float_ops:
        lines.append(f"- float ops kept (--allow_float_ops): {float_ops}; "
                     f"{export.FLOAT_OPS_DEVICES}")
    if config.mode == "int8" and calibration is not None and config.data_source == "generator":
        # Generated samples are ones the teacher is sure of; on noise two faithful models can still differ.
        warning = exported_model.export_agreement_warning("int8", model_bytes, model, calibration)
        if warning:
            lines.append(f"- warning: {warning}")
    pixel_input = evaluate.TfliteClassifier(model_bytes).describe_pixel_input(preprocessing) if preprocessing else None
    if pixel_input:
        lines.append(f"- {pixel_input}")
    if config.mode == "int8":
        lines += edge_tpu.compatibility_report(report).format()
    print("\n".join(lines))


def _converted(model, representative, config: ConversionConfig, output_path: Optional[str] = None,
               check_loads: bool = True) -> bytes:
    """`export.convert_to_tflite` with the conversion's settings (`run_conversion.export_settings`),
    its refusals worded with the flags that answer them."""
    io_dtype, allow_float_ops = run_conversion.export_settings(config)
    try:
        return export.convert_to_tflite(model, representative, mode=config.mode, io_dtype=io_dtype,
                                        per_channel=config.per_channel, output_path=output_path,
                                        allow_float_ops=allow_float_ops, check_loads=check_loads)
    except OSError as error:
        if error.filename is None or errors.is_storage_full(error):
            raise
        raise UserError(f"cannot write --output {config.output!r}: {error.strerror}: {error.filename}") from error
    except export.NotFullyIntegerError as error:
        if representative is None:
            # The library's hint names its argument; say which flags give the dataset.
            # Calibration alone leaves an op without an int8 kernel float: the advice said only this, and
            # followed, was refused again over such an op.
            raise UserError(f"{error.summary} Layers TF-MOT left float need calibration inputs: pass --generator "
                            "(the run's generator.keras) or --data_source=distilled or noise"
                            + ("" if allow_float_ops else "; an op TFLite has no int8 kernel for (ELU, ...) stays "
                               "float with them too, and needs --allow_float_ops as well")) from error
        if not allow_float_ops:  # The library's hint names its argument; say which flag it is.
            raise UserError(f"{error.summary} Pass --allow_float_ops to keep these ops float "
                            f"({export.FLOAT_OPS_DEVICES})") from error
        raise


def _model_to_convert(config: ConversionConfig):
    """(model, calibration samples or None, description, the teacher's preprocessing or None when a
    student file does not say it, the teacher's class names or ()) that `config` names."""
    generator = generator_lib.load_generator(config.generator) if config.generator else None
    if config.run_dir:
        return run_conversion.model_of_run(config, generator)
    if config.student:
        if not os.path.exists(config.student):
            raise UserError(f"student {config.student!r} does not exist")
        custom_objects.register(config.custom_objects)
        generator_message = model_files.generator_file_message(config.student, "student")
        if generator_message:  # It was "a float model ...: quantize it post-training with --teacher=<it>".
            raise UserError(generator_message)
        try:
            student = quantization_stages.load_student(config.student, trust_model_code=config.trust_model_code)
        except (OSError, ValueError, TypeError) as error:
            reason = model_files.not_a_keras_archive(config.student) or custom_objects.explained(first_line(error))
            raise UserError(f"cannot load student {config.student!r}: {reason}") from error
        if not export.is_quantization_aware(student):
            raise UserError(f"--student {config.student!r} is a float model, not a TF-MOT quantization-aware "
                            f"student: quantize it post-training with --teacher={config.student}")
        config.check_teacher_flags()
        # What the user says the student's input is, else what the run that saved it recorded, if anything.
        preprocessing = config.student_preprocessing or _preprocessing_its_run_recorded(config.student)
        if preprocessing is not None:  # `input_range` raises if its statistics don't fit the channels.
            quantizer_ranges.cover_model_input_range(
                student, *preprocessing.input_range(int(student.inputs[0].shape[-1])))
        view = _teacher_like(student, os.path.basename(config.student), preprocessing)
        return (student, calibration_inputs(config, generator, view, config.calibration_samples, config.seed,
                                            preprocessing_known=preprocessing is not None),
                f"student {config.student}", preprocessing, ())
    if config.ignored_teacher_flags_note:
        print(config.ignored_teacher_flags_note)
    config.check_teacher_flags()
    try:
        # Noise calibration and the float modes read no BN statistics.
        teacher = teachers.load_teacher(config.teacher_source,
                                        require_batchnorm=config.mode == "int8" and config.data_source != "noise")
    except teachers.QuantizationAwareTeacherError as error:
        raise UserError(f"--teacher {config.teacher!r} is a TF-MOT quantization-aware student, not a float "
                        f"teacher: export it with --student={config.teacher}") from error
    for warning in teacher.warnings:
        print(f"warning: {warning}")
    if config.mode == "int8" and config.data_source == "generator" and generator is None:
        raise UserError(f"{config.teacher} is a float model: an int8 export needs calibration inputs: --generator, "
                        "or --data_source=distilled or noise (or export a QAT student with --run_dir / --student, "
                        "or use --mode=float or dynamic)")
    if config.mode == "int8" and config.data_source == "distilled":
        # Minutes of distilling inputs went before an op without an int8 kernel (ELU) was refused: a trial
        # conversion on a few uniform samples first, as a run checks its teacher (1 s).
        samples = np.random.default_rng(config.seed).uniform(
            *teacher.input_range(), (quantization_stages.INTEGER_CHECK_SAMPLES,) + tuple(teacher.image_shape))
        _converted(teacher.model, representative_data.representative_dataset_from_array(samples.astype(np.float32),
                                                                           teacher.input_range()),
                   config, check_loads=False)
    return (teacher.model,
            calibration_inputs(config, generator, teacher, config.calibration_samples, config.seed),
            f"teacher {config.teacher}", teacher.preprocessing, teacher.class_names())


def _preprocessing_its_run_recorded(student_path: str) -> Optional[Preprocessing]:
    """The preprocessing of the teacher that the run whose student `student_path` is (a work
    directory's `student.h5`) recorded, said in a note; None for a student saved elsewhere, or
    by a run of an earlier version that recorded none (a note says how to read its input). A
    student saved before its input range covered every pixel level gets that range from it."""
    run_dir = os.path.dirname(os.path.abspath(student_path))
    state = run_state.read_state(run_dir)
    if os.path.basename(student_path) != quantization_stages.STUDENT_MODEL_FILE or "distillation" not in state:
        return None
    try:
        preprocessing = Preprocessing.from_dict(state[run_state.TEACHER_PREPROCESSING_KEY])
    except (KeyError, AttributeError, TypeError, ValueError, UserError):  # Not recorded, or not as a run records it.
        print(f"note: {run_dir}, the run of this student, records no teacher preprocessing (a run of an earlier "
              f"version of zscgan_tf): --run_dir={run_dir} reads its teacher and covers every pixel level, and "
              "--teacher_preprocessing says what the student's input is")
        return None
    print(f"note: the student's input is read as its run records its teacher's ('{preprocessing.mode}' "
          f"preprocessing, in {os.path.join(run_dir, run_state.STATE_FILE)}); pass --teacher_preprocessing to read it "
          "otherwise")
    return preprocessing


def _teacher_like(model, name, preprocessing=None):
    """A `Teacher` view of a student, for its shape and class count."""
    return teachers.Teacher(model=model, preprocessing=preprocessing or Preprocessing(),
                            image_shape=tuple(model.inputs[0].shape[1:]), num_classes=int(model.output.shape[-1]),
                            name=name, description={})


def _check_weight_scales(model, per_channel: Optional[bool]) -> None:
    """Refuses a --per_channel or --noper_channel that a QAT student cannot follow: its weights
    were trained with the scales of its scheme, and its export keeps them. `per_channel`: the
    flag as given, None when it is not."""
    if not (per_channel is not None and export.is_quantization_aware(model)):
        return
    trained_per_channel = quantize.weights_per_channel(model)
    if trained_per_channel is None or trained_per_channel == per_channel:
        return
    flag = "--per_channel" if per_channel else "--noper_channel"
    way_out = ("train a student with per-channel weights (the default), or export the teacher with PTQ (--teacher "
               "and --generator)" if per_channel else
               "export the teacher with PTQ (--teacher and --generator) --noper_channel; a QAT student with per-tensor "
               "weights cannot export where BatchNorm follows its convolutions (tensorflow/model-optimization#1131)")
    raise UserError(f"{flag} applies to post-training quantization: this QAT student's weights were trained with "
                    f"{'per-channel' if trained_per_channel else 'per-tensor'} scales, which its export keeps. For "
                    f"{'per-channel' if per_channel else 'per-tensor'} weights, {way_out}")


def labels_path_for(output: str) -> str:
    """Where the labels of the model written to `output` go: `model.tflite` -> `model_labels.txt`."""
    stem, extension = os.path.splitext(output)
    return (stem if extension.lower() == ".tflite" else output) + "_labels.txt"
