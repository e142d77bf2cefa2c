"""What the four entry scripts share: environment, logging, and turning errors into messages."""

from __future__ import annotations

import argparse
import errno
import gc
import logging
import os
import re
import select
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable, NoReturn

from app.interrupt_watchdog import InterruptWatch, unanswered_interrupts_end_the_process

# TensorFlow's start-up lines that say nothing actionable to a metatune user. TF 2.21 writes them
# through absl before its logging is initialised, so TF_CPP_MIN_LOG_LEVEL does not hide them.
START_UP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|oneDNN custom operations are on|cudart_stub\.cc|"
    r"cpu_feature_guard\.cc|To enable the following instructions|failed call to cuInit|"
    r"Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered|TF-TRT Warning"
)

# TensorFlow's Python warnings that are about its own internals, not the user's run: a Keras
# predict() or evaluation on a new model object retraces its step function by design (the source
# stage scores several candidate models), and TF then advises code changes the user cannot make.
RUNTIME_NOISE = re.compile(r"triggered tf\.function retracing")


# A full disk, a quota, a read-only filesystem: the user's to fix, reported like any bad input.
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
PERMISSION_ERRORS = {errno.EACCES, errno.EPERM}
# A path the file system refuses by its form, before looking for it (a name over 255 bytes: a pasted text, a
# generated name): pathlib's exists() and is_dir() raise it rather than answer False, wherever a path is checked.
PATH_FORM_ERRORS = {errno.ENAMETOOLONG}
# The same as TensorFlow reports them from its own writers (TensorBoard event files, SavedModel variables).
DISK_MESSAGES = re.compile("|".join(re.escape(os.strerror(code)) for code in sorted(DISK_ERRORS)))


class Terminated(BaseException):
    """SIGTERM (a scheduler, `kill`): raised in the main thread like Ctrl-C's KeyboardInterrupt, so a run
    stops the same way, its temporary files removed, with the same message. A BaseException, as
    KeyboardInterrupt is: the `except Exception` of code that reports a damaged file must not take it
    for one."""

# What TensorFlow says when an input file it reads inside tf.data is gone or no longer decodes
# (it changed after the data check: the doctor trusts a file whose size and modification time are
# unchanged, and nothing stops a file being deleted during a run). Other TensorFlow errors are bugs
# and keep their traceback.
UNREADABLE_INPUT = re.compile(
    r"No such file or directory|cannot identify image file|UnidentifiedImageError|Invalid (JPEG|PNG|GIF|BMP) data|"
    r"jpeg::Uncompress failed|Unknown image file format|image file is truncated|Input is not a (JPEG|PNG)|"
    r"not a regular file"
)


def _ascii_number(kind: type, example: str):
    """argparse type: `kind`(text) for a number written in ASCII. int() and float() also take other scripts' digits
    (`--epochs ٣` trained 3 epochs, `--learning-rate ١e-3` at 0.001), which a config file refuses; the command line
    now agrees. Named like `kind`, so other bad text keeps argparse's "invalid int value: 'abc'"."""

    def parse(text: str):
        if not text.isascii():
            raise argparse.ArgumentTypeError(f"must be {example} written in the ASCII digits 0-9, as a config file "
                                             f"takes it. Received: {text!r}")
        return kind(text)

    parse.__name__ = kind.__name__
    return parse


# The entry scripts' number types (never int or float themselves: tests/app/test_config_leftovers.py checks).
whole_number = _ascii_number(int, "a whole number")
number = _ascii_number(float, "a number (like 0.001 or 1e-3)")


def positive_int(text: str) -> int:
    """argparse type for counts such as --top-k: 0 and negatives were silently taken as 1."""
    try:
        value = whole_number(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number. Received: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1. Received: {value}")
    return value


def path_argument(text: str) -> str:
    """argparse type for a path: an empty one (`""`, an unset shell variable) named the current folder, so
    `predict.py RUN_DIR ""` predicted every image under it and `evaluate.py --unknown ""` scored it as unknown."""
    if not text:
        raise argparse.ArgumentTypeError("is empty. Received: ''. Pass a path (an unset shell variable gives an "
                                         "empty one)")
    return text


# The largest --batch-size of every command: a batch holds that many files' tensors at once (65,536 images at 224 px
# are 39 GB), and prediction with a batch near 2**31 - 1 hung in TensorFlow instead of failing.
MAX_BATCH_SIZE = 65536


def batch_size(text: str) -> int:
    """argparse type for --batch-size: a positive count up to MAX_BATCH_SIZE (10**20 overflowed TensorFlow's
    int64 in a traceback, 2**31 - 1 hung prediction)."""
    value = positive_int(text)
    if value > MAX_BATCH_SIZE:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_BATCH_SIZE} (32 to 256 is usual). Received: {value}")
    return value


# What prepare_environment could not do (a bad METATUNE_CPU_DEVICES); run_safely reports it as
# the command's one ERROR line, since prepare_environment runs at import, before main().
_environment_problem: str | None = None


def prepare_environment(*, splits_batches: bool) -> None:
    """Must run before TensorFlow/Keras are imported (entry scripts call it first).

    splits_batches: whether this command may split a batch across replicas (train.py, under a
    tf.distribute strategy). Only then is oneDNN turned off for several logical CPUs or TF_CONFIG
    (app/cpu_devices.avoid_onednn_for_split_batches): evaluate.py, predict.py and export.py build no
    strategy, so every batch runs whole on one device and never has an empty share, and turning
    oneDNN off there would only make them slower. Keyword-only, no default: a new entry script decides.
    """
    global _environment_problem
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's C++ INFO/WARNING lines
    from app.cpu_devices import avoid_onednn_for_split_batches, split_cpu_from_environment

    if splits_batches:
        avoid_onednn_for_split_batches()  # before the import: TensorFlow reads it once
    try:
        import_tensorflow_quietly()
    except KeyboardInterrupt:  # Ctrl-C in a command's first seconds printed a traceback of TensorFlow's modules
        setup_logging()
        logging.getLogger("metatune").error("Interrupted.")
        raise SystemExit(130) from None

    _environment_problem = split_cpu_from_environment()


def import_tensorflow_quietly() -> None:
    """Import TensorFlow (and let it probe for GPUs) with its start-up chatter filtered out.

    The lines come from C++ straight to file descriptor 2, so the descriptor itself is captured
    for the import and everything that is not a known start-up line (an import error, a real
    warning) is written back to stderr afterwards.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # the CUDA probe logs on first use: inside the capture
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode("utf-8", errors="replace").splitlines(keepends=True):
                if not START_UP_NOISE.search(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    for noisy in ("absl", "tensorflow", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    tensorflow_logger = logging.getLogger("tensorflow")
    # TensorFlow gives its logger a handler of its own when imported before logging is set up (always here:
    # prepare_environment imports it first), so each of its warnings came out twice, once in each format.
    for handler in list(tensorflow_logger.handlers):
        tensorflow_logger.removeHandler(handler)
    if not any(isinstance(f, _DropRuntimeNoise) for f in tensorflow_logger.filters):
        tensorflow_logger.addFilter(_DropRuntimeNoise())


class _DropRuntimeNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not RUNTIME_NOISE.search(record.getMessage())


def tensorboard_command() -> str:
    """`tensorboard`, or this environment's own where that is not on PATH: the README runs `.venv/bin/python
    train.py` without activating the environment, and the bare command it was given then was "command not found"."""
    if shutil.which("tensorboard"):
        return "tensorboard"
    beside = Path(sys.executable).parent / "tensorboard"
    return str(beside) if beside.is_file() else "tensorboard"


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only where X tells the reader something (the entry scripts' --help).

    Not None: an option without a default, or one decided at run time (the backbone's size, the data's recipe)
    whose help text says what it is; the appended "(default: None)" read as a value, or contradicted the text
    before it ("... (default: 128). (default: None)"). Not the False of an on-only flag (store_true) nor the empty
    list of a repeatable option: both just mean "not given". An --x/--no-x flag keeps its default: either may be it.
    """

    def _get_help_string(self, action):
        on_only_flag = action.const is True and action.default is False
        if action.default is None or on_only_flag or (isinstance(action.default, list) and not action.default):
            return action.help
        return super()._get_help_string(action)


class OneErrorLineParser(argparse.ArgumentParser):
    """The entry scripts' parser: a usage error (a misspelt flag, a value of the wrong type or outside the
    choices, a missing argument) is the one ERROR line every other bad input gets, exit status 2. argparse's own
    error() printed the whole usage first: about 40 lines for train.py, above a line of another form."""

    def error(self, message: str):
        setup_logging()  # evaluate.py, predict.py and export.py parse before they set logging up
        logging.getLogger("metatune").error("%s. See python %s --help for the options and their values.",
                                            message.rstrip("."), self.prog)
        self.exit(2)


def run_safely(command: Callable[[], int]) -> int:
    """Run `command`; user errors become one 'error:' line and exit status 2, no traceback; Ctrl-C and SIGTERM
    one line saying how to continue."""
    from app.errors import UserError

    def checked_command() -> int:
        from app.run_dir import set_active_run

        from data.atomic_write import fault_setting_problem

        set_active_run(None)  # each command starts with no run of its own (tests call main() again and again)
        if problem := _environment_problem or fault_setting_problem():
            raise UserError(problem)
        status = command()
        if sys.stdout is not None:  # None: started with standard output closed (`>&-`); nothing to flush
            sys.stdout.flush()  # here, not at exit: a reader gone away (`| head`) is then handled below
        return status

    def terminate(signum, frame):
        raise Terminated()

    try:
        previous, installed = signal.signal(signal.SIGTERM, terminate), True
    except ValueError:  # not the main thread (a test calling main() from a thread): keep the default
        previous, installed = None, False
    previous_hook = sys.unraisablehook
    if installed:
        sys.unraisablehook = _redeliver_lost_interrupt(previous_hook)
    try:
        with unanswered_interrupts_end_the_process(_end_unanswered_interrupt) as watch:
            return _reported(checked_command, watch)
    finally:
        if installed:  # None: a handler not set from Python, which is the default one here
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
            sys.unraisablehook = previous_hook


# The statuses of a command stopped by Ctrl-C (130) or SIGTERM (143), as a shell reports them (128 + the signal).
INTERRUPTED_STATUSES = (130, 143)


def _interrupt_status(terminated: bool) -> int:
    return 143 if terminated else 130


# How long exit_command waits for what a command left behind to be released (a tf.data iterator waits for its decodes
# in progress, one file's decode each) before it ends the process without Python's finalization: a decode that hangs
# (a hung network file system) would otherwise hold the exit for good.
RELEASE_WAIT_S = 15.0


def exit_command(main: Callable[[], int]) -> NoReturn:
    """The entry scripts' sys.exit(main()), without the hang at exit. Why: Python's finalization collects what the
    command left, tf.data iterators among them (kept alive by reference cycles: an exception's traceback holds the
    frames that held them), and one whose Pillow decode (tf.numpy_function) was still running waits for it forever,
    since a finalizing Python lets no other thread run Python code again. A run whose input file became unreadable
    during a pass, whose disk filled, that was SIGTERM'd or that hit a bug printed its ERROR line (or traceback), then
    hung until SIGKILL (most runs that failed early in a pass, with decodes of 0.3 s: tests/test_exit_after_errors.py).

    So: after Ctrl-C or SIGTERM (the command may be stuck in a decode), os._exit once the output is flushed; the
    command's own cleanup (finally blocks, temporary files) ran before main() returned. Any other status, a bug's
    traceback (printed as Python prints it, status 1) included: the cycles are collected while those decodes can still
    finish, then Python exits as usual (atexit handlers, logging's flush); only if that collection has not ended after
    RELEASE_WAIT_S (a decode that hangs) does the process end with os._exit and the same status."""
    try:
        status = main()
    except Exception:  # a bug: its traceback is printed here, so that the frames it holds can be released below
        sys.excepthook(*sys.exc_info())
        status = 1
    _flush_output()
    if status in INTERRUPTED_STATUSES:
        os._exit(status)
    _release_leftovers(status)
    sys.exit(status)


def _release_leftovers(status: int) -> None:
    """Collect the reference cycles the command left (see exit_command), ending the process with `status` if that
    takes more than RELEASE_WAIT_S."""
    def give_up() -> None:
        _flush_output()
        os._exit(status)

    timer = threading.Timer(RELEASE_WAIT_S, give_up)
    timer.daemon = True
    timer.start()
    try:
        gc.collect()
    finally:
        timer.cancel()


def _flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be shown
            pass


def _redeliver_lost_interrupt(previous_hook):
    """A sys.unraisablehook that sends a lost Ctrl-C or SIGTERM again. Why: Python drops an exception raised
    while a finalizer (__del__) runs, printing it as "Exception ignored in ..." with a traceback; a Ctrl-C that
    arrived during TensorFlow's ConcreteFunctionGarbageCollector.__del__ was lost that way and the run trained
    on to its end (measured under --distribute mirrored, 1 Ctrl-C in 3). It is raised again from a thread, a
    moment later, so that the main thread is out of the finalizer (and this hook) when its handler runs."""
    import _thread

    def hook(unraisable) -> None:
        error = unraisable.exc_value
        if not isinstance(error, (KeyboardInterrupt, Terminated)):
            previous_hook(unraisable)
            return
        signum = signal.SIGTERM if isinstance(error, Terminated) else signal.SIGINT
        timer = threading.Timer(0.05, _thread.interrupt_main, (signum,))
        timer.daemon = True  # never holds the process at its exit
        timer.start()

    return hook


def _reported(checked_command: Callable[[], int], watch: InterruptWatch) -> int:
    """checked_command's status, or that of the one ERROR line its failure becomes (see run_safely)."""
    from app.errors import USER_ERRORS

    try:
        return checked_command()
    except USER_ERRORS as error:
        logging.getLogger("metatune").error("%s", error)
        return 2
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        return SIGPIPE_STATUS
    except OSError as error:
        if error.errno in PERMISSION_ERRORS and error.filename:  # a folder or file this user may not write or read
            logging.getLogger("metatune").error(
                "%s: %s. Give this user access to it, or choose another place (--output RUN_DIR), then run the same "
                "command again (an interrupted train.py run: python train.py --resume RUN_DIR).",
                error.strerror or "Permission denied", error.filename)
            return 2
        if error.errno in PATH_FORM_ERRORS and error.filename:
            _path_form_error(error)
            return 2
        if error.errno not in DISK_ERRORS and not DISK_MESSAGES.search(str(error)):
            raise
        _disk_error(f" {error.filename}" if error.filename else "", error.strerror or str(error))
        return 2
    except (KeyboardInterrupt, Terminated) as error:
        if watch.first_to_report():  # else the watchdog said it, and is ending the process
            _interrupted(isinstance(error, Terminated))
        return _interrupt_status(isinstance(error, Terminated))
    except Exception as error:  # noqa: BLE001  only an input file that became unreadable is turned into a message
        disk = DISK_MESSAGES.search(str(error))
        if disk is not None:  # TensorFlow's own writers: the message names no file we can trust, the reason
            logging.getLogger("metatune").debug("TensorFlow's error", exc_info=True)
            _disk_error("", disk.group(0))
            return 2
        if _out_of_memory(error):
            _memory_error(error)
            return 2
        cut_short = _image_store_cut_short(error)
        if cut_short is not None:
            _image_cache_error(cut_short)
            return 2
        detail = unreadable_input(error)
        if detail is None:
            raise
        if _in_image_cache(detail):
            _image_cache_error(detail)
            return 2
        logging.getLogger("metatune").debug("TensorFlow's error", exc_info=True)
        logging.getLogger("metatune").error(
            "An input file could not be read: %s. It changed or disappeared after the data check; check the folder "
            "(train.py DATA_DIR --check) and run the command again (an interrupted train.py run stays INCOMPLETE; "
            "--resume RUN_DIR continues it if its files are as before).", detail)
        return 2


def _interrupted(terminated: bool) -> None:
    """The one line of a command stopped by Ctrl-C or SIGTERM (`terminated`), naming the run to resume."""
    from app.run_dir import active_run, shell_path

    run = active_run()
    resume = (f" {shell_path(run)} stays INCOMPLETE: continue it with python train.py --resume "
              f"{shell_path(run)}." if run is not None else "")
    logging.getLogger("metatune").error("Interrupted%s.%s", " (SIGTERM)" if terminated else "", resume)


# How long a process ending itself on an unanswered interrupt waits for the atomic writes in progress (a checkpoint of
# a large model on a slow disk), so that it leaves none half-done: a scheduler's grace period is 30 s by default.
WRITE_WAIT_S = 15.0


def _end_unanswered_interrupt(signum: int, watch: InterruptWatch) -> None:
    """The main thread did not act on Ctrl-C or SIGTERM in time, stuck inside a call into TensorFlow
    (app/interrupt_watchdog.py): end the process from the watchdog thread as the main thread would have, with
    its line and status. os._exit runs no cleanup: the writes in progress finish first, and what is left is what a
    `kill -9` between two writes leaves (the run lock goes with the process), which a resume continues from."""
    from data.atomic_write import stop_writes

    unfinished = stop_writes(WRITE_WAIT_S)
    if unfinished:
        logging.getLogger("metatune").warning(
            "A write did not finish within %.0f s; its temporary file is left (%s), never taken for the file itself: "
            "the next run of the command (train.py --resume RUN_DIR) removes it.",
            WRITE_WAIT_S, ", ".join(str(path) for path in unfinished))
    if watch.first_to_report():
        _interrupted(signum == signal.SIGTERM)
    _flush_output()
    os._exit(_interrupt_status(signum == signal.SIGTERM))


# What a shell reports for a command that a closed pipe ended (128 + SIGPIPE), as for `cat FILE | head`.
SIGPIPE_STATUS = 141


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader went away (`predict.py RUN_DIR DIR | head`: Python ignores
    SIGPIPE, so a print raises BrokenPipeError). Then nothing more can be shown: the command ends quietly, as one
    that SIGPIPE ends, with stdout pointed at /dev/null so that Python's flush at exit cannot fail again (it
    printed "Exception ignored ... BrokenPipeError"). Another pipe's error (a child process's) stays a bug."""
    try:
        descriptor = sys.stdout.fileno()
        poller = select.poll()
        poller.register(descriptor, select.POLLOUT)
        closed = any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no descriptor (a test's capture), or no poll: unknown
        return False
    if closed:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, descriptor)
        os.close(devnull)
    return closed


def _in_image_cache(detail: str) -> bool:
    """Whether TensorFlow's unreadable file is `--image-cache disk`'s store, not an input file."""
    from data.image_store import image_store_dir

    return str(image_store_dir()) in detail


# What TensorFlow says when `--image-cache disk`'s store was truncated while a run read it: the record reader on a
# length that is no whole number of images (the message names the file), or, on a whole number of them, the row
# count the store asserts (data/image_store.py holds the only FixedLengthRecordDataset and assert_cardinality
# metatune uses, so either message means the store).
_STORE_LENGTH = re.compile(r"not an exact multiple of the record length|"
                           r"was expected to contain (\d+) elements but contained only (\d+)")


def _image_store_cut_short(error: BaseException) -> str | None:
    """The detail for _image_cache_error where `error` is the image store read short (a traceback before), else
    None."""
    tensorflow = sys.modules.get("tensorflow")
    if tensorflow is None or not isinstance(error, tensorflow.errors.OpError):
        return None
    message = getattr(error, "message", str(error))
    found = _STORE_LENGTH.search(message)
    if found is None:
        return None
    if found.group(1):
        return f"its store was cut short ({found.group(2)} of its {found.group(1)} images left)"
    return _first_matching_line(message, _STORE_LENGTH)


def _image_cache_error(detail: str) -> None:
    """The store was removed or changed while a run read it (`rm -r` of the cache's images/ during training):
    reported as "an input file could not be read ... check the folder", it sent the user to a data folder that
    was fine."""
    from app.run_dir import active_run, shell_path

    run = active_run()
    again = (f"continue the run with python train.py --resume {shell_path(run)}, which builds it again"
             if run is not None else "run the command again, which builds it again")
    logging.getLogger("metatune").error(
        "The image cache (--image-cache disk) was removed or changed while it was being read: %s. Leave the "
        "cache's images/ folder alone while a run uses it; %s.", detail, again)


def _out_of_memory(error: BaseException) -> bool:
    """Python's MemoryError, or TensorFlow's ResourceExhaustedError (its allocator's "OOM when allocating
    tensor"), looked up only when TensorFlow is loaded: `--help` and the argument checks never import it."""
    if isinstance(error, MemoryError):
        return True
    tensorflow = sys.modules.get("tensorflow")
    errors = getattr(tensorflow, "errors", None)
    return errors is not None and isinstance(error, errors.ResourceExhaustedError)


def _memory_error(error: BaseException) -> None:
    """Out of memory anywhere (a huge --hidden-units was a traceback): the sizes behind it are the user's, so
    say which ones to lower. Meta-training, whose sizes are its own, names them (app/meta_training.py)."""
    from app.errors import tensorflow_error_summary
    from app.run_dir import active_run, shell_path

    logging.getLogger("metatune").debug("The out-of-memory error", exc_info=True)
    run = active_run()
    where = (f" {shell_path(run)} stays INCOMPLETE: start a new run (--output NEW_DIR) with smaller values, or "
             f"continue this one (python train.py --resume {shell_path(run)}) once more memory is free."
             if run is not None else " Run the command again with smaller values or with more memory free.")
    logging.getLogger("metatune").error(
        "Out of memory (%s): what this command was asked to hold does not fit in this machine's memory. Lower the "
        "sizes it was given (--batch-size, --image-size, --hidden-units, --embedding-units, ...).%s",
        tensorflow_error_summary(error), where)


def _path_form_error(error: OSError) -> None:
    """One line for a path the file system cannot take (PATH_FORM_ERRORS), shortened: it may be a whole text."""
    from data.scan import shortened

    shown = repr(shortened(os.fsdecode(error.filename)))
    logging.getLogger("metatune").error(
        "%s: %s. Received a path the file system cannot take (at most 255 bytes per name, 4096 per path); pass a "
        "shorter one (rename the file or folder), then run the same command again.",
        error.strerror or "File name too long", shown)


def _disk_error(where: str, reason: str) -> None:
    logging.getLogger("metatune").error(
        "Could not write%s: %s. Nothing half-written was left in its place; free some space (or write somewhere "
        "writable), then run the same command again (an interrupted train.py run: python train.py --resume "
        "RUN_DIR).", where, reason)


def unreadable_input(error: BaseException) -> str | None:
    """The first line of a TensorFlow error about an input file it could not read or decode, without
    TensorFlow's node annotations; None for any other error."""
    tensorflow = sys.modules.get("tensorflow")
    if tensorflow is None or not isinstance(error, tensorflow.errors.OpError):
        return None
    message = getattr(error, "message", str(error))
    if not UNREADABLE_INPUT.search(message):
        return None
    return TF_DATA_PREFIX.sub("", _first_matching_line(message, UNREADABLE_INPUT))


# tf.data's wrapping of an error raised inside a map function (a file that turned unreadable during a training
# epoch): the ERROR line began with it, before the file it named.
TF_DATA_PREFIX = re.compile(r"^Error in user-defined function passed to \S+ transformation with iterator: \S+: ")


def _first_matching_line(message: str, pattern: re.Pattern) -> str:
    """The line of TensorFlow's `message` that `pattern` matches, without its node annotations."""
    first = next((line for line in message.splitlines() if pattern.search(line)), message)
    return re.sub(r"\{\{[^}]*\}\}|\[\[.*?\]\]", "", first).strip(" ;")[:400]
