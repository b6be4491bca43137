"""The shell of the entry points: help, as users ask for it, and the checks every flag gets as it is read."""

import dataclasses
import os
import subprocess
import sys

import pytest
from absl import flags

from zscgan_tf import cli, flag_names, train
from zscgan_tf.config import MAX_SEED
from zscgan_tf.errors import UserError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("argument", ["--help", "-h", "-?", "--helpshort"])
def test_help_prints_the_docstring_and_own_flags_and_runs_nothing(argument, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # The flags after --help would start a run in ./runs/demo if help did not stop it.
    assert train.main(["train", argument, "--generator_steps=1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("The main command: `python -m zscgan_tf.train")
    assert "\nflags:\n" in out
    assert "--work_dir: Directory for checkpoints" in out and "--distillation_steps:" in out
    assert "--helpfull lists every flag" in out
    assert os.listdir(tmp_path) == []


def test_helpfull_lists_flags_of_every_module(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Had it run the demo, it would have written runs/demo into the checkout.
    assert train.main(["train", "--helpfull"]) == 0
    out = capsys.readouterr().out
    assert "--work_dir" in out and "zscgan_tf.train:" in out
    assert "--flagfile" in out  # absl's own flags, defined in another module.
    assert os.listdir(tmp_path) == []


def test_help_into_a_pipe_closed_early_ends_as_a_pipe_closed_ends_a_command():
    # `--helpfull | head -1`: a BrokenPipeError traceback and status 1, where `head` had read its line.
    process = subprocess.Popen([sys.executable, "-m", "zscgan_tf.train", "--helpfull"], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # Before it writes: the help meets a pipe no one reads.
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 141 and "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


def test_teacher_flags_name_a_teacher_source_again():
    from absl import flags

    from zscgan_tf.teachers import TeacherSource
    # Every field but the model has its flag (one added to TeacherSource later would be left out without a word).
    assert set(flag_names.TEACHER_FIELD_FLAGS) == {field.name for field in dataclasses.fields(TeacherSource)} - {
        "model"}
    source = TeacherSource(model="my models/mobilenet_v2.keras", weights="none", alpha=0.35, input_size=32,
                           num_classes=10, channels=1, preprocessing="custom", preprocessing_mean=(0.5,),
                           preprocessing_std=(1 / 255,),  # `:g` gave 0.00392157: another preprocessing.
                           trust_model_code=True, cache_dir="/cache", custom_objects=("my.layers", "more.py"))
    flag_values = flags.FlagValues()
    cli.define_teacher_flags(flag_values)
    flags.DEFINE_string("teacher", None, "", flag_values=flag_values)
    # The names library modules give in messages are the flags the entry points define.
    assert set(flag_names.TEACHER_FLAG_NAMES) == set(flag_values) - {"teacher"}
    assert set(flag_names.TEACHER_FIELD_FLAGS.values()) == set(flag_names.TEACHER_FLAG_NAMES)
    flag_values(["command", *flag_names.teacher_flags(source)])
    assert cli.teacher_source(flag_values.teacher, flag_values) == source
    assert flag_names.teacher_flags(TeacherSource(model="mine.keras")) == ["--teacher=mine.keras"]  # Defaults left out.
    # The advice naming a preprocessing alone writes its values as exactly (it kept 6 digits).
    from zscgan_tf.preprocessing import Preprocessing
    assert flag_names.preprocessing_flags(Preprocessing("custom", (0.5,), (1 / 255,))) == (
        "--teacher_preprocessing=custom --teacher_preprocessing_mean=0.5 "
        "--teacher_preprocessing_std=0.00392156862745098")


def test_no_library_module_imports_the_flags_or_the_entry_points():
    # Flags live in entry points (STYLE.md): the conversion modules imported `cli`, and through it absl.flags.
    import ast
    package = os.path.dirname(cli.__file__)
    importing = {}
    for name in sorted(os.listdir(package)):
        if not name.endswith(".py") or name in ("cli.py", "train.py"):
            continue
        with open(os.path.join(package, name)) as module_file:
            tree = ast.parse(module_file.read())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {f"{node.module}.{alias.name}" for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module for alias in node.names}
        wrong = sorted(module for module in imported
                       if module.split(".")[:2] == ["absl", "flags"] or module.split(".")[:2] in (
                           ["zscgan_tf", "cli"], ["zscgan_tf", "train"]))
        if wrong:
            importing[name] = wrong
    assert importing == {}


def test_usage_of_a_module_without_flags_is_its_docstring():
    assert cli.usage(train.FLAGS, "zscgan_tf.errors").startswith("The one exception type")
    assert "flags:" not in cli.usage(train.FLAGS, "zscgan_tf.errors")


# One process for each entry point, which checks all the flags named for it: each process starts Python with
# TensorFlow (5 to 7 s on 2 cores); a second process of train's and of convert's help checked only one flag more.
@pytest.mark.parametrize("entry_point, first_line, its_flags", [
    # The teacher flags both commands share (`cli.define_teacher_flags`) are part of each one's help.
    (["-m", "zscgan_tf.train"], "The main command:", ["--quantization", "--teacher_preprocessing"]),
    (["tools/convert.py"], "Exports a TFLite model", ["--calibration_samples", "--teacher_input_size"]),
    (["tools/train_teacher.py"], "Trains a small batch-normalized teacher", ["--architecture"]),
    (["tools/benchmark.py"], "Benchmarks data-free quantization", ["--generator_pool_draws"]),
    (["tools/memory_benchmark.py"], "Measures resident memory", ["--batch_size"]),
    (["tools/architecture_check.py"], "Checks which Keras Applications architectures", ["--architectures"]),
])
def test_every_entry_point_answers_help_from_a_real_process(entry_point, first_line, its_flags):
    result = subprocess.run([sys.executable, *entry_point, "--help"], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(first_line)
    assert "\nflags:\n" in result.stdout
    for a_flag in its_flags:
        assert f"  {a_flag}:" in result.stdout, a_flag
    # The README promises it of every command; train_teacher and the two checks refused it as unknown.
    assert "  --[no]verbose: Show tracebacks of errors." in result.stdout


def test_a_home_directory_in_a_path_flag_or_flagfile_is_the_users(tmp_path, monkeypatch):
    home = tmp_path / "home"
    os.makedirs(home)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    # A shell leaves "~" after "--flag=" as it is, and a flagfile is not read by a shell at all.
    (home / "run.cfg").write_text("--work_dir=~/runs/first\n")
    cli.parse_flags(train.FLAGS, ["train", "--flagfile=~/run.cfg", "--teacher_custom_objects=~/layers.py,my.layers",
                                  "--eval_dataset=~/images"])
    assert train.FLAGS.work_dir == str(home / "runs" / "first")
    assert train.FLAGS.teacher_custom_objects == [str(home / "layers.py"), "my.layers"]
    assert train.FLAGS.eval_dataset == str(home / "images")
    assert train.FLAGS.teacher == "builtin:digits_resnet8" and train.FLAGS.quantization == "w8a8"  # Not paths.
    cli.parse_flags(train.FLAGS, ["train"])  # Back to the defaults for the tests after.
    assert train.FLAGS.work_dir == "runs/demo"


def test_a_path_flag_goes_up_from_a_symbolic_link_where_the_system_goes(tmp_path, monkeypatch):
    (tmp_path / "disk" / "sub").mkdir(parents=True)
    os.symlink(tmp_path / "disk" / "sub", tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    # abspath and TensorFlow took "link/.." as text: config.json went to disk/runs/w, checkpoints to runs/w.
    cli.parse_flags(train.FLAGS, ["train", "--work_dir=link/../runs/w", "--teacher_custom_objects=link/../l.py,my.l",
                                  "--eval_dataset=./images/../idx"])
    assert train.FLAGS.work_dir == str(tmp_path / "disk" / "runs" / "w")
    assert train.FLAGS.teacher_custom_objects == [str(tmp_path / "disk" / "l.py"), "my.l"]
    assert train.FLAGS.eval_dataset == "idx"  # No link to follow: only normalized, as given otherwise.
    cli.parse_flags(train.FLAGS, ["train"])  # Back to the defaults for the tests after.
    assert train.FLAGS.work_dir == "runs/demo"


def test_once_a_command_runs_it_answers_ctrl_c_itself_and_python_prints_errors_as_before(monkeypatch):
    from absl import flags

    from zscgan_tf import start_up

    def hook_before(*error):
        pass

    monkeypatch.setattr(sys, "excepthook", hook_before)
    start_up.one_line_interrupt_while_starting()  # As the package's import does in a command.
    assert sys.excepthook is not hook_before

    def body():
        assert sys.excepthook is hook_before
        raise KeyboardInterrupt

    assert cli.run_command(flags.FlagValues(), ["command"], body) == cli.INTERRUPTED_STATUS
    assert sys.excepthook is hook_before


@pytest.mark.parametrize("arguments, message", [
    # Each passed the range checks ("must be positive") and failed once training ran, blaming the loss.
    (["--temperature=inf"], "--temperature must be a finite number, got inf"),
    (["--generator_learning_rate=inf"], "--generator_learning_rate must be a finite number, got inf"),
    (["--bn_loss_weight=inf"], "--bn_loss_weight must be a finite number, got inf"),
    (["--label_loss_weight=-inf"], "--label_loss_weight must be a finite number, got -inf"),
    # numpy takes seeds below 2**32; a pool's members add 1000 each (its second failed after the first trained).
    (["--seed=4294967296"], "--seed must be in [0, 2147483647], got 4294967296"),
    (["--seed=2147483648"], "--seed must be in [0, 2147483647], got 2147483648"),
    # Into TensorFlow's int32 shapes it overflowed: "Invalid value in tensor used for shape: -727379968".
    (["--batch_size=1000000000000"], "--batch_size must be within int32, [-2147483648, 2147483647], got 1000000000000"),
    # absl quoted a Python tuple.
    (["--flip=yes"], "flag --flip=yes: a boolean flag takes true or false (or --name / --noname)"),
])
def test_numbers_no_range_check_would_catch_are_refused_as_flags_are_read(arguments, message):
    with pytest.raises(UserError) as raised:
        cli.parse_flags(train.FLAGS, ["train", *arguments])
    assert str(raised.value) == message
    cli.parse_flags(train.FLAGS, ["train", "--seed=2147483647"])  # The largest seed is taken.
    assert train.FLAGS.seed == 2147483647
    cli.parse_flags(train.FLAGS, ["train"])  # Back to the defaults for the tests after.


def test_a_seed_flag_with_its_own_upper_bound_takes_seeds_up_to_it():
    # tools/convert.py's --seed is a run's calibration seed, its --seed plus an offset: convert.py refused the
    # seed it advised for a run seeded near the largest --seed.
    flag_values = flags.FlagValues()
    flags.DEFINE_integer("seed", 0, "A derived seed.", lower_bound=0, upper_bound=MAX_SEED + 3,
                         flag_values=flag_values)
    cli.parse_flags(flag_values, ["tool", f"--seed={MAX_SEED + 3}"])
    assert flag_values.seed == MAX_SEED + 3
    with pytest.raises(UserError) as raised:
        cli.parse_flags(flag_values, ["tool", f"--seed={MAX_SEED + 4}"])
    assert str(raised.value) == (f"flag --seed={MAX_SEED + 4}: {MAX_SEED + 4} is not an integer in the range "
                                 f"[0, {MAX_SEED + 3}]")


@pytest.mark.parametrize("resumable, kept", [
    (True, "what was written before stays (a run resumes from its last checkpoint)"),
    (False, "what was written before stays")])  # A conversion starts again: it has no checkpoint.
def test_a_full_disk_tells_of_checkpoints_only_in_a_command_that_resumes(resumable, kept, capsys):
    import errno
    from absl import flags

    def body():
        raise OSError(errno.ENOSPC, "No space left on device", "/out/model.tflite")

    assert cli.run_command(flags.FlagValues(), ["command"], body, resumable=resumable) == cli.STORAGE_FULL_STATUS
    assert capsys.readouterr().err.strip() == (
        f"error: the disk is full (writing /out/model.tflite); free some space and rerun the same command: {kept}")


@pytest.mark.parametrize("error", [MemoryError("Unable to allocate 3.64 TiB for an array with shape (10**12, 8, 8, 1)"),
                                   "tensorflow"])
def test_an_allocation_that_fails_is_one_line_and_status_5(error, capsys):
    from absl import flags
    if error == "tensorflow":
        import tensorflow as tf
        error = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[1000000,64,8,8]")

    def body():
        raise error

    assert cli.run_command(flags.FlagValues(), ["command"], body) == cli.OUT_OF_MEMORY_STATUS == 5
    printed = capsys.readouterr().err.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("error: out of memory (") and printed[0].endswith(
        "); lower the batch sizes or sample counts, or free memory, and rerun: what was written before stays")


def test_samples_that_would_not_fit_in_memory_are_refused_before_a_run_starts(tmp_path, tiny_teacher_file,
                                                                              monkeypatch, capsys):
    from zscgan_tf import memory_checks, quantization_stages
    monkeypatch.setattr(memory_checks, "_physical_memory_bytes", lambda: 10 ** 6)  # 1 MB: 3,906 samples of 8x8x1.
    work_dir = tmp_path / "run"
    arguments = ["train", f"--teacher={tiny_teacher_file}", f"--work_dir={work_dir}", "--eval_dataset=none"]
    # Made for whole classes (4 here), and held twice over while they are made: 2,001 asked hold 2 x 2,004.
    assert train.main([*arguments, "--calibration_samples=2001"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --calibration_samples=2001 would hold 2,004 samples of (8, 8, 1) in memory (0.001 GB, 2 copies while "
        "they are made), more than this machine's 0.001 GB")
    assert not work_dir.exists()
    assert quantization_stages.calibration_samples_generated(500, 1000) == 500  # One each of 500 classes.
    assert quantization_stages.calibration_samples_generated(1001, 1000) == 2000


def test_none_and_preprocessing_modes_are_read_in_any_case():
    # Before: "unknown dataset 'NONE'; expected digits, ..." (none not among them), and "unknown preprocessing
    # mode 'TF'".
    cli.parse_flags(train.FLAGS, ["train", "--eval_dataset=NONE", "--teacher_preprocessing=TF"])
    run_config = train.config_from_flags()
    assert run_config.evaluation.dataset == "none" and run_config.teacher.preprocessing == "tf"
    assert cli.preprocessing_from_flags(train.FLAGS).mode == "tf"
    cli.parse_flags(train.FLAGS, ["train"])  # Back to the defaults for the tests after.


def test_flagfiles_that_cannot_be_read_as_flags_are_refused_in_a_plain_line(tmp_path):
    # A model file given as the flagfile (--flagfile=model.keras for --teacher=) ended in a traceback
    # (UnicodeDecodeError). Why it is not text is the locale's encoding's word.
    model_file = tmp_path / "model.keras"
    model_file.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 64)
    with pytest.raises(UserError, match=f"^flagfile '{model_file}' is not text \\(.+\\); save it as UTF-8 text$"):
        cli.parse_flags(train.FLAGS, ["train", f"--flagfile={model_file}"])
    nested = tmp_path / "run.cfg"
    nested.write_text(f"--generator_steps=4\n--flagfile={model_file}\n")
    with pytest.raises(UserError, match="^a flagfile named in a flagfile is not text \\(.+\\)$"):
        cli.parse_flags(train.FLAGS, ["train", f"--flagfile={nested}"])
    missing = tmp_path / "missing_inside.cfg"
    missing.write_text(f"--flagfile={tmp_path / 'nowhere.cfg'}\n")
    with pytest.raises(UserError, match=(f"^cannot open a flagfile named in a flagfile: No such file or directory: "
                                         f"'{tmp_path / 'nowhere.cfg'}'$")):  # It was "ERROR:: Unable to open ...".
        cli.parse_flags(train.FLAGS, ["train", f"--flagfile={missing}"])
    # Saved as "UTF-8 with BOM" (Windows editors): its first flag was "'\\ufeff--generator_steps=4' is not a flag".
    with_bom = tmp_path / "bom.cfg"
    with_bom.write_bytes("\ufeff--generator_steps=4\n".encode("utf-8"))
    with pytest.raises(UserError, match=f"^flagfile '{with_bom}' starts with a byte-order mark \\(saved as UTF-8 "
                                        "with BOM\\), which would be read as part of its first flag; save it as UTF-8 "
                                        "without one$"):
        cli.parse_flags(train.FLAGS, ["train", f"--flagfile={with_bom}"])
    cli.parse_flags(train.FLAGS, ["train"])  # Back to the defaults for the tests after.
