"""The main command: `python -m zscgan_tf.train --flagfile configs/<name>.cfg`.

Flags become one validated `RunConfig`, saved in the work directory. The teacher is
loaded (or, for `builtin:` teachers, trained on first use), validated and frozen; then the
stages run in order, each resuming from its checkpoint and skipped once its output exists
(1 to 3 are the method's three stages, and the modules' docstrings number them so):

1. generator: zero-shot training of the conditional generator (ZS-CGAN).
2. distillation: data-free quantization-aware training of the TF-MOT student on
   generated samples (`--quantization`; skipped with `--distillation_steps=0`).
3. export: fully-integer TFLite of the student (W8A8 only) and of the teacher
   calibrated on generated samples (PTQ), the float teacher for comparison, and
   export_report.md (op-by-op integer check, Edge TPU compatibility).
4. evaluation: top-1 of every model on held-out real data (`--eval_dataset`), Keras /
   TFLite agreement, file sizes and LiteRT latency.
5. report: the teacher's verdict on generated samples, a PNG grid, report.json/.md.

  python -m zscgan_tf.train --flagfile configs/demo.cfg

Bad input prints one line, `error: ...`, and exits with status 2 (`--verbose` adds the
traceback); a work directory another run holds, with 75 (try again later). Ctrl-C
(status 130), SIGTERM (143), a terminal's hangup (SIGHUP, 129) and output no one can read
any more (`| head`, a terminal gone under `& disown`; 141) let a
training step finish and save a checkpoint, and the evaluation its predictions: the same
command goes on from there.
"""

import sys

from absl import flags

from zscgan_tf import config as config_lib
from zscgan_tf import bn_stats, cli, pipeline, reproducibility

FLAGS = flags.FLAGS
_teacher = config_lib.TeacherSource()
_generator = config_lib.GeneratorConfig()
_loss = config_lib.LossConfig()
_training = config_lib.GeneratorTrainingConfig()
_quantization = config_lib.QuantizationConfig()
_distillation = config_lib.DistillationConfig()
_evaluation = config_lib.EvaluationConfig()

flags.DEFINE_string("work_dir", "runs/demo", "Directory for checkpoints, models, logs and reports.")
flags.DEFINE_integer("seed", 0, "Seed of every random stream.")
flags.DEFINE_bool("verbose", False, "Show tracebacks of errors.")
flags.DEFINE_bool("progress", True, "Show progress lines.")

flags.DEFINE_string("teacher", _teacher.model, "Keras Applications name, builtin:<name>, or a model file/directory.")
cli.define_teacher_flags()
flags.adopt_module_key_flags(cli)

flags.DEFINE_string("generator_from", "", "Another run's work directory whose finished generator this run starts "
                    "from instead of training one: another student (scheme, QAT settings, calibration) without "
                    "training the generator again. That run's teacher, generator, loss and generator training "
                    "settings must be this run's.")
flags.DEFINE_string("generator_variant", _generator.variant, "conditional_bn or embedding.")
flags.DEFINE_integer("noise_dim", _generator.noise_dim, "Length of the generator's noise vector.")
flags.DEFINE_integer("generator_channels", _generator.base_channels, "Channels of the generator trunk.")
flags.DEFINE_float("generator_blur_sigma", _generator.blur_sigma, "Gaussian low-pass of every generated sample, "
                   "sigma in pixels (keeps class evidence out of pixel-scale patterns); 0 = off.")
flags.DEFINE_integer("generator_pool_size", _generator.pool_size, "Generators trained apart (other seeds) and pooled: "
                     "sample i of a batch comes from generator i mod this. Each costs a generator training; "
                     "a finished run's pool grows by training only the new ones.")

flags.DEFINE_float("ce_loss_weight", _loss.cross_entropy, "Weight of the conditional cross-entropy.")
flags.DEFINE_float("bn_loss_weight", _loss.bn_statistics, "Weight of the BN-statistics loss.")
flags.DEFINE_string("bn_distance", _loss.bn_distance, "kl (Gaussian KL) or mse (GDFQ).")
flags.DEFINE_enum("bn_layer_weighting", _loss.bn_layer_weighting, bn_stats.BN_LAYER_WEIGHTINGS,
                  "How the BN-statistics loss weighs the teacher's BN layers: uniform, or noise_floor (each "
                  "1 / (1 + the KL a batch scores there by chance): layers at low resolution with many channels "
                  "pull less).")
flags.DEFINE_float("diversity_loss_weight", _loss.diversity, "Weight of the diversity terms; 0 = off.")
flags.DEFINE_float("mode_seeking_loss_weight", _loss.mode_seeking,
                   "Weight of the mode-seeking term (spreads each class's samples apart); 0 = off.")

flags.DEFINE_bool("deterministic", True, "Repeat results exactly for the same seeds (TensorFlow's deterministic "
                  "kernels, graph optimizer off: about 4% slower).")
flags.DEFINE_integer("generator_steps", _training.steps, "Generator updates.")
flags.DEFINE_integer("batch_size", _training.batch_size, "Samples per generator update.")
flags.DEFINE_float("generator_learning_rate", _training.learning_rate, "Adam learning rate of the generator.")
flags.DEFINE_float("generator_beta_1", _training.beta_1, "Adam beta_1 of the generator.")
flags.DEFINE_float("generator_beta_2", _training.beta_2, "Adam beta_2 of the generator.")
flags.DEFINE_integer("checkpoint_every", _training.checkpoint_every,
                     "Generator steps between checkpoints (QAT: --distillation_checkpoint_every).")
flags.DEFINE_integer("log_every", _training.log_every,
                     "Generator steps between loss-history records and TensorBoard scalars (QAT: "
                     "--distillation_log_every).")
flags.DEFINE_integer("image_every", _training.image_every, "Generator steps between TensorBoard sample grids.")

flags.DEFINE_string("quantization", _quantization.scheme, "w<weight bits>a<activation bits>, each 2..8: w8a8 "
                    "(exported to int8 TFLite), or lower widths such as w4a8 / w4a4 (simulated by TF-MOT; "
                    "TFLite has no kernels below 8 bits).")
flags.DEFINE_bool("keep_first_and_last_at_8_bits", _quantization.keep_first_and_last_at_8_bits,
                  "Keep the first and last layers at 8 bits in schemes below 8 bits (w4a4, w4a8, ...).")
flags.DEFINE_bool("per_channel", _quantization.per_channel, "Per-channel weight scales.")
flags.DEFINE_enum("low_bit_ranges", _quantization.low_bit_ranges, list(config_lib.LOW_BIT_RANGE_METHODS),
                  "Ranges of quantizers below 8 bits (w4a4, w4a8, ...): mse = least squared rounding error (weights "
                  "from the weights, activations from the calibration samples), held during QAT; min_max = "
                  "TF-MOT's observed extremes.")
flags.DEFINE_string("io_dtype", _quantization.io_dtype, "int8 or uint8 input/output of the exported model.")
flags.DEFINE_integer("calibration_samples", _quantization.calibration_samples, "Class-balanced generator "
                     "samples used to calibrate quantization ranges.")
flags.DEFINE_bool("allow_float_ops", _quantization.allow_float_ops,
                  "Let the int8 models keep ops TFLite has no int8 kernel for (ELU, ...) float inside, their input "
                  "and output integer: a CPU runs them, an Edge TPU or NPU leaves everything from the first float "
                  "op to the CPU. Without it a teacher with such an op is refused before training.")

flags.DEFINE_integer("distillation_steps", _distillation.steps, "Data-free QAT steps; 0 = post-training "
                     "quantization only.")
flags.DEFINE_integer("distillation_batch_size", _distillation.batch_size, "Generated samples per QAT step.")
flags.DEFINE_float("distillation_learning_rate", _distillation.learning_rate, "Adam learning rate of the student "
                   "(cosine decay to 0).")
flags.DEFINE_float("temperature", _distillation.temperature, "Softmax temperature of the distillation loss.")
flags.DEFINE_float("label_loss_weight", _distillation.label_loss_weight, "Weight of the student's cross-entropy "
                   "with the generation label.")
flags.DEFINE_float("feature_loss_weight", _distillation.feature_loss_weight, "Weight of the feature term of "
                   "QAT: each BatchNorm layer's output in the student against the teacher's; 0 = off.")
flags.DEFINE_float("mixed_fraction", _distillation.mixed_fraction, "Fraction of each QAT batch replaced by "
                   "mixtures of two generated samples (boundary samples); 0 = off.")
flags.DEFINE_float("shift_fraction", _distillation.shift_fraction, "Move each QAT sample by up to this fraction "
                   "of its height and width (whole pixels, at least one; edges repeated); 0 = off.")
flags.DEFINE_bool("flip", _distillation.flip, "Mirror a random half of each QAT batch left to right (for classes "
                  "that look alike mirrored).")
flags.DEFINE_bool("joint_generator", _distillation.joint_generator, "Keep training a copy of the generator "
                  "with its zero-shot loss during QAT (GDFQ); off = generator frozen.")
flags.DEFINE_integer("distillation_checkpoint_every", _distillation.checkpoint_every, "QAT steps between "
                     "checkpoints.")
flags.DEFINE_integer("distillation_log_every", _distillation.log_every,
                     "QAT steps between loss-history records and TensorBoard scalars.")

flags.DEFINE_string("eval_dataset", _evaluation.dataset, "Held-out real data: digits, fashion_mnist, tfds:<name>, "
                    "a directory of IDX files or of class sub-folders; empty = the teacher's own dataset; none = skip.")
flags.DEFINE_string("eval_data_dir", _evaluation.data_dir, "Where the evaluation dataset is read from.")
flags.DEFINE_string("eval_manual_dir", _evaluation.manual_dir, "TFDS manual download directory (imagenet2012).")
flags.DEFINE_string("eval_split", _evaluation.split, "Split of the evaluation dataset: train or test; any TFDS "
                    "split for tfds:<name>; for a folder of images, the sub-folder to read (e.g. val).")
flags.DEFINE_bool("eval_resize", _evaluation.resize, "Resize evaluation images whose shape differs from the "
                  "teacher's input (done anyway for the teacher's own training data at its training shape).")
flags.DEFINE_integer("eval_max_samples", _evaluation.max_samples,
                     "Evaluate at most this many images, a class-balanced subset; 0 = all.")
flags.DEFINE_integer("latency_runs", _evaluation.latency_runs, "Timed TFLite runs per model and thread count.")
flags.DEFINE_integer("eval_samples_per_class", _evaluation.samples_per_class, "Generated samples per class "
                     "the teacher judges for the report.")
flags.DEFINE_integer("grid_samples_per_class", _evaluation.grid_samples_per_class, "Columns of the sample grid.")
flags.DEFINE_integer("grid_max_classes", _evaluation.grid_max_classes, "Rows (classes) of the sample grid, at most.")


def config_from_flags() -> config_lib.RunConfig:
    """Turns parsed flags into a validated `RunConfig`, as a run records it (`RunConfig.portable`:
    found again from any directory; `--eval_dataset=NONE` is `none`, where it was "unknown
    dataset 'NONE'", listing every value but none)."""
    return config_lib.RunConfig(
        work_dir=FLAGS.work_dir,
        seed=FLAGS.seed,
        teacher=cli.teacher_source(FLAGS.teacher),
        generator=config_lib.GeneratorConfig(variant=FLAGS.generator_variant, noise_dim=FLAGS.noise_dim,
                                             base_channels=FLAGS.generator_channels,
                                             blur_sigma=FLAGS.generator_blur_sigma,
                                             pool_size=FLAGS.generator_pool_size),
        loss=config_lib.LossConfig(cross_entropy=FLAGS.ce_loss_weight, bn_statistics=FLAGS.bn_loss_weight,
                                   bn_distance=FLAGS.bn_distance, bn_layer_weighting=FLAGS.bn_layer_weighting,
                                   diversity=FLAGS.diversity_loss_weight,
                                   mode_seeking=FLAGS.mode_seeking_loss_weight),
        generator_training=config_lib.GeneratorTrainingConfig(
            steps=FLAGS.generator_steps, batch_size=FLAGS.batch_size, learning_rate=FLAGS.generator_learning_rate,
            beta_1=FLAGS.generator_beta_1, beta_2=FLAGS.generator_beta_2, checkpoint_every=FLAGS.checkpoint_every,
            log_every=FLAGS.log_every, image_every=FLAGS.image_every),
        quantization=config_lib.QuantizationConfig(
            scheme=FLAGS.quantization.lower(), keep_first_and_last_at_8_bits=FLAGS.keep_first_and_last_at_8_bits,
            per_channel=FLAGS.per_channel, low_bit_ranges=FLAGS.low_bit_ranges, io_dtype=FLAGS.io_dtype,
            calibration_samples=FLAGS.calibration_samples, allow_float_ops=FLAGS.allow_float_ops),
        distillation=config_lib.DistillationConfig(
            steps=FLAGS.distillation_steps, batch_size=FLAGS.distillation_batch_size,
            learning_rate=FLAGS.distillation_learning_rate, temperature=FLAGS.temperature,
            label_loss_weight=FLAGS.label_loss_weight, feature_loss_weight=FLAGS.feature_loss_weight,
            mixed_fraction=FLAGS.mixed_fraction,
            shift_fraction=FLAGS.shift_fraction, flip=FLAGS.flip,
            joint_generator=FLAGS.joint_generator, checkpoint_every=FLAGS.distillation_checkpoint_every,
            log_every=FLAGS.distillation_log_every),
        evaluation=config_lib.EvaluationConfig(
            samples_per_class=FLAGS.eval_samples_per_class, grid_samples_per_class=FLAGS.grid_samples_per_class,
            grid_max_classes=FLAGS.grid_max_classes, dataset=FLAGS.eval_dataset, data_dir=FLAGS.eval_data_dir,
            manual_dir=FLAGS.eval_manual_dir,
            split=FLAGS.eval_split, max_samples=FLAGS.eval_max_samples,
            latency_runs=FLAGS.latency_runs, resize=FLAGS.eval_resize),
    ).portable()


def main(argv=None) -> int:
    """Runs the command; returns the process exit status."""
    argv = list(sys.argv if argv is None else argv)

    def run():
        run_config = config_from_flags()
        ignored = cli.ignored_teacher_flags_note(FLAGS.teacher)
        if ignored:
            print(ignored)
        if FLAGS.deterministic:
            reproducibility.enable_deterministic_execution()
        pipeline.run(run_config, progress=FLAGS.progress, generator_from=FLAGS.generator_from)

    return cli.run_command(FLAGS, argv, run)


def main_entry():
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    main_entry()
