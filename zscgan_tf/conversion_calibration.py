"""The calibration inputs of an int8 conversion (`tools/convert.py`): generator samples,
ZeroQ-style distilled inputs or Gaussian noise, as `ConversionConfig.data_source` says."""

from zscgan_tf import distilled_data, flag_names, memory_checks, quantization_stages
from zscgan_tf import generator as generator_lib
from zscgan_tf.conversion_config import ConversionConfig
from zscgan_tf.errors import UserError


def calibration_inputs(config: ConversionConfig, generator, teacher, count, seed, preprocessing_known=True):
    """Calibration inputs from `config.data_source`, or None when there are none or none are needed.
    `preprocessing_known`: whether `teacher.preprocessing` is known (a student file's is only
    when --teacher_preprocessing says it), so that a generator's can be checked against it."""
    if config.mode != "int8":
        return None  # Float and dynamic-range exports are not calibrated.
    if config.data_source == "generator":  # Made for whole classes, and copied while they are.
        memory_checks.check_samples_fit_in_memory("calibration_samples", count,
                                             quantization_stages.calibration_samples_generated(
                                                 count, teacher.num_classes),
                                             teacher.image_shape, quantization_stages.CALIBRATION_COPIES)
    else:
        memory_checks.check_samples_fit_in_memory("calibration_samples", count, count, teacher.image_shape)
    if config.data_source == "noise":
        return distilled_data.gaussian_noise_inputs(teacher, count, seed)
    if config.data_source == "distilled":
        settings = distilled_data.DistilledDataConfig(steps=config.distilled_steps)
        distilled = distilled_data.distill_inputs(teacher, count, settings, seed=seed)
        print(f"distilled {count} inputs: BN-statistics loss {distilled.initial_bn_loss:.4g} -> "
              f"{distilled.final_bn_loss:.4g}")
        return distilled.inputs
    if generator is None:
        return None
    if tuple(generator.output.shape[1:]) != tuple(teacher.image_shape):
        raise UserError(f"the generator makes {tuple(generator.output.shape[1:])} samples but the model reads "
                        f"{teacher.image_shape}")
    if preprocessing_known:
        _check_generator_input_space(generator, teacher.preprocessing, teacher.image_shape[-1])
    return quantization_stages.calibration_samples(generator, teacher, count, seed, progress=True)


def _check_generator_input_space(generator, preprocessing, channels) -> None:
    """A generator ends in a fixed map onto the input space of the teacher it was trained for;
    calibrating a model read with other preprocessing would calibrate it on other inputs."""
    if generator_lib.same_input_space(generator, preprocessing, channels) is not False:
        return
    trained_for = generator_lib.preprocessing_of_input_space(*generator_lib.input_space(generator))
    raise UserError(f"the generator was trained for a teacher that reads pixels with {trained_for.describe()} "
                    f"preprocessing, not {preprocessing.describe()}: pass "
                    f"{flag_names.preprocessing_flags(trained_for)}, or the generator trained for this teacher")
