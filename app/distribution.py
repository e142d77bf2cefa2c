"""`--distribute auto|none|mirrored|multi-worker` -> a tf.distribute strategy and what metadata.json records.

Why tf.distribute: it is the engine Keras 3 on TensorFlow documents for several GPUs
(MirroredStrategy) and several machines (MultiWorkerMirroredStrategy, configured by TF_CONFIG);
models, optimizers and metrics built in `strategy.scope()` need no rewrite. Batch sizes are
global: `--batch-size` is split across the replicas (so it must be at least the replica count)
and each replica gets whole episodes of a meta-batch (so `--meta-batch-size` must divide
evenly: splitting an episode's support set would break its prototypes).

What runs under a strategy (DISTRIBUTED_STRATEGIES): `linear` and `finetune`. Under `mirrored`
through Keras' own fit()/predict(), whose built-in losses are averaged over the global batch;
under `multi-worker` through metatune's own training step (app/distributed_loop.py), because
Keras 3's fit() fails under MultiWorkerMirroredStrategy (keras-team/keras#20585). Every worker
runs the same command; only the chief (worker 0) writes the run directory (app/training.py).
The meta strategies are refused under both: their custom train_step computes its own loss
(Keras does not divide it by the replicas, so gradients would come out N times too large) and
would need whole episodes per replica. Refusing says so in one message rather than silently
training on one device; `auto` falls back to `none` for what cannot be mirrored (and says so).

What a worker writes, and what a dead peer becomes: app/multi_worker.py.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from dataclasses import asdict, dataclass

from app.errors import UserError
from app.keras_uneven_batches import allow_uneven_first_batches
from app.worker_rendezvous import DEFAULT_WAIT_S, wait_for_tasks, wait_limit

logger = logging.getLogger(__name__)
DISTRIBUTE_CHOICES = ("auto", "none", "mirrored", "multi-worker")
# The training strategies app/training.py builds and trains under `Distribution.strategy`, per mode.
DISTRIBUTED_STRATEGIES = {"mirrored": ("linear", "finetune"), "multi-worker": ("linear", "finetune")}
TF_CONFIG_EXAMPLE = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}\'')


@dataclass(frozen=True)
class DistributeInfo:
    """metadata.json "distribute": the strategy a run trained under, its replicas (in all) and workers (machines)."""

    strategy: str  # none | mirrored | multi-worker
    replicas: int
    workers: int

    def to_metadata(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Distribution:
    strategy: object  # a tf.distribute.Strategy (the default one for "none")
    info: DistributeInfo
    chief: bool = True  # this process writes the run directory (multi-worker: worker 0 only)


@dataclass(frozen=True)
class ClusterTask:
    """The parts of TF_CONFIG metatune relies on."""

    workers: tuple[str, ...]  # every task's address, the chief's included
    task_type: str
    task_index: int
    has_chief_task: bool = False  # the cluster names a "chief" besides its workers
    address: str = ""  # this task's own host:port, where its server listens

    def others(self) -> dict[str, str]:
        """{"worker 1": "host:port", "chief": ...}: every task but this one, named as TF_CONFIG's jobs name them
        (`workers` lists the worker job's addresses first, then the chief's)."""
        named = {f"worker {i}" if i < len(self.workers) - self.has_chief_task else "chief": address
                 for i, address in enumerate(self.workers)}
        return {name: address for name, address in named.items() if address != self.address}

    @property
    def is_chief(self) -> bool:
        """The one task that writes the run directory: the "chief" task, or worker 0 when there is none
        (MultiWorkerMirroredStrategy's convention)."""
        if self.has_chief_task:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0


def parse_tf_config(text: str | None, resume_dir: str | None = None) -> ClusterTask:
    """TF_CONFIG as multi-worker training needs it; a UserError naming what is wrong otherwise.
    resume_dir: the run being resumed (--resume takes no --distribute, so the advice differs)."""
    if (not text or not text.strip()) and resume_dir is not None:
        raise UserError(f"{resume_dir} was started with --distribute multi-worker, so resuming it needs TF_CONFIG, "
                        f"the cluster description every worker is started with. Received: --resume {resume_dir} with "
                        "TF_CONFIG unset. Start every worker again with its TF_CONFIG and the same --resume, or "
                        "continue it on this machine alone as a one-worker cluster: TF_CONFIG='{\"cluster\": "
                        "{\"worker\": [\"127.0.0.1:12345\"]}, \"task\": {\"type\": \"worker\", \"index\": 0}}' "
                        f"python train.py --resume {resume_dir}")
    if not text or not text.strip():
        raise UserError("--distribute multi-worker needs TF_CONFIG, the cluster description every worker is started "
                        f"with. Received: TF_CONFIG unset. Set it on each machine, e.g. {TF_CONFIG_EXAMPLE} "
                        "(index 1 on the second), or use --distribute mirrored for the GPUs of one machine.")

    def bad(problem: str) -> UserError:
        return UserError(f"TF_CONFIG is malformed: {problem}. Received: TF_CONFIG={text[:300]!r}. "
                         f"Expected e.g. {TF_CONFIG_EXAMPLE}.")

    try:
        config = json.loads(text)
    except ValueError as error:
        raise bad(f"not JSON ({error})") from None
    if not isinstance(config, dict):
        raise bad("not a JSON object")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster.get("worker"):
        raise bad('no "cluster" with a "worker" list of host:port addresses')
    # Other jobs ("ps", "evaluator") are not MultiWorkerMirroredStrategy's: a worker waited for them forever.
    if other := sorted(set(cluster) - {"worker", "chief"}):
        raise bad(f'"cluster" lists {", ".join(map(repr, other))}: multi-worker training has only "worker" tasks '
                  '(and at most one "chief")')
    for job in ("worker", "chief"):
        addresses = cluster.get(job, [])
        if not isinstance(addresses, list) or not all(_is_address(a) for a in addresses):
            raise bad(f'"cluster"."{job}" must be a list of "host:port" strings (a port from 1 to 65535, no blanks '
                      'or scheme such as grpc://)')
    if len(cluster.get("chief", [])) > 1:
        raise bad(f'"cluster"."chief" lists {len(cluster["chief"])} addresses; there can be at most one chief')
    workers = cluster["worker"]
    everyone = list(workers) + list(cluster.get("chief", []))
    if repeated := sorted({a for a in everyone if everyone.count(a) > 1}):
        raise bad(f'{", ".join(repeated)} is listed for more than one task; every task needs its own host:port')
    if not isinstance(task, dict) or task.get("type") not in ("worker", "chief"):
        raise bad('no "task" with "type": "worker" (or "chief")')
    index = task.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise bad('"task"."index" must be a whole number from 0')
    peers = cluster.get(task["type"], [])
    if index >= len(peers):
        raise bad(f'"task"."index" is {index} but "cluster"."{task["type"]}" lists {len(peers)} address(es)')
    return ClusterTask(tuple(everyone), task["type"], index, bool(cluster.get("chief")), peers[index])


def _is_address(address) -> bool:
    """"host:port" with a host and a port TensorFlow's server can listen on."""
    if not isinstance(address, str):
        return False
    host, _, port = address.rpartition(":")
    # No blank and no scheme: " 127.0.0.1:2222" or "grpc://host:2222" passed, and the worker then waited silently
    # forever for a peer at an address that cannot be reached (the server listens on the port alone).
    plain_host = bool(host) and "/" not in host and not any(c.isspace() for c in address)
    # isascii: str.isdigit() also takes '²', which int() refuses with a traceback (as app/config.is_count, which this
    # module cannot import: app/config imports it).
    return plain_host and port.isascii() and port.isdigit() and 1 <= int(port) <= 65535


def check_batch_sizes(replicas: int, batch_size: int, meta_batch_size: int | None = None,
                      resume_dir: str | None = None) -> None:
    """Global batches must give every replica something: whole examples, whole episodes.
    resume_dir: the run being resumed, whose batch size cannot change (--resume takes no other option)."""
    if batch_size < replicas:
        if resume_dir is not None:
            raise UserError(f"--batch-size is the global batch, split across the {replicas} replicas, so it must be "
                            f"at least {replicas}, and {resume_dir} was started with --batch-size {batch_size} (its "
                            f"config.json), which a resume keeps. Received: --resume {resume_dir} on {replicas} "
                            f"replicas. Resume it on at most {batch_size} devices (e.g. METATUNE_CPU_DEVICES="
                            f"{batch_size}), or start it again with a larger batch: python train.py --config "
                            f"{resume_dir}/config.json --batch-size {replicas} --output NEW_DIR")
        raise UserError(f"--batch-size is the global batch, split across the {replicas} replicas, so it must be at "
                        f"least {replicas}. Received: --batch-size {batch_size}. Pass --batch-size {replicas} or more "
                        f"(a multiple of {replicas} keeps the replicas equal).")
    if meta_batch_size is not None and meta_batch_size % replicas:
        raise UserError(f"--meta-batch-size must be a multiple of the {replicas} replicas: each replica trains on "
                        f"whole episodes. Received: --meta-batch-size {meta_batch_size}. Pass "
                        f"--meta-batch-size {max(replicas, meta_batch_size - meta_batch_size % replicas)}.")


# TensorFlow's default (10 s) declared a live but CPU-starved worker dead: two loopback workers on a
# 2-core machine at load 40 both stopped mid-run with "tasks are unhealthy (stopped sending
# heartbeats)". A dead process is still noticed at once (its connection resets).
HEARTBEAT_TIMEOUT_S = 120


def multi_worker_strategy(cluster: ClusterTask, wait_s: float = DEFAULT_WAIT_S):
    """MultiWorkerMirroredStrategy from TF_CONFIG, its coordination service configured as the strategy
    would configure it itself, but with HEARTBEAT_TIMEOUT_S (the strategy takes no such option; it
    leaves an already configured service alone). Must run before TensorFlow starts its runtime.
    `cluster`: TF_CONFIG as parse_tf_config read it (for the message when this task's server cannot start);
    `wait_s`: how long to wait for the other tasks to start (app/worker_rendezvous.py)."""
    import tensorflow as tf

    try:  # in Python, before TensorFlow's own wait, which no signal or limit can end (app/worker_rendezvous.py)
        wait_for_tasks(int(cluster.address.rpartition(":")[2]), cluster.others(), wait_s)
    except OSError as error:
        raise _cannot_listen(cluster, error.strerror or str(error)) from None
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    try:  # private API: if it ever moves, train with TensorFlow's default heartbeat timeout
        from tensorflow.python.distribute import multi_worker_util
        from tensorflow.python.eager import context

        spec = resolver.cluster_spec()
        jobs = [context.coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
                for job in ("chief", "worker") if job in spec.jobs]
        context.context().configure_coordination_service(
            service_type="standalone", service_leader=multi_worker_util.coordination_leader(spec),
            heartbeat_timeout_in_ms=HEARTBEAT_TIMEOUT_S * 1000, coordinated_jobs=jobs)
    except (ImportError, AttributeError, TypeError) as error:
        logger.warning("Could not set the workers' heartbeat timeout (%s); TensorFlow's default applies: a worker "
                       "starved of CPU for seconds may be taken for dead.", error)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    except tf.errors.OpError as error:  # the server cannot listen: the port is taken, the host is not this machine
        if "gRPC server" not in str(error):
            raise
        raise _cannot_listen(cluster, error.message.strip()) from None
    _restore_python_sigterm_handler()
    return strategy


def _cannot_listen(cluster: ClusterTask, detail: str) -> UserError:
    return UserError(f"--distribute multi-worker: this worker could not start its server on {cluster.address} "
                     f"({detail}): the port is in use by another program, or the host is not an address of this "
                     f"machine. Received: TF_CONFIG task {cluster.task_type} {cluster.task_index} at "
                     f"{cluster.address}. Free that port, or start every worker with a TF_CONFIG that gives this task "
                     "a free one.")


def _restore_python_sigterm_handler() -> None:
    """Why: the strategy's coordination service installs TensorFlow's own SIGTERM handler (its preemption
    notifier), which replaces Python's: a worker sent SIGTERM (a scheduler, `kill`) trained on to the end
    as if nothing had happened, instead of stopping with app/cli.run_safely's ERROR line. Setting Python's
    handler again puts it back in front; metatune does not use TensorFlow's preemption checkpoints."""
    handler = signal.getsignal(signal.SIGTERM)
    if handler is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


_MIRRORED_STRATEGIES: dict = {}


def _mirrored_strategy(devices: tuple[str, ...]):
    """One MirroredStrategy per device set and process. Why: each new one numbers its collective
    all-reduces from the same start, so a second strategy's training step can meet the first one's
    cached collectives ("Shape mismatch in the collective instance") when a process trains twice
    (tests, notebooks)."""
    import tensorflow as tf

    if devices not in _MIRRORED_STRATEGIES:
        _MIRRORED_STRATEGIES[devices] = tf.distribute.MirroredStrategy(list(devices))
    return _MIRRORED_STRATEGIES[devices]


def unsupported_reason(mode: str, training_strategy: str) -> str | None:
    """Why `--distribute mode` cannot train `--strategy training_strategy` (None: it can)."""
    if training_strategy in DISTRIBUTED_STRATEGIES.get(mode, (training_strategy,)):
        return None
    return (f"--distribute {mode} does not support --strategy {training_strategy} yet: meta-learning computes its "
            "own loss in a custom training step, which under a strategy would need whole episodes per replica and "
            "a loss divided by the replicas, and metatune does not do that yet. "
            f"Received: --distribute {mode} --strategy {training_strategy}. What works: --distribute {mode} with "
            f"--strategy {' or '.join(DISTRIBUTED_STRATEGIES[mode])}, or --distribute none with "
            f"--strategy {training_strategy}.")


def resolve_distribution(mode: str, batch_size: int, meta_batch_size: int | None = None,
                         training_strategy: str | None = None, environ: dict | None = None,
                         resume_dir: str | None = None) -> Distribution:
    """The strategy for `--distribute mode`. meta_batch_size: for meta strategies only (episodes per step).
    training_strategy: the `--strategy` to run (a UserError when the mode cannot train it); None: any.
    resume_dir: the run being resumed (its options cannot change, which the refusals say)."""
    import tensorflow as tf

    environ = os.environ if environ is None else environ
    if mode not in DISTRIBUTE_CHOICES:
        raise UserError(f"--distribute must be one of {', '.join(DISTRIBUTE_CHOICES)}. Received: --distribute {mode!r}")
    if mode == "multi-worker":  # before any device listing: the strategy must configure TensorFlow's runtime first
        cluster = parse_tf_config(environ.get("TF_CONFIG"), resume_dir)
        if training_strategy and (reason := unsupported_reason(mode, training_strategy)):
            raise UserError(reason)
        strategy = multi_worker_strategy(cluster, wait_limit(environ))
        _warn_unused_cpu_split(environ, strategy.num_replicas_in_sync, len(cluster.workers))
        return _distributed(Distribution(strategy, DistributeInfo(mode, strategy.num_replicas_in_sync,
                                                                  len(cluster.workers)), cluster.is_chief),
                            batch_size, meta_batch_size, resume_dir)
    gpus = tf.config.list_logical_devices("GPU")
    requested = mode
    if mode == "auto":
        mode = "mirrored" if len(gpus) > 1 else "none"
        if mode == "mirrored" and training_strategy and unsupported_reason(mode, training_strategy):
            logger.info("--distribute auto: %d GPUs are visible, but --strategy %s does not run under "
                        "MirroredStrategy yet; training on one device.", len(gpus), training_strategy)
            mode = "none"
    if mode == "none":
        _say_one_device(requested, len(gpus), environ, resume_dir)
        _warn_unused_tf_config(requested, environ)
        return Distribution(tf.distribute.get_strategy(), DistributeInfo("none", 1, 1))
    if training_strategy and (reason := unsupported_reason(mode, training_strategy)):
        raise UserError(reason)
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) == 1:
        logger.warning("--distribute mirrored: only one device (%s) is visible, so training runs with 1 replica. "
                       "Use a machine with several GPUs, or METATUNE_CPU_DEVICES=N to try N replicas on the CPU.",
                       devices[0])
    strategy = _mirrored_strategy(tuple(devices))
    _warn_unused_tf_config(requested, environ)
    return _distributed(Distribution(strategy, DistributeInfo(mode, strategy.num_replicas_in_sync, 1)), batch_size,
                        meta_batch_size, resume_dir)


def _say_one_device(requested: str, gpus: int, environ, resume_dir: str | None) -> None:
    """Say that this run trains on one device, and why. Why: METATUNE_CPU_DEVICES=2 with the default --distribute
    auto trained on one device without a word (auto mirrors over GPUs only), though the user had split the CPU to
    try 2 replicas (the README's own example left --distribute out); nor did auto say what it had chosen."""
    from app.cpu_devices import ENV_VAR, requested_cpu_devices

    try:
        split = requested_cpu_devices(environ.get(ENV_VAR))
    except ValueError:  # reported by app/cli.prepare_environment
        split = 1
    if split > 1:
        instead = (f"resumed, the run keeps its --distribute {requested}; to train on the {split} logical CPUs start it "
                   f"again with python train.py --config {resume_dir}/config.json --distribute mirrored --output NEW_DIR"
                   if resume_dir is not None else f"pass --distribute mirrored to train on the {split} logical CPUs")
        logger.warning("%s=%d splits the CPU into %d devices, but --distribute %s trains on one device (auto mirrors "
                       "over several GPUs only, never over logical CPUs): %s, or unset %s.", ENV_VAR, split, split,
                       requested, instead, ENV_VAR)
    elif requested == "auto" and gpus < 2:  # with several GPUs, auto already said why it trains on one
        logger.info("--distribute auto: %s visible, so training runs on one device (--distribute none).",
                    "no GPU is" if not gpus else "one GPU is")


def _warn_unused_tf_config(requested: str, environ) -> None:
    """Why: TF_CONFIG set on two machines with the default --distribute auto trained two separate runs, one on each
    machine, without a word: only --distribute multi-worker reads it."""
    if (environ.get("TF_CONFIG") or "").strip():
        logger.warning("TF_CONFIG is set, but --distribute %s trains on this machine alone: only --distribute "
                       "multi-worker reads TF_CONFIG (every worker started with it and the same --output RUN_DIR). "
                       "Unset TF_CONFIG if this is meant to be one machine's run.", requested)


def _warn_unused_cpu_split(environ, replicas: int, workers: int) -> None:
    """Why: METATUNE_CPU_DEVICES=2 under multi-worker trained on 1 replica per worker without a word (the strategy
    takes one device per worker on the CPU), though the user asked for 2."""
    from app.cpu_devices import ENV_VAR, requested_cpu_devices

    try:
        requested = requested_cpu_devices(environ.get(ENV_VAR))
    except ValueError:  # reported by app/cli.prepare_environment
        return
    if requested > 1 and replicas == workers:
        logger.warning("%s=%d has no effect under --distribute multi-worker: each worker trains on one CPU device, "
                       "so this job has %d replica(s). Unset it on every worker, or use --distribute mirrored to "
                       "try %d replicas on this machine.", ENV_VAR, requested, replicas, requested)


def _distributed(distribution: Distribution, batch_size: int, meta_batch_size: int | None,
                 resume_dir: str | None = None) -> Distribution:
    """`distribution`, once its batch sizes are checked against its replicas (and said in the log)."""
    info = distribution.info
    if info.replicas > 1:
        allow_uneven_first_batches()
    check_batch_sizes(info.replicas, batch_size, meta_batch_size, resume_dir)
    if batch_size % info.replicas:
        logger.warning("--batch-size %d is not a multiple of the %d replicas: the replicas get unequal shares of "
                       "each batch (correct, but the larger share sets the pace).", batch_size, info.replicas)
    logger.info("--distribute %s: %d replica(s) on %d worker(s); --batch-size %d is the global batch "
                "(about %d per replica).", info.strategy, info.replicas, info.workers, batch_size,
                -(-batch_size // info.replicas))
    return distribution

