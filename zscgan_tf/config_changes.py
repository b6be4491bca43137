"""What a rerun may change of the config its work directory saved, and what it may not.

A work directory's `config.json` records the settings its stages trained with
(`save_or_check` writes it). A rerun with other settings is refused where they
would change what was made: a generator trained with one loss and a student with
another would be reported as one run. More steps, another pool size, other logging,
the exported files' input and output type and float ops, and every evaluation setting
resume (`RESUMABLE_CHANGES`), as does any setting that did nothing in the saved run
(`inert_settings`). `--generator_from` takes another run's
generator when the settings a generator depends on are the same
(`generator_differences`).
"""

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Set

from zscgan_tf.config import (CONFIG_FILE, DISTILLATION_FLAGS, DistillationConfig, EvaluationConfig, RunConfig,
                              current_dict)
from zscgan_tf.errors import UserError
from zscgan_tf.progress import listed
from zscgan_tf.quantize import QuantizationScheme

# How many changed settings a refusal names before "..., N more".
CHANGED_SETTINGS_SHOWN = 5
# Settings that may change between runs in one work directory: more steps continue
# training, another pool size trains the generators the pool lacks and keeps the finished
# ones (its first generator trains from the seed a single one does), how often things are
# logged does not change results, a run directory moved or copied elsewhere resumes there
# (nothing in it records its path but config.json), another input/output type converts
# the exported models again (their state records it), as does allowing float ops in them,
# and every evaluation setting changes only what the last stage measures, which every run
# measures again: a finished run can be evaluated on other data without retraining.
RESUMABLE_CHANGES = ("work_dir", "generator.pool_size", "generator_training.steps",
                     "generator_training.checkpoint_every", "generator_training.log_every",
                     "generator_training.image_every", "distillation.steps", "distillation.checkpoint_every",
                     "distillation.log_every", "quantization.io_dtype", "quantization.allow_float_ops",
                     *(f"evaluation.{field.name}" for field in dataclasses.fields(EvaluationConfig)))


def _flatten(values: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def differences(saved: Dict[str, Any], current: Dict[str, Any]) -> List[str]:
    """Dotted names of settings that differ between two config dicts."""
    saved_flat, current_flat = _flatten(saved), _flatten(current)
    return sorted(key for key in set(saved_flat) | set(current_flat) if saved_flat.get(key) != current_flat.get(key))


# The options of bit widths below 8, which an 8-bit scheme never uses.
LOW_BIT_OPTIONS = ("quantization.low_bit_ranges", "quantization.keep_first_and_last_at_8_bits")


def inert_settings(config: Dict[str, Any], distilled: bool = False) -> Set[str]:
    """Dotted names of the settings that change nothing in a run with this config dict.

    The options of bit widths below 8 (`low_bit_ranges`, `keep_first_and_last_at_8_bits`)
    do nothing in an 8-bit run, so a W8A8 work directory resumes whatever they say; nor
    do the QAT settings, the scheme and its options in a run without QAT
    (`distillation.steps` 0), unless its work directory holds a student `distilled` by an
    earlier run with QAT, which they describe.
    """
    if not isinstance(config, dict):  # A damaged config: every difference counts.
        return set()
    inert = set()
    distillation = config.get("distillation")
    if isinstance(distillation, dict) and distillation.get("steps") == 0 and not distilled:
        inert |= {f"distillation.{field.name}" for field in dataclasses.fields(DistillationConfig)
                  if field.name != "steps"} | {"quantization.scheme", *LOW_BIT_OPTIONS}
    quantization = config.get("quantization")
    if isinstance(quantization, dict):
        try:
            if QuantizationScheme.from_name(quantization.get("scheme")).exportable:
                inert |= set(LOW_BIT_OPTIONS)
        except UserError:  # Not a scheme name: its options count.
            pass
    return inert


def unused_settings_notes(config: RunConfig) -> List[str]:
    """One note for each kind of setting changed from its default that `config` never uses
    (`inert_settings`): a flagfile written for other runs may set them, but a user who
    changed one by hand should hear that it does nothing."""
    config_dict = current_dict(config)
    current, defaults = _flatten(config_dict), _flatten(current_dict(RunConfig()))
    unused = [key for key in sorted(inert_settings(config_dict)) if current[key] != defaults[key]]

    def flag_list(keys):
        return ", ".join("--" + {**DISTILLATION_FLAGS, **_QUANTIZATION_FLAGS}.get(key.split(".")[1], key.split(".")[1])
                         for key in keys)

    notes = []
    without_qat = [key for key in unused if key.startswith("distillation.")]
    no_qat = config.distillation.steps == 0
    if no_qat:  # The scheme and its options name no model then: the int8 one is the teacher's, at 8 bits.
        without_qat += [key for key in ("quantization.scheme",) + LOW_BIT_OPTIONS if current[key] != defaults[key]]
    if without_qat:
        notes.append(f"{flag_list(without_qat)} {'does' if len(without_qat) == 1 else 'do'} nothing with "
                     "--distillation_steps=0: no QAT student is trained")
    low_bit = [key for key in unused if key in LOW_BIT_OPTIONS and not no_qat]
    if low_bit:
        notes.append(f"{flag_list(low_bit)} {'is' if len(low_bit) == 1 else 'are'} for widths below 8 bits and "
                     f"{'does' if len(low_bit) == 1 else 'do'} nothing in --quantization={config.quantization.scheme}")
    return notes


# The teacher settings are all about which model is read and how: a run resumes with any of
# them changed (a moved model file, a run directory taken to another machine, the preprocessing
# the teacher already had named, a Keras-Applications flag a model file ignores) when the
# teacher it loads is the one the run recorded (`teachers.fingerprint`, compared by the
# pipeline: weights, input shape, classes and preprocessing).
TEACHER_SECTION = "teacher"


def _teacher_setting(key: str) -> bool:
    return key.split(".")[0] == TEACHER_SECTION


# The sections a trained generator depends on (how long it trained aside): a run may
# start from another run's generator (`--generator_from`) when these are the same.
GENERATOR_SECTIONS = ("seed", "teacher", "generator", "loss", "generator_training")


def generator_differences(saved: Dict[str, Any], current: Dict[str, Any], same_teacher: bool = False) -> List[str]:
    """Dotted names of the differing settings that change what a generator trains to;
    with `same_teacher` (known to be the same by fingerprint), not how the teacher is found and read."""
    return [key for key in differences(saved, current)
            if key.split(".")[0] in GENERATOR_SECTIONS and key not in RESUMABLE_CHANGES
            and not (same_teacher and _teacher_setting(key))]


def read_saved(path: str, advice: str = "remove it or choose another --work_dir") -> Dict[str, Any]:
    """A saved config, with settings added since it was saved at the values it ran with.

    `advice`: what the error says to do about a config that cannot be read; the default
    fits the run's own work directory.

    Raises:
      UserError: if it cannot be read.
    """
    try:
        with open(path) as saved_file:
            saved = json.load(saved_file)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {path}: {error}; {advice}") from error
    try:
        return json.loads(json.dumps(RunConfig.from_dict(saved).to_dict()))
    except (UserError, TypeError):
        return saved  # Compared as saved: whatever differs is named.


def save_or_check(config: RunConfig, write_json, same_teacher: bool = False, distilled: bool = False,
                  built_on_generator: bool = True) -> None:
    """Saves the config into the work directory, or checks it matches the one there.

    Args:
      config: this run's config.
      write_json: `callable(path, dict)` that writes JSON atomically.
      same_teacher: the teacher is known to be the one the work directory trained with
        (by fingerprint), so the teacher settings may differ.
      distilled: the work directory holds a QAT student (or its checkpoints), which its
        saved QAT settings describe even in a run without QAT (`inert_settings`).
      built_on_generator: the work directory holds something made from its generator (a
        student, its checkpoints, an exported model). Without, only the settings a generator
        depends on bind it (`GENERATOR_SECTIONS`): the others describe nothing made yet.

    Raises:
      UserError: if the work directory holds a run with a different config.
    """
    check_saved(config, same_teacher, distilled, built_on_generator)
    write_json(os.path.join(config.work_dir, CONFIG_FILE), current_dict(config))


def _names_the_same_path(saved: Any, current: Any) -> bool:
    """Whether `saved`, a path (or list of them) a run saved as given, relative, before runs recorded
    paths in full (`files.portable_path`), names `current`, the same in full: seen from this
    directory, or from one that `current` lies under."""
    if isinstance(saved, list) and isinstance(current, list):
        return len(saved) == len(current) and all(map(_names_the_same_path, saved, current))
    return (isinstance(saved, str) and isinstance(current, str) and bool(saved) and not os.path.isabs(saved)
            and os.path.isabs(current) and (os.path.abspath(saved) == current
                                            or current.endswith(os.sep + os.path.normpath(saved))))


def saved_teacher_model(saved: Any) -> str:
    """The teacher a saved config names (a path, a Keras application or a built-in), or "" where it names none."""
    teacher = saved.get("teacher") if isinstance(saved, dict) else None
    return str((teacher if isinstance(teacher, dict) else {}).get("model") or "")


def names_another_teacher(saved_model: str, current_model: str) -> bool:
    """Whether a teacher a saved config names as `saved_model` is named otherwise than this run's
    `current_model`: another teacher, rather than a model file replaced. A relative path that an
    earlier version saved names the same teacher as its full path does (`_names_the_same_path`)."""
    return (bool(saved_model and current_model) and saved_model != current_model
            and not _names_the_same_path(saved_model, current_model))


# The quantization settings whose flag has another name than the setting.
_QUANTIZATION_FLAGS = {"scheme": "quantization"}


def _quantization_flags_as_saved(saved: Dict[str, Any], changed: Sequence[str]) -> Optional[str]:
    """The flags that set the `changed` settings back to their `saved` values ("--low_bit_ranges=min_max",
    the value a run saved before the setting existed had), when they are all quantization settings."""
    if not all(key.split(".")[0] == "quantization" for key in changed):
        return None
    saved_flat, parts = _flatten(saved), []
    for key in changed:
        field = key.split(".", 1)[1]
        flag, value = _QUANTIZATION_FLAGS.get(field, field), saved_flat.get(key)
        if value is None:
            return None
        parts.append(f"--{flag if value else 'no' + flag}" if isinstance(value, bool) else f"--{flag}={value}")
    return " ".join(parts)


def check_saved(config: RunConfig, same_teacher: bool = False, distilled: bool = False,
                built_on_generator: bool = True) -> None:
    """Checks `config` against the one its work directory saved, if any (`save_or_check`).

    Raises:
      UserError: if the work directory holds a run with a different config.
    """
    path = os.path.join(config.work_dir, CONFIG_FILE)
    current = current_dict(config)
    if os.path.exists(path):
        saved = read_saved(path)
        # What did nothing in the saved run describes nothing here: a run without QAT took other QAT settings, but
        # not another scheme, which its note called inert (nor QAT with them).
        unchanging = set(RESUMABLE_CHANGES) | inert_settings(saved, distilled)
        saved_flat, current_flat = _flatten(saved), _flatten(current)
        # A run stopped in its generator's training was refused another QAT temperature, say, and advised to
        # take that generator from another directory, which refuses an unfinished one.
        changed = [key for key in differences(saved, current)
                   if key not in unchanging and not (same_teacher and _teacher_setting(key))
                   and (built_on_generator or key.split(".")[0] in GENERATOR_SECTIONS)
                   and not _names_the_same_path(saved_flat.get(key), current_flat.get(key))]
        if changed:
            shown = listed(changed, CHANGED_SETTINGS_SHOWN)
            if not generator_differences(saved, current, same_teacher):  # Another student needs no new generator.
                as_saved = _quantization_flags_as_saved(saved, changed)
                raise UserError(f"{config.work_dir} holds a run with a different config ({shown}), which its "
                                "generator does not depend on: to train with it from that generator, pass another "
                                f"--work_dir and --generator_from={config.work_dir}; "
                                + (f"to go on with that run as it was, pass {as_saved}; " if as_saved else "")
                                + "or delete that directory to start fresh")
            raise UserError(f"{config.work_dir} holds a run with a different config ({shown}); choose another "
                            "--work_dir, or delete that directory to start fresh")
