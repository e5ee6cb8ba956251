"""The MNIST speed run: ``python -m fastlayers.mnist`` (or ``fastlayers-mnist``).

Trains one of the speed-run models (``fastlayers.models``) on an MNIST-family dataset and reports
time and accuracy: a progress bar per epoch when stderr is a terminal, a line per epoch on stdout,
the one-off compile time apart from training time, the time to reach ``--target-accuracy``, and a
summary at the end. With ``--compare-torch`` the same run goes through PyTorch too (same
architecture, initial weights, hyperparameters and batch order; epochs alternate between the two
frameworks so both see the same machine load), and a side-by-side table follows the summary.

Throughput is always samples per second of training time: the time inside the training steps,
without data loading, evaluation or compilation.

With no arguments it trains the 784-128-10 MLP on the embedded ``mnist-10k`` digits.
``--recipe NAME`` (``--list-recipes``; fastlayers/recipes.py) trains toward a target accuracy in
the least training time: its model, optimizer, schedule, batch size, epochs, augmentation and
target, each overridable. Augmentation runs inside the timed step, in both frameworks.

``mpiexec -n N python -m mpi4py -m fastlayers.mnist --distributed ...`` trains data-parallel on N
MPI ranks (``fastlayers.distributed``): ``--batch-size`` is the global batch, split evenly over the
ranks; rank 0 alone prints and writes the JSON, plot, model and checkpoints. docs/distributed.md.
"""
import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time

import numpy as np

DEFAULTS = {  # model: (optimizer, learning rate, batch size, epochs)
    "mlp": ("sgd", 0.2, 32, 20),
    "mlp-bn": ("adam", 1e-3, 128, 5),
    "cnn": ("adam", 1e-3, 128, 3),
    "mlp-wide": ("adam", 1e-3, 128, 5),
    "cnn-wide": ("adam", 1e-3, 128, 3),
}
# What an option left out means when no recipe sets it (the recipes' fields).
OPTION_DEFAULTS = {"dataset": "mnist-10k", "model": "mlp", "lr_schedule": "none",
                   "label_smoothing": 0.0, "crop_padding": 0, "hflip": False, "tta_flip": False}


def _checked(kind, want, ok):
    """An argparse ``type=`` that converts with ``kind`` and accepts only values where ``ok``;
    argparse names the option in the error."""
    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}")
        return value
    return convert


POSITIVE_INT = _checked(int, "an integer >= 1", lambda v: v >= 1)
NON_NEGATIVE_INT = _checked(int, "an integer >= 0", lambda v: v >= 0)
POSITIVE_FLOAT = _checked(float, "a finite number > 0", lambda v: math.isfinite(v) and v > 0)
FRACTION = _checked(float, "a fraction in (0, 1]", lambda v: 0 < v <= 1)  # nan fails too
NON_NEGATIVE_FLOAT = _checked(float, "a finite number >= 0", lambda v: math.isfinite(v) and v >= 0)


def _output_problem(path):
    """Why a file cannot be written at ``path`` (checked before training), or None."""
    if not path:
        return "is empty"
    if os.path.isdir(path):
        return "is a directory"
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        return f"directory {directory} does not exist"
    if not os.access(directory, os.W_OK):
        return f"directory {directory} is not writable"
    return None


def make_parser():
    """The command line's parser (its types check each value; :func:`parse_args` checks the
    combinations)."""
    from fastlayers.data import DATASETS
    from fastlayers.models import MODELS
    from fastlayers.recipes import RECIPES
    from fastlayers.train import OPTIMIZERS, SCHEDULES

    p = argparse.ArgumentParser(
        prog="fastlayers-mnist",
        description="The MNIST speed run: train a speed-run model on an MNIST-family dataset and "
                    "report training time, throughput (samples per second of training time) and "
                    "test accuracy.",
        epilog="With no arguments it trains the 784-128-10 MLP on the embedded mnist-10k digits.")
    p.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                   help="a speed-run recipe: model, optimizer, schedule, batch size, epochs, "
                        "augmentation and target accuracy, each overridable by its option "
                        "(--list-recipes prints them)")
    p.add_argument("--list-recipes", action="store_true",
                   help="print the recipes with their targets and settings, and exit")
    p.add_argument("--dataset", choices=sorted(DATASETS), default=None,
                   help="default: mnist-10k, embedded (10,000 real digits); mnist and "
                        "fashion-mnist are read from --data-dir or downloaded")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="directory holding (or receiving) the mnist or fashion-mnist files; default: "
                        "$FASTLAYERS_DATA/<dataset>, else ~/.cache/fastlayers/<dataset>")
    p.add_argument("--no-download", action="store_true",
                   help="never download: fail if the dataset files are not on disk")
    p.add_argument("--model", choices=sorted(MODELS), default=None,
                   help="the network to train (default: mlp, 784-128-10; fastlayers/models.py)")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default=None,
                   help="default: sgd for mlp, adam for mlp-bn and cnn")
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=None,
                   help="learning rate; default: 0.2 for mlp with sgd, 1e-3 for adam (0.05 for sgd and "
                        "0.01 for momentum chosen for another model)")
    p.add_argument("--weight-decay", type=NON_NEGATIVE_FLOAT, default=None,
                   help="the optimizer's weight decay (L2, or decoupled for adamw); default: the "
                        "optimizer's (0, and 0.01 for adamw)")
    p.add_argument("--lr-schedule", choices=list(SCHEDULES), default=None,
                   help="none (default); cosine: from --lr to 0; onecycle: up to --lr and down "
                        "(with momentum cycling); step: lr x0.1 after each third; stepped every "
                        "batch")
    p.add_argument("--clip-grad", type=POSITIVE_FLOAT, default=None, metavar="MAX_NORM",
                   help="clip the gradients' total 2-norm to MAX_NORM before every step")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=None,
                   help="training batch size; default: 32 for mlp, 128 otherwise")
    p.add_argument("--epochs", type=POSITIVE_INT, default=None,
                   help="epochs to train; default: 20 mlp, 5 mlp-bn, 3 cnn")
    p.add_argument("--label-smoothing", type=_checked(float, "a fraction in [0, 1]",
                                                      lambda v: 0 <= v <= 1), default=None,
                   help="cross-entropy label smoothing (default: 0)")
    p.add_argument("--crop-padding", type=NON_NEGATIVE_INT, default=None, metavar="PIXELS",
                   help="augment each training image with a random 28x28 crop of it zero-padded "
                        "by PIXELS (image models; default: 0, none)")
    p.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                   help="augment each training image with a random horizontal flip (p = 0.5; "
                        "image models; default: off)")
    p.add_argument("--tta-flip", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time flip averaging: predict from the logits of each test image plus "
                        "those of its mirror image (image models; default: off)")
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0,
                   help="seeds the initial weights, dropout and shuffling (default: 0)")
    p.add_argument("--backend", choices=["numba", "numpy"], default="numba",
                   help="numba: the compiled kernels (default); numpy: the NumPy reference")
    p.add_argument("--threads", type=POSITIVE_INT, default=None,
                   help="threads for the kernels (and for PyTorch); default: all "
                        "(NUMBA_NUM_THREADS)")
    p.add_argument("--blas-threads", type=POSITIVE_INT, default=None,
                   help="threads for BLAS's GEMMs; default: 1, robust beside other processes (more "
                        "are faster only on a machine of one's own); not with --deterministic")
    p.add_argument("--deterministic", action="store_true",
                   help="the same bits on any thread count, guaranteed: BLAS on one thread "
                        "(fastlayers.use_deterministic_algorithms), as by default")
    p.add_argument("--target-accuracy", type=FRACTION, default=None,
                   help="stop once the test accuracy reaches this fraction (e.g. 0.95); default: run "
                        "every epoch")
    p.add_argument("--json", dest="json_path", default=None, metavar="PATH",
                   help="write the results, configuration and environment as JSON here")
    p.add_argument("--plot", default=None, metavar="PATH",
                   help="save test accuracy against training time as a PNG here (needs "
                        "matplotlib: pip install 'fastlayers[plot]')")
    p.add_argument("--save", default=None, metavar="PATH",
                   help="write the trained model's state dict here (safetensors; loads into the "
                        "PyTorch twin with safetensors.torch.load_file)")
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="write a checkpoint here after every epoch (model, optimizer, random "
                        "state, results so far), atomically")
    p.add_argument("--resume", default=None, metavar="PATH",
                   help="continue the run a --checkpoint file left, exactly (same settings; "
                        "--epochs is the total)")
    p.add_argument("--compare-torch", action="store_true",
                   help="also train the same model in PyTorch and print a side-by-side table")
    p.add_argument("--compare-numpy", action="store_true",
                   help="also train the same model on the NumPy reference backend, side by side")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="a progress bar per epoch on stderr; default: only when stderr is a "
                        "terminal (the per-epoch lines on stdout are printed either way)")
    p.add_argument("--debug", action="store_true",
                   help="show the traceback of an error instead of a one-line message")
    g = p.add_argument_group("data parallelism (mpiexec -n N python -m mpi4py -m "
                             "fastlayers.mnist --distributed ...)")
    g.add_argument("--distributed", action="store_true",
                   help="train on the job's MPI ranks: --batch-size is the global batch, split "
                        "evenly; rank 0 alone prints and writes files (needs "
                        "pip install 'fastlayers[mpi]')")
    g.add_argument("--sync-batchnorm", action=argparse.BooleanOptionalAction, default=True,
                   help="with --distributed: batch norm statistics over the global batch "
                        "(SyncBatchNorm, default: the weights of one process with the same "
                        "batch), or over each rank's own samples (--no-sync-batchnorm, PyTorch "
                        "DDP's default)")
    g.add_argument("--dist-timeout", type=POSITIVE_FLOAT, default=300.0, metavar="SECONDS",
                   help="with --distributed: abort the job when a rank has waited this long for "
                        "the others (default: 300)")
    if _mpi_rank() not in (None, 0):    # one copy of a usage error, not one per rank
        p.print_usage = lambda file=None: None
        p.exit = lambda status=0, message=None: sys.exit(status)
    return p


def _mpi_rank():
    """This process's rank when an MPI launcher started it (from its environment), else None."""
    for var in ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return None


def parse_args(argv=None):
    p = make_parser()
    args = p.parse_args(argv)
    if args.list_recipes:
        from fastlayers.recipes import listing
        print(listing())
        p.exit(0)
    from_recipe = _apply_recipe(args)

    opt, lr, batch, epochs = DEFAULTS[args.model]
    args.optimizer = args.optimizer or opt
    if args.lr is None:
        args.lr = lr if args.optimizer == opt else {"sgd": 0.05, "momentum": 0.01}.get(
            args.optimizer, 1e-3)
    args.batch_size = batch if args.batch_size is None else args.batch_size
    args.epochs = args.epochs if args.epochs is not None else epochs
    if args.progress is None:
        args.progress = _is_terminal(sys.stderr)
    if args.data_dir is not None and args.dataset == "mnist-10k":
        p.error("--data-dir applies to --dataset mnist or fashion-mnist; mnist-10k is embedded")
    from fastlayers.models import FLAT_INPUT
    if FLAT_INPUT[args.model]:
        for name in ("crop_padding", "hflip", "tta_flip"):
            if getattr(args, name):
                option = "--" + name.replace("_", "-")
                source = f" (set by --recipe {args.recipe})" if name in from_recipe else ""
                p.error(f"{option}{source} needs an image model (cnn, cnn-wide); --model "
                        f"{args.model} takes flat rows")
    if args.compare_numpy and args.backend == "numpy":
        p.error("--compare-numpy needs --backend numba (it compares numba against numpy)")
    if args.threads is not None:
        import numba
        if args.threads > numba.config.NUMBA_NUM_THREADS:
            p.error(f"--threads must be at most {numba.config.NUMBA_NUM_THREADS} (the machine's "
                    f"threads, NUMBA_NUM_THREADS), got {args.threads}")
    if args.deterministic and (args.blas_threads or 1) > 1:
        p.error("--deterministic keeps BLAS on one thread: leave --blas-threads out")
    if args.resume is not None:
        if not os.path.isfile(args.resume) and _mpi_rank() in (None, 0):   # rank 0 reads it
            p.error(f"--resume {args.resume!r}: no such file")
        if args.compare_torch or args.compare_numpy:
            p.error("--resume continues one fastlayers run: it does not combine with --compare-*")
    for option, path in (("--json", args.json_path), ("--plot", args.plot), ("--save", args.save),
                         ("--checkpoint", args.checkpoint)):
        problem = None if path is None else _output_problem(path)
        if problem:
            p.error(f"{option} {path!r}: {problem}")
    if args.distributed:
        _check_distributed(p, args)
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            p.error("--plot needs matplotlib: pip install 'fastlayers[plot]'")
    if args.compare_torch:
        # imported now, before any kernel starts Numba's threads (see runtime.import_torch)
        from fastlayers.runtime import import_torch
        if import_torch() is None:
            p.error("--compare-torch needs PyTorch: pip install 'torch==2.13.0' (the CPU build)")
    return args


def _apply_recipe(args):
    """Fill the options left out from ``--recipe``, then from OPTION_DEFAULTS (in ``args``).
    Returns the names the recipe set."""
    recipe = {}
    if args.recipe is not None:
        from fastlayers.recipes import get
        recipe = get(args.recipe).options()
    filled = {name for name, value in recipe.items() if getattr(args, name) is None}
    for name in filled:
        setattr(args, name, recipe[name])
    for name, value in OPTION_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return filled


def _check_distributed(p, args):
    """The --distributed combinations that cannot run (mpi4py missing, a batch the ranks cannot
    share evenly, comparisons)."""
    if args.compare_torch or args.compare_numpy:
        p.error("--distributed trains one fastlayers model: it does not combine with --compare-*")
    try:
        from mpi4py import MPI
    except ImportError:
        p.error("--distributed needs mpi4py and an MPI library: pip install 'fastlayers[mpi]'")
    ranks = MPI.COMM_WORLD.Get_size()
    if args.batch_size % ranks:
        p.error(f"--batch-size {args.batch_size} must be a multiple of the {ranks} ranks: the "
                f"global batch is split evenly over them")


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):   # no isatty, or a closed stream
        return False


def _has_batch_norm(model):
    """Whether ``model`` normalises over the batch alone (a batch norm over (N, C) features, which
    has one value per channel in a one-sample batch); BatchNorm2d also averages over the image."""
    import fastlayers as fl
    return any(isinstance(m, (fl.BatchNorm, fl.BatchNorm1d)) for m in model.modules())


def _augmentation(args):
    """The training batches' transform the options ask for (drawing its seed from the generator
    now), or None."""
    from fastlayers import transforms
    parts = ([transforms.RandomCrop(28, padding=args.crop_padding)] if args.crop_padding else []) \
        + ([transforms.RandomHorizontalFlip(0.5)] if args.hflip else [])
    return transforms.Compose(parts) if parts else None


def _make(args, dataset):
    """Fresh model, loss, optimizer, loaders, scheduler and augmentation, all seeded from
    ``args.seed`` (so each call makes the same ones: the PyTorch twin's augmentation draws what
    fastlayers' does).

    A batch-norm model's training loader drops a one-sample last batch: batch norm would normalise
    that sample by its own statistics (BatchNorm1d refuses it)."""
    import fastlayers as fl
    from fastlayers.data import DataLoader
    from fastlayers.models import FLAT_INPUT, build
    from fastlayers.optim import lr_scheduler
    from fastlayers.train import OPTIMIZERS, make_scheduler

    fl.manual_seed(args.seed)
    model = build(args.model)
    augment = _augmentation(args)
    loss_fn = fl.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    flat = FLAT_INPUT[args.model]
    n, b = len(dataset.y_train), args.batch_size
    drop_last = n > b and n % b == 1 and _has_batch_norm(model)
    if args.distributed:
        model, train, test = _distribute(args, dataset, model, drop_last)
    else:
        train = DataLoader(dataset.x_train, dataset.y_train, batch_size=b, shuffle=True,
                           drop_last=drop_last, flatten=flat)
        test = DataLoader(dataset.x_test, dataset.y_test, batch_size=1000, flatten=flat)
    extra = {} if args.weight_decay is None else {"weight_decay": args.weight_decay}
    optimizer = OPTIMIZERS[args.optimizer](model.parameters(), lr=args.lr, **extra)
    scheduler = make_scheduler(lr_scheduler, args.lr_schedule, optimizer, args.lr,
                               args.epochs * len(train))
    return model, loss_fn, optimizer, train, test, scheduler, augment


def _distribute(args, dataset, model, drop_last):
    """The data-parallel model and this rank's loaders: its share of every global batch (the
    single process's batch order, DistributedSampler with the shared generator), its strided
    share of the test set. Batch norms become SyncBatchNorm with --sync-batchnorm on more than
    one rank; without it, a one-sample last batch of a rank is dropped as a process drops its
    own."""
    import fastlayers as fl
    import fastlayers.distributed as dist
    from fastlayers.data import DataLoader
    from fastlayers.models import FLAT_INPUT

    ranks, rank = dist.get_world_size(), dist.get_rank()
    local = args.batch_size // ranks
    next(iter(model)).needs_input_grad = False   # the images (the Engine cannot see past DDP)
    sampler = dist.DistributedSampler(len(dataset.y_train), seed=None)
    if ranks > 1 and args.sync_batchnorm:
        model = fl.SyncBatchNorm.convert_sync_batchnorm(model)
    elif ranks > 1:
        n = len(sampler)
        drop_last = n > local and n % local == 1 and _has_batch_norm(model)
    flat = FLAT_INPUT[args.model]
    train = DataLoader(dataset.x_train, dataset.y_train, batch_size=local, drop_last=drop_last,
                       flatten=flat, sampler=sampler)
    test = DataLoader(dataset.x_test[rank::ranks], dataset.y_test[rank::ranks], batch_size=1000,
                      flatten=flat)
    return dist.DistributedDataParallel(model, gradient_as_bucket_view=True), train, test


def _init_distributed(args):
    """Start the default process group; the kernels' threads default to this machine's CPUs
    shared among its ranks. Returns the group."""
    import numba
    from mpi4py import MPI

    import fastlayers.distributed as dist
    group = dist.init(timeout=args.dist_timeout)
    if args.threads is None:
        here = MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED)
        args.threads = max(1, min(numba.config.NUMBA_NUM_THREADS,
                                  (os.cpu_count() or 1) // here.Get_size()))
        here.Free()
    return group


class _Discard:
    """Where the report of a rank other than 0 goes."""
    def write(self, text):
        return len(text)

    def flush(self):
        pass


def _train_epoch(engine, loader, bar, group):
    """run_epoch, and with ``group`` the global figures: (mean loss over every rank's samples,
    this rank's seconds, the samples of all ranks, (seconds of communication, seconds waiting for
    other ranks) in this rank's collectives, or None; ProcessGroup.split_time)."""
    from fastlayers.train import run_epoch
    if group is None:
        return run_epoch(engine, loader, bar) + (None,)
    group.start_recording()
    loss, seconds, samples = run_epoch(engine, loader, bar)
    split = group.split_time()
    totals = group.allreduce_(np.array([loss * samples, samples], np.float64))
    return totals[0] / max(totals[1], 1.0), seconds, int(totals[1]), split


def _test_accuracy(engine, loader, group):
    """accuracy(), over every rank's share of the test set with ``group`` (rank 0's buffers)."""
    from fastlayers.train import accuracy
    if group is None:
        return accuracy(engine, loader)
    import fastlayers.distributed as dist
    dist.broadcast_buffers(engine.model.module)   # --no-sync-batchnorm: rank 0's statistics
    counts = np.array([accuracy(engine, loader) * loader.num_samples, loader.num_samples])
    group.allreduce_(counts)
    return float(np.rint(counts[0]) / max(counts[1], 1.0))


def _batch_sizes(loader):
    """The sizes of the batches one epoch of ``loader`` yields."""
    n, b = loader.num_samples, loader.batch_size
    return ({b} if n >= b else set()) | ({n % b} if n % b and not loader.drop_last else set())


def _warm_up(args, dataset):
    """Compile (or load from Numba's cache) every kernel the run uses, on a throwaway model, for
    each training batch size and the evaluation batch. Returns seconds.

    Raises ValueError, before any training, if a batch-norm model would get a one-sample batch."""
    from fastlayers.train import Engine

    t0 = time.perf_counter()
    model, loss_fn, optimizer, train, test, scheduler, augment = _make(args, dataset)
    sizes = _batch_sizes(train)
    if 1 in sizes and _has_batch_norm(model):
        raise ValueError(f"--model {args.model} uses batch norm, which cannot train on a batch of "
                         f"one sample (--batch-size {args.batch_size}, "
                         f"{train.num_samples} training images)")
    engine = Engine(model, loss_fn, optimizer, scheduler=scheduler, clip_grad=args.clip_grad,
                    augment=augment, tta_flip=args.tta_flip)
    x, y = next(iter(train))
    for n in sorted(sizes):
        engine.train_step(x[:n], y[:n])
    engine.train(False)
    engine.predict(next(iter(test))[0])
    return time.perf_counter() - t0


def _world_size():
    """The ranks of the default process group of fastlayers.distributed (1 without one)."""
    from fastlayers import _process_group
    group = _process_group.get_default()
    return 1 if group is None else group.size


def _environment(args):
    import numba

    import fastlayers as fl
    env = {"python": platform.python_version(), "numpy": np.__version__,
           "numba": numba.__version__, "fastlayers": fl.__version__, "machine": platform.machine(),
           "cpus": os.cpu_count(), "threads": fl.get_num_threads(),
           "blas_threads": fl.get_blas_threads(), "backend": args.backend,
           "world_size": _world_size()}
    if args.compare_torch:
        import torch
        env.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    return env


def run(args, out=None):
    """Train as ``args`` say; print the report to ``out`` (default: the current ``sys.stdout``) and
    return the results as a dict."""
    out = sys.stdout if out is None else out
    import fastlayers as fl

    fl.use_deterministic_algorithms(args.deterministic)
    group = _init_distributed(args) if args.distributed else None
    if group is None:
        return _run(args, out, group)
    import fastlayers.distributed as dist
    try:
        report = _run(args, out, group)
    except BaseException:
        if group.size == 1:   # with more ranks main() ends the job (the group is still needed)
            dist.destroy_process_group()
        raise
    dist.destroy_process_group()
    return report


def _run(args, out, group):
    import fastlayers as fl
    from fastlayers import random
    from fastlayers.data import DatasetError, load_dataset
    from fastlayers.train import Engine

    lead = group is None or group.rank == 0   # prints and writes the files
    checkout = _git_state()   # the code that runs: taken now, not after a long run
    if not lead:
        out, args.progress = _Discard(), False
    fl.set_num_threads(args.threads, args.blas_threads)
    fl.set_backend(args.backend)
    if args.compare_torch:
        import torch
        torch.set_num_threads(fl.get_num_threads())
        from fastlayers.torch_bridge import TorchEngine

    if group is not None and not lead:
        group.barrier()   # rank 0 downloads the files, if it must, before the others read them
    dataset = load_dataset(args.dataset, data_dir=args.data_dir, download=not args.no_download)
    if group is not None and lead:
        group.barrier()
    print(f"dataset {dataset.name}: {len(dataset.y_train)} train / {len(dataset.y_test)} test images "
          f"({dataset.source})", file=out)
    if not len(dataset.y_train) or not len(dataset.y_test):
        raise DatasetError(f"{dataset.source}: needs at least one training and one test image")
    compile_s = _warm_up(args, dataset)
    print(f"compile/load kernels: {compile_s:.2f} s (not counted in training time)", file=out)

    model, loss_fn, optimizer, train, test, scheduler, augment = _make(args, dataset)
    net = model.module if group is not None else model   # what is saved and resumed
    if train.drop_last:
        print(f"note: each epoch drops its last training batch, one image "
              f"({train.num_samples} % {train.batch_size} == 1): batch norm cannot train on a "
              f"single sample", file=out)
    runs = [(Engine(model, loss_fn, optimizer, scheduler=scheduler, clip_grad=args.clip_grad,
                    augment=augment, tta_flip=args.tta_flip), train, test)]
    if args.compare_numpy:  # same seed: same initial weights; the state replay gives the same order
        other = _make(args, dataset)
        runs.append((Engine(*other[:3], backend="numpy", scheduler=other[5],
                            clip_grad=args.clip_grad, augment=other[6], tta_flip=args.tta_flip),
                     other[3], other[4]))
    if args.compare_torch:
        _, _, _, t_train, t_test, _, t_augment = _make(args, dataset)
        runs.append((TorchEngine(model, loss_fn, optimizer, args.lr_schedule,
                                 args.epochs * len(t_train), args.clip_grad, augment=t_augment,
                                 tta_flip=args.tta_flip), t_train, t_test))

    results = {e.name: {"epochs": [], "time_to_target_s": None} for e, _, _ in runs}
    first = 1
    if args.resume is not None:
        first = _resume(args, net, optimizer, scheduler, augment, results["fastlayers"], out)
    done = set()
    for epoch in range(first, args.epochs + 1):
        # Every framework's epoch starts from the same random state (same shuffle); afterwards the
        # state fastlayers' own epoch left (its dropout counter) is what carries on.
        start = random.get_state()
        after = None
        for engine, loader, test_loader in runs:
            if engine.name in done:
                continue
            random.set_state(start)
            n, b = loader.num_samples, loader.batch_size
            bar = _progress_bar(f"{engine.name} epoch {epoch}/{args.epochs}",
                                n - n % b if loader.drop_last else n) if args.progress else None
            loss, seconds, samples, comm = _train_epoch(engine, loader, bar, group)
            if bar is not None:
                bar.close()
            acc = _test_accuracy(engine, test_loader, group)
            r = results[engine.name]
            r["epochs"].append({"epoch": epoch, "train_loss": loss, "test_accuracy": acc,
                                "seconds": seconds, "samples_per_s": samples / seconds})
            if comm is not None:
                r["epochs"][-1].update(communication_s=comm[0], wait_s=comm[1],
                                       communication_share=comm[0] / seconds,
                                       wait_share=comm[1] / seconds)
            total = sum(e["seconds"] for e in r["epochs"])
            print(f"{engine.name:>16} epoch {epoch:2d}: train loss {loss:.4f}  test accuracy "
                  f"{acc:.2%}  {seconds:6.2f} s  {samples / seconds:9,.0f} samples/s", file=out)
            after = after or random.get_state()
            if args.target_accuracy is not None and acc >= args.target_accuracy \
                    and r["time_to_target_s"] is None:
                r["time_to_target_s"] = total
                print(f"{engine.name:>16} reached {args.target_accuracy:.2%} after {total:.2f} s "
                      f"of training ({epoch} epochs)", file=out)
                done.add(engine.name)
        if after is not None:
            random.set_state(after)
        if group is not None:
            import fastlayers.distributed as dist
            dist.check_replicas(net)   # RuntimeError on every rank if they drifted apart
        if args.checkpoint is not None and lead:
            _save_checkpoint(args, epoch, net, optimizer, scheduler, augment,
                             results["fastlayers"])
        if len(done) == len(runs):
            break
    replicas = None
    if group is not None:   # every rank's digest of its parameters and buffers, for the record
        import fastlayers.distributed as dist
        replicas = [bytes(d).hex() for d in group.allgather(
            np.frombuffer(bytes.fromhex(dist.replica_hash(net)), np.uint8).copy())]
        if len(set(replicas)) != 1:
            raise RuntimeError(f"the replicas differ after training: {replicas}")
    if args.save is not None and lead:
        fl.save(net.state_dict(), args.save)

    for name, r in results.items():
        secs = [e["seconds"] for e in r["epochs"]]
        accs = [e["test_accuracy"] for e in r["epochs"]]
        samples = sum(e["samples_per_s"] * e["seconds"] for e in r["epochs"])
        r.update(median_epoch_s=float(np.median(secs)), total_train_s=float(np.sum(secs)),
                 samples_per_s=samples / max(float(np.sum(secs)), 1e-12),
                 final_test_accuracy=accs[-1], best_test_accuracy=max(accs),
                 best_epoch=r["epochs"][int(np.argmax(accs))]["epoch"])
    report = {"schema_version": SCHEMA_VERSION, "timestamp": _utc_timestamp(),
              "git": checkout, "config": dict(vars(args)),
              "environment": _environment(args), "compile_s": compile_s, "results": results}
    if group is not None:
        report["distributed"] = _distributed_report(args, group, results["fastlayers"])
        report["distributed"]["replica_sha256"] = replicas
    print(_summary(args, dataset, results["fastlayers"], compile_s), file=out)
    if len(runs) > 1:
        ours = results["fastlayers"]["median_epoch_s"]
        ours_ttt = results["fastlayers"]["time_to_target_s"]
        for name, r in results.items():
            r["fastlayers_time_ratio"] = ours / r["median_epoch_s"]
            r["fastlayers_time_to_target_ratio"] = (
                None if ours_ttt is None or r["time_to_target_s"] is None
                else ours_ttt / r["time_to_target_s"])
        print(_table(results), file=out)
    if args.json_path is not None and lead:
        _write_json(args.json_path, report)
    if args.plot is not None and lead:
        _plot(args.plot, results, args, dataset)
    return report


def _distributed_report(args, group, r):
    """The JSON's "distributed" block; the run's totals go into ``r`` as well."""
    total = max(r["total_train_s"], 1e-12)
    comm = sum(e.get("communication_s", 0.0) for e in r["epochs"])
    wait = sum(e.get("wait_s", 0.0) for e in r["epochs"])
    r.update(communication_s=comm, communication_share=comm / total, wait_s=wait,
             wait_share=wait / total)
    from mpi4py import MPI
    return {"world_size": group.size, "batch_per_rank": args.batch_size // group.size,
            "global_batch": args.batch_size,
            "sync_batchnorm": bool(args.sync_batchnorm and group.size > 1),
            "communication_s": comm, "communication_share": r["communication_share"],
            "wait_s": wait, "wait_share": r["wait_share"],
            "mpi": MPI.Get_library_version().split("\x00")[0].splitlines()[0].strip(),
            "timeout_s": args.dist_timeout}


# The settings a checkpoint must share with the run that resumes it.
_RESUME_KEYS = ("dataset", "model", "optimizer", "lr", "weight_decay", "lr_schedule", "clip_grad",
                "batch_size", "seed", "backend", "label_smoothing", "crop_padding", "hflip")


def _save_checkpoint(args, epoch, model, optimizer, scheduler, augment, fastlayers_results):
    """Everything the run needs to continue after ``epoch``: the model, the optimizer, the random
    state the next epoch starts from, the augmentation's position, and the results so far (one
    atomic file)."""
    import fastlayers as fl
    fl.save({"kind": "fastlayers-mnist checkpoint", "epoch": epoch,
             "config": {k: getattr(args, k) for k in _RESUME_KEYS + ("epochs",)},
             "world_size": _world_size(),
             "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": None if scheduler is None else scheduler.state_dict(),
             "augment": None if augment is None else augment.state_dict(),
             "rng": fl.get_rng_state(), "results": fastlayers_results}, args.checkpoint)


def _resume(args, model, optimizer, scheduler, augment, fastlayers_results, out):
    """Load ``args.resume`` into the run; returns the first epoch still to train. Raises for a file
    that is not a checkpoint of a run with these settings."""
    import fastlayers as fl
    ckpt = _read_checkpoint(args.resume)
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "fastlayers-mnist checkpoint":
        raise ValueError(f"--resume {args.resume}: not a checkpoint written by --checkpoint")
    saved = ckpt["config"]
    # a schedule's length is the run's: with one, --epochs must match too
    keys = _RESUME_KEYS + (("epochs",) if args.lr_schedule != "none" else ())
    # (a checkpoint from before an option existed ran with its default)
    differ = [f"{k} {saved.get(k, OPTION_DEFAULTS.get(k))!r} in the checkpoint, "
              f"{getattr(args, k)!r} now"
              for k in keys if saved.get(k, OPTION_DEFAULTS.get(k)) != getattr(args, k)]
    if differ:
        raise ValueError(f"--resume {args.resume}: the run's settings differ: " + "; ".join(differ))
    # each load checks its part before writing; a failure ends the run, so nothing is rolled back
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if augment is not None:
        augment.load_state_dict(ckpt["augment"])
    fl.set_rng_state(ckpt["rng"])
    fastlayers_results.update(ckpt["results"])
    ranks = ckpt.get("world_size", 1)
    note = "" if ranks == _world_size() else f" (written by {ranks} rank{'s' * (ranks > 1)})"
    print(f"resumed from {args.resume} after epoch {ckpt['epoch']}{note}", file=out)
    return int(ckpt["epoch"]) + 1


def _read_checkpoint(path):
    """``fl.load(path)``; with a process group, rank 0 reads the file and sends it to the others
    (no file system shared by the ranks is needed)."""
    import fastlayers as fl
    from fastlayers import _process_group
    group = _process_group.get_default()
    if group is None or group.size == 1:
        return fl.load(path)
    ckpt, error = None, None
    if group.rank == 0:
        try:
            ckpt = fl.load(path)
        except (OSError, ValueError, TypeError) as e:
            error = e
    ckpt, error = group.broadcast_object((ckpt, error))
    if error is not None:
        raise error
    return ckpt


# 1: the unversioned reports before schema_version; 2 adds schema_version, timestamp, git and the
# runs' samples_per_s, best_test_accuracy and best_epoch. Keys added since, which readers of 2 may
# ignore: environment.world_size; with --distributed, the "distributed" block and the runs' (and
# their epochs') communication_s and communication_share; the recipe options in config (recipe,
# label_smoothing, crop_padding, hflip, tta_flip) and, with a comparison, the runs'
# fastlayers_time_to_target_ratio.
SCHEMA_VERSION = 2


def _utc_timestamp():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _git_state():
    """The checkout fastlayers runs from: ``{"commit": sha, "dirty": bool}``, or both None when it
    is not a git checkout or git is not installed."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    def git(*argv):
        return subprocess.run(["git", "-C", here, *argv], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    try:
        # only this project's own checkout, not a repository that merely contains site-packages
        if os.path.realpath(git("rev-parse", "--show-toplevel")) != os.path.realpath(here):
            raise ValueError("not fastlayers' checkout")
        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, ValueError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _progress_bar(desc, total):
    """A tqdm bar on stderr whose one throughput figure is the engine's samples per second of
    training time (set by ``run_epoch``), not tqdm's wall-clock rate."""
    from tqdm import tqdm
    return tqdm(total=total, unit="img", desc=desc, leave=False, file=sys.stderr,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                           "[{elapsed}<{remaining}{postfix}]")


def _summary(args, dataset, r, compile_s):
    """The closing summary of the fastlayers run ``r``."""
    epochs = r["epochs"]
    target = "-"
    if args.target_accuracy is not None:
        target = (f"{r['time_to_target_s']:.2f} s to {args.target_accuracy:.2%}"
                  if r["time_to_target_s"] is not None
                  else f"{args.target_accuracy:.2%} not reached")
    rows = [
        ("model", f"{args.model} ({args.backend} backend, {_threads_text()})"),
        ("dataset", f"{dataset.name}: {len(dataset.y_train)} train / {len(dataset.y_test)} test"),
        ("optimizer", f"{args.optimizer}, lr {args.lr:g}"
                      + ("" if args.lr_schedule == "none" else f" ({args.lr_schedule} schedule)")
                      + ("" if args.clip_grad is None
                         else f", gradients clipped to {args.clip_grad:g}")
                      + f", batch {args.batch_size}"),
        ("loss", "cross-entropy" + (f", label smoothing {args.label_smoothing:g}"
                                    if args.label_smoothing else "")),
        ("augmentation", _augmentation_text(args)),
        ("epochs", f"{len(epochs)} of {args.epochs} (test accuracy checked after each"
                   + (", flip-averaged" if args.tta_flip else "") + ")"),
        ("training time", f"{r['total_train_s']:.2f} s in all, median epoch "
                          f"{r['median_epoch_s']:.3f} s"),
        ("throughput", f"{r['samples_per_s']:,.0f} samples/s of training time"),
        ("test accuracy", f"final {r['final_test_accuracy']:.2%}, best "
                          f"{r['best_test_accuracy']:.2%} (epoch {r['best_epoch']})"),
        ("time to target", target),
        ("compile/load", f"{compile_s:.2f} s (not in training time)"),
    ]
    if "communication_share" in r:
        ranks = _world_size()
        rows.insert(5, ("data parallel", f"{ranks} ranks x {args.batch_size // ranks} samples "
                        f"({'SyncBatchNorm, ' if args.sync_batchnorm and ranks > 1 else ''}"
                        f"communication {r['communication_s']:.2f} s, "
                        f"{r['communication_share']:.1%} of training time, waiting for the "
                        f"other ranks {r['wait_share']:.1%}; replicas bitwise equal after "
                        f"every epoch)"))
    outputs = (("model", args.save), ("checkpoint", args.checkpoint), ("JSON", args.json_path),
               ("plot", args.plot))
    files = [f"{path} ({what})" for what, path in outputs if path is not None]
    if files:
        rows.append(("files written", ", ".join(files)))
    if args.recipe is not None:
        rows.insert(0, ("recipe", args.recipe))
    width = max(len(k) for k, _ in rows)
    return "\n".join(["", "summary (fastlayers)"] + [f"  {k:<{width}}  {v}" for k, v in rows])


def _augmentation_text(args):
    from fastlayers.recipes import augmentation_parts
    parts = augmentation_parts(args.crop_padding, args.hflip)
    return ", ".join(parts) + " (in training time)" if parts else "none"


def _threads_text():
    import fastlayers as fl
    return f"{fl.get_num_threads()} kernel threads, {fl.get_blas_threads()} BLAS"


def _table(results):
    rows = ["", "| run | median s/epoch | fastlayers time / this | final test accuracy | "
                "time to target (s) | fastlayers time to target / this |",
            "|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        ttt = "-" if r["time_to_target_s"] is None else f"{r['time_to_target_s']:.2f}"
        ratio = r["fastlayers_time_to_target_ratio"]
        rows.append(f"| {name} | {r['median_epoch_s']:.3f} | {r['fastlayers_time_ratio']:.2f}x | "
                    f"{r['final_test_accuracy']:.2%} | {ttt} | "
                    f"{'-' if ratio is None else f'{ratio:.2f}x'} |")
    return "\n".join(rows)


def _write_json(path, report):
    """Write ``report`` atomically (a temporary file in the same directory, then a rename)."""
    from fastlayers._io import atomic_open
    with atomic_open(path) as f:
        f.write(json.dumps(report, indent=2, default=float).encode())


def _plot(path, results, args, dataset):
    """Test accuracy after each epoch against the cumulative training seconds, one curve per run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, r in results.items():
        seconds = np.cumsum([e["seconds"] for e in r["epochs"]])
        ax.plot(seconds, [e["test_accuracy"] for e in r["epochs"]], marker="o", label=name)
    if args.target_accuracy is not None:
        ax.axhline(args.target_accuracy, color="grey", linestyle=":", label="target")
    ax.set(xlabel="cumulative training time (s)", ylabel="test accuracy",
           title=f"{args.model}, {args.optimizer} (lr {args.lr:g}, batch {args.batch_size}), "
                 f"{dataset.name}")
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")  # a PNG whatever the name ends in
    plt.close(fig)


def main(argv=None):
    """Run the command line; a user's mistake ends in one line on stderr and exit status 2."""
    args = parse_args(argv)
    try:
        run(args)
    except (OSError, ValueError, TypeError) as e:  # DatasetError and DownloadError are ValueErrors
        if args.debug:
            raise
        message = " ".join(str(e).split()) or type(e).__name__  # one line, even for many mirrors
        print(f"fastlayers-mnist: error{_rank_text()}: {message}", file=sys.stderr)
        return _end_job(2)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"fastlayers-mnist: interrupted{_rank_text()}", file=sys.stderr)
        return _end_job(130)
    return 0


def _rank_text():
    from fastlayers import _process_group
    group = _process_group.get_default()
    return "" if group is None or group.size == 1 else f" (rank {group.rank} of {group.size})"


def _end_job(status):
    """``status``; with a process group of several ranks the whole job ends here (MPI_Abort):
    the other ranks would wait for this one forever."""
    if _world_size() > 1:
        import fastlayers.distributed as dist
        sys.stderr.flush()
        dist.abort(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
