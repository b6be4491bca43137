"""How the command line spells a teacher's settings, for refusals and advice that name flags.

The flags themselves are defined and parsed by the entry points (`cli.define_teacher_flags`);
library modules that tell a user which flags to pass read their names here, without
`absl.flags`.
"""

from typing import List

from zscgan_tf.preprocessing import Preprocessing
from zscgan_tf.teachers import TeacherSource

# The flags of `cli.define_teacher_flags`, and those among them that say how pixels become inputs.
PREPROCESSING_FLAG_NAMES = ("teacher_preprocessing", "teacher_preprocessing_mean", "teacher_preprocessing_std")
TEACHER_FLAG_NAMES = ("teacher_weights", "teacher_alpha", "teacher_input_size", "teacher_num_classes",
                      "teacher_channels") + PREPROCESSING_FLAG_NAMES + ("trust_model_code", "teacher_cache_dir",
                                                                        "teacher_custom_objects")
# Flags that build a Keras Applications teacher, which a model file or built-in teacher ignores.
APPLICATION_FLAG_NAMES = ("teacher_weights", "teacher_alpha", "teacher_num_classes", "teacher_channels")
# The flag of each `TeacherSource` field but `model` (`--teacher` itself), as `cli.teacher_source` reads them.
TEACHER_FIELD_FLAGS = {"weights": "teacher_weights", "alpha": "teacher_alpha", "input_size": "teacher_input_size",
                       "num_classes": "teacher_num_classes", "channels": "teacher_channels",
                       "preprocessing": "teacher_preprocessing", "preprocessing_mean": "teacher_preprocessing_mean",
                       "preprocessing_std": "teacher_preprocessing_std", "trust_model_code": "trust_model_code",
                       "cache_dir": "teacher_cache_dir", "custom_objects": "teacher_custom_objects"}


def preprocessing_flags(preprocessing: Preprocessing) -> str:
    """The flags that name `preprocessing`: `--teacher_preprocessing=raw`, or for `custom`
    `--teacher_preprocessing=custom --teacher_preprocessing_mean=0.5 --teacher_preprocessing_std=0.25`."""
    named = f"--teacher_preprocessing={preprocessing.mode}"
    if preprocessing.mode != "custom":
        return named
    return (f"{named} --teacher_preprocessing_mean={flag_value(preprocessing.mean)} "
            f"--teacher_preprocessing_std={flag_value(preprocessing.std)}")


def flag_value(value) -> str:
    """A flag's value as the command line gives it: a list comma-separated, a float exactly
    (`repr`: `:g` kept 6 digits, another preprocessing for a std of 1/255)."""
    if isinstance(value, (tuple, list)):
        return ",".join(flag_value(item) for item in value)
    return repr(value) if isinstance(value, float) else str(value)


def teacher_flags(source: TeacherSource) -> List[str]:
    """The flags that name `source` again, `--teacher` first, leaving out those at their defaults:
    `cli.teacher_source` of them gives it back (for advice that repeats a run's teacher)."""
    named = [f"--teacher={source.model}"]
    defaults = TeacherSource()
    for field, flag_name in TEACHER_FIELD_FLAGS.items():
        value = getattr(source, field)
        if value == getattr(defaults, field):
            continue
        named.append(f"--{'' if value else 'no'}{flag_name}" if isinstance(value, bool)
                     else f"--{flag_name}={flag_value(value)}")
    return named
