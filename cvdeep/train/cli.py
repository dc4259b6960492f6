"""``cvdeep train``: the training tasks on the command line.

    cvdeep train descriptor --model sdgmnet-cvdeep --loss sdgm --steps 4000 --out runs/sdgmnet
    cvdeep train descriptor --model hardnet-cvdeep --init hardnet-cvdeep --images my_photos/ --steps 500 --out runs/mine
    cvdeep train tr --loss tr --steps 3000 --out runs/tr-cvdeep
    cvdeep train tr --loss d2 --steps 3000 --out runs/d2-cvdeep
    cvdeep train delf --backbone d2-cvdeep --steps 2000 --out runs/delf-cvdeep
    cvdeep train lift --stage descriptor --out runs/lift-desc
    cvdeep train lift --stage orientation --init runs/lift-desc/weights.pt --out runs/lift-ori
    cvdeep train lift --stage detector --init runs/lift-ori/weights.pt --out runs/lift-cvdeep
    cvdeep train lfnet --steps 3000 --out runs/lfnet-cvdeep
    cvdeep train plot runs/sdgmnet runs/hardnet --out curves.png
    cvdeep train plot sdgm=runs/a hardnet=runs/b --panels --max-step 500 --out ablation.png

Every run writes its configuration, a CSV of its losses and a checkpoint every
``--checkpoint-every`` steps into ``--out``; ``--resume`` continues a stopped run exactly.
Ctrl-C or SIGTERM stops a run after its current step, with a checkpoint (exit status 130).
"""
from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..errors import Error


def _threads(value: str) -> int:
    count = int(value)
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1 thread, got {count}")
    return count


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="run directory (config, log.csv, checkpoint.pt, weights.pt)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'")
    parser.add_argument("--threads", type=_threads, default=None, help="CPU threads for torch (default: all)")
    parser.add_argument("--checkpoint-every", type=int, default=250, help="steps between checkpoints (default 250)")
    parser.add_argument("--cache", default=None,
                        help="folder for the generated training data (default: the user cache)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)

    descriptor = tasks.add_parser("descriptor", help="train a patch descriptor on unlabeled photos",
                                  description="Train a patch descriptor (SDGMNet, HardNet, L2-Net, ...) on patch pairs "
                                  "labelled by random homographies of unlabeled photos.")
    from .descriptor import DescriptorTraining
    from .losses import LOSSES

    defaults = DescriptorTraining()
    descriptor.add_argument("--model", default=defaults.model,
                            help=f"registry name of the network to train (default {defaults.model})")
    descriptor.add_argument("--loss", default=defaults.loss, choices=sorted(LOSSES), help="the training loss")
    descriptor.add_argument("--loss-option", action="append", default=[], metavar="NAME=VALUE",
                            help="a loss parameter, e.g. margin=1.2 (repeatable)")
    descriptor.add_argument("--images", default=defaults.images, help="folder of unlabeled photos")
    descriptor.add_argument("--steps", type=int, default=defaults.steps)
    descriptor.add_argument("--batch-size", type=int, default=defaults.batch_size)
    descriptor.add_argument("--optimizer", default=defaults.optimizer, choices=("adam", "sgd"))
    descriptor.add_argument("--lr", type=float, default=defaults.lr)
    descriptor.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    descriptor.add_argument("--precision", default=defaults.precision, choices=("bf16", "fp32"))
    descriptor.add_argument("--no-compile", action="store_true", help="run eagerly instead of torch.compile")
    descriptor.add_argument("--init", default=None, help="weights to fine-tune from: a registry name or a file")
    descriptor.add_argument("--pairs", default=None, metavar="JSON",
                            help='patch-pair settings overriding the defaults, e.g. \'{"keypoints_per_image": 256}\'')
    _common(descriptor)

    magicpoint = tasks.add_parser("magicpoint", help="SuperPoint stage 1: the detector on Synthetic Shapes")
    from .superpoint import AdaptationSettings, JointTraining, MagicPointTraining

    stage1 = MagicPointTraining()
    magicpoint.add_argument("--steps", type=int, default=stage1.steps)
    magicpoint.add_argument("--batch-size", type=int, default=stage1.batch_size)
    magicpoint.add_argument("--shapes-per-primitive", type=int, default=stage1.shapes_per_primitive)
    magicpoint.add_argument("--lr", type=float, default=stage1.lr)
    magicpoint.add_argument("--no-compile", action="store_true")
    magicpoint.add_argument("--no-eval", action="store_true",
                            help="skip the repeatability report on the shared evaluation pairs after training")
    _common(magicpoint)

    adapt = tasks.add_parser("adapt", help="SuperPoint stage 2: homographic adaptation -> pseudo ground truth")
    stage2 = AdaptationSettings()
    adapt.add_argument("--detector", required=True, help="weights.pt of the detector (the magicpoint run's)")
    adapt.add_argument("--images", default=stage2.images)
    adapt.add_argument("--homographies", type=int, default=stage2.homographies)
    adapt.add_argument("--precision", default=stage2.precision, choices=("bf16", "fp32"))
    adapt.add_argument("--out", required=True, help="labels file to write (npz); resumable")
    adapt.add_argument("--seed", type=int, default=0)
    adapt.add_argument("--device", default="auto")
    adapt.add_argument("--threads", type=_threads, default=None)
    adapt.add_argument("--quiet", action="store_true")

    joint = tasks.add_parser("superpoint", help="SuperPoint stage 3: detector + descriptor on pseudo-labelled photos")
    stage3 = JointTraining()
    joint.add_argument("--labels", required=True, help="the adapt stage's labels.npz")
    joint.add_argument("--images", default=stage2.images, help="the photos the labels were made from")
    joint.add_argument("--init", default=None, help="weights to start from (e.g. the magicpoint run's weights.pt)")
    joint.add_argument("--steps", type=int, default=stage3.steps)
    joint.add_argument("--batch-size", type=int, default=stage3.batch_size)
    joint.add_argument("--lr", type=float, default=stage3.lr)
    joint.add_argument("--no-compile", action="store_true")
    _common(joint)

    dense = tasks.add_parser("tr", help="TRNet with TR (CVPR 2023) or D2-Net's loss on unlabeled photos",
                             description="Train the light describe-and-detect network TRNet with TR's "
                             "transformation-predictive loss (--loss tr: tr-cvdeep) or D2-Net's "
                             "soft-detection-weighted triplet loss (--loss d2: d2-cvdeep) on pairs of photo crops "
                             "and their random homographies; the same --seed gives both losses the same data.")
    from .tr import TRTraining

    tr_defaults = TRTraining()
    dense.add_argument("--loss", default=tr_defaults.loss, choices=("tr", "d2"), help="the training method")
    dense.add_argument("--images", default=tr_defaults.images, help="folder of unlabeled photos")
    dense.add_argument("--steps", type=int, default=tr_defaults.steps)
    dense.add_argument("--batch-size", type=int, default=tr_defaults.batch_size, help="image pairs per step")
    dense.add_argument("--crop", type=int, default=tr_defaults.crop,
                       help="side of both views in pixels (multiple of 4)")
    dense.add_argument("--max-side", type=int, default=tr_defaults.max_side,
                       help="photos are shrunk so their long side is at most this many pixels (default: "
                            "%(default)s); the network learns structures at this scale")
    dense.add_argument("--lr", type=float, default=tr_defaults.lr)
    dense.add_argument("--strength", type=float, nargs=2, default=tr_defaults.strength, metavar=("FIRST", "LAST"),
                       help="warp strength at the first and last step, in [0, 1] (default: %(default)s, both losses)")
    dense.add_argument("--precision", default=tr_defaults.precision, choices=("bf16", "fp32"))
    dense.add_argument("--no-compile", action="store_true", help="run eagerly instead of torch.compile")
    dense.add_argument("--init", default=None, help="weights to start from: a registry name or a file")
    _common(dense)

    attention = tasks.add_parser("delf", help="DELF's attention and PCA on unlabeled photos (each photo one class)",
                                 description="Train DELF's attention network on a frozen backbone with image-level "
                                 "supervision (each photo and its random views one class, attention-weighted pooling "
                                 "and a cosine classifier), then fit the descriptor PCA and calibrate the attention "
                                 "scale on the same photos.")
    from .delf import DELFTraining

    delf_defaults = DELFTraining()
    attention.add_argument("--model", default=delf_defaults.model, help="DELF model whose network is trained "
                           f"(default {delf_defaults.model})")
    attention.add_argument("--backbone", default=delf_defaults.backbone,
                           help="frozen backbone weights: a registry name or a file (default %(default)s)")
    attention.add_argument("--images", default=delf_defaults.images, help="folder of unlabeled photos")
    attention.add_argument("--steps", type=int, default=delf_defaults.steps)
    attention.add_argument("--batch-size", type=int, default=delf_defaults.batch_size, help="views per step")
    attention.add_argument("--crop", type=int, default=delf_defaults.crop, help="side of every view in pixels")
    attention.add_argument("--lr", type=float, default=delf_defaults.lr,
                           help="initial SGD learning rate, decaying linearly to 0")
    attention.add_argument("--logit-scale", type=float, default=delf_defaults.logit_scale,
                           help="scale s of the cosine classifier's logits s cos(y, w)")
    attention.add_argument("--pca-images", type=int, default=delf_defaults.pca_images,
                           help="photos whose descriptors fit the PCA and the attention calibration")
    attention.add_argument("--pca-scales", default=delf_defaults.pca_scales, help="pyramid of that extraction")
    _common(attention)
    lift = tasks.add_parser("lift", help="LIFT, one stage at a time: descriptor, orientation, detector",
                            description="Train one network of LIFT (the others frozen) in the paper's order: "
                            "--stage descriptor, then orientation with --init <descriptor run>/weights.pt, then "
                            "detector with --init <orientation run>/weights.pt; with --descriptor official the "
                            "released LIFT descriptor is used (frozen) and training starts at the orientation stage.")
    from .lift import STAGES, LIFTTraining

    lift_defaults = LIFTTraining()
    lift.add_argument("--stage", required=True, choices=STAGES, help="the network trained by this run")
    lift.add_argument("--descriptor", default=lift_defaults.descriptor, choices=("cvdeep", "official"),
                      help="cvdeep's descriptor (lift-cvdeep) or LIFT's released one (lift-cvdeep-picc)")
    lift.add_argument("--init", default=None, help="weights.pt of the previous stage (or a registry name)")
    lift.add_argument("--images", default=lift_defaults.images, help="folder of unlabeled photos")
    lift.add_argument("--steps", type=int, default=lift_defaults.steps)
    lift.add_argument("--photos-per-step", type=int, default=lift_defaults.photos_per_step)
    lift.add_argument("--keypoints-per-photo", type=int, default=lift_defaults.keypoints_per_photo)
    lift.add_argument("--lr", type=float, default=lift_defaults.lr)
    lift.add_argument("--mining-ratio", type=float, default=lift_defaults.mining_ratio,
                      help="descriptor stage: back-propagate the hardest 1/ratio of the pairs (default %(default)s)")
    lift.add_argument("--input-stats", default=lift_defaults.input_stats, choices=("photos", "official"),
                      help="input standardisation when starting without --init: the photos' or LIFT's mean_std.h5")
    lift.add_argument("--precision", default=lift_defaults.precision, choices=("bf16", "fp32"))
    _common(lift)

    lfnet = tasks.add_parser("lfnet", help="LF-Net with its two-branch losses on unlabeled photos",
                             description="Train LF-Net (lfnet-cvdeep): score-map, geometry, pair and triplet losses on "
                             "pairs of photo crops related by random homographies, branch j supervising branch i.")
    from .lfnet import LFNetTraining

    lfnet_defaults = LFNetTraining()
    lfnet.add_argument("--images", default=lfnet_defaults.images, help="folder of unlabeled photos")
    lfnet.add_argument("--steps", type=int, default=lfnet_defaults.steps)
    lfnet.add_argument("--batch-size", type=int, default=lfnet_defaults.batch_size, help="image pairs per step")
    lfnet.add_argument("--crop", type=int, default=lfnet_defaults.crop, help="side of both views in pixels")
    lfnet.add_argument("--top-k", type=int, default=lfnet_defaults.top_k, help="keypoints per view")
    lfnet.add_argument("--lr", type=float, default=lfnet_defaults.lr)
    lfnet.add_argument("--precision", default=lfnet_defaults.precision, choices=("bf16", "fp32"))
    lfnet.add_argument("--init", default=None, help="weights to start from: a registry name or a file")
    _common(lfnet)

    plot = tasks.add_parser("plot", help="plot the loss curves of runs into a PNG (needs matplotlib)")
    plot.add_argument("runs", nargs="+", help="run directories (label=dir to name a curve)")
    plot.add_argument("--out", required=True, help="PNG file to write")
    plot.add_argument("--metric", default="loss", help="column of log.csv to plot (default loss)")
    plot.add_argument("--max-step", type=int, default=None, help="plot the steps up to this one only")
    plot.add_argument("--panels", action="store_true", help="one axis per run (losses on different scales)")


def _loss_options(items: list[str]) -> dict[str, float | str]:
    options: dict[str, float | str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise Error(f"--loss-option: got {item!r}; expected NAME=VALUE, e.g. margin=1.2")
        try:
            options[name] = float(value)
        except ValueError:
            options[name] = value
    return options


_TRAINED = "trained {steps} steps of {model} in {train_seconds} s; weights: {weights}"


def _device(name: str) -> torch.device:
    from ..feature2d import resolve_device

    return resolve_device(name)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.task == "plot":
        from .loop import plot_curves

        runs = {}
        for item in args.runs:
            label, sep, path = item.partition("=")
            runs[label if sep else Path(item).name] = path if sep else item
        print(f"wrote {plot_curves(runs, args.out, args.metric, max_step=args.max_step, panels=args.panels)}")
        return 0
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.task in ("magicpoint", "adapt", "superpoint"):
        return _run_superpoint(args)
    if args.task == "tr":
        return _run_tr(args)
    if args.task == "delf":
        return _run_delf(args)
    if args.task == "lift":
        return _run_lift(args)
    if args.task == "lfnet":
        return _run_lfnet(args)
    from .descriptor import DescriptorTraining, train_descriptor

    pairs = DescriptorTraining().pairs
    if args.pairs:
        try:
            pairs = {**pairs, **json.loads(args.pairs)}
        except json.JSONDecodeError as exc:
            raise Error(f"--pairs: not JSON ({exc}); expected e.g. '{{\"keypoints_per_image\": 256}}'") from None
    settings = DescriptorTraining(
        model=args.model, loss=args.loss, loss_options=_loss_options(args.loss_option), images=args.images,
        steps=args.steps, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
        weight_decay=args.weight_decay, precision=args.precision, compile=not args.no_compile, seed=args.seed,
        init=args.init, pairs=pairs,
    )
    return _train(train_descriptor, settings, args, "trained {steps} steps in {train_seconds} s; held-out FPR95 "
                  "{holdout_fpr95:.4f}; weights: {weights}", cache_dir=args.cache)


def _train(train: Callable[..., dict[str, Any]], settings: Any, args: argparse.Namespace, message: str,
           **options: Any) -> int:
    """``train(settings, args.out, ...)`` with the options every task's command shares (resume, device,
    checkpoint interval, progress), then ``message`` formatted with the run's summary; one place for them."""
    summary = train(settings, args.out, resume=args.resume, device=_device(args.device),
                    checkpoint_every=args.checkpoint_every, progress=not args.quiet, **options)
    print(message.format(**summary))
    return 0


def _report_repeatability(weights: str, out_dir: str, device: str) -> None:
    """SuperPoint reports MagicPoint's repeatability: print it (and SIFT's) on the shared pairs and
    keep it in the run's ``repeatability.json``."""
    from . import superpoint

    measured = superpoint.detector_repeatability(weights, device=device)
    if measured is None:
        print("repeatability: the shared evaluation data was not found (set CVDEEP_SHARED); not measured")
        return
    keypoints = superpoint.REPEATABILITY_KEYPOINTS
    (Path(out_dir) / "repeatability.json").write_text(json.dumps({"max_keypoints": keypoints, **measured}, indent=2)
                                                      + "\n")
    print(f"repeatability on the shared pairs, {keypoints} keypoints: "
          + ", ".join(f"{name} {value:.1f} %" for name, value in measured.items()))


def _run_superpoint(args: argparse.Namespace) -> int:
    from . import superpoint

    device = _device(args.device)
    if args.task == "magicpoint":
        settings = superpoint.MagicPointTraining(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                                 shapes_per_primitive=args.shapes_per_primitive,
                                                 compile=not args.no_compile, seed=args.seed)
        summary = superpoint.train_magicpoint(settings, args.out, args.resume, device, args.cache,
                                              args.checkpoint_every, not args.quiet)
        if not args.no_eval:
            _report_repeatability(summary["weights"], args.out, str(device))
    elif args.task == "adapt":
        adaptation = superpoint.AdaptationSettings(detector=args.detector, images=args.images,
                                                   homographies=args.homographies, precision=args.precision,
                                                   seed=args.seed)
        result = superpoint.export_pseudo_labels(adaptation, args.out, device, not args.quiet)
        print(f"wrote {args.out}: {result['photos']} photos, {result['keypoints_mean']:.0f} keypoints each on average")
        return 0
    else:
        joint = superpoint.JointTraining(labels=args.labels, init=args.init, steps=args.steps,
                                         batch_size=args.batch_size, lr=args.lr, compile=not args.no_compile,
                                         seed=args.seed)
        summary = superpoint.train_joint(joint, args.out, args.resume, device, args.images, args.checkpoint_every,
                                         not args.quiet)
    print(f"trained {summary['steps']} steps in {summary['train_seconds']} s; weights: {summary['weights']}")
    return 0


def _run_tr(args: argparse.Namespace) -> int:
    from .tr import TRTraining, train_tr

    settings = TRTraining(loss=args.loss, images=args.images, steps=args.steps, batch_size=args.batch_size,
                          crop=args.crop, max_side=args.max_side, lr=args.lr, strength=tuple(args.strength),
                          precision=args.precision, compile=not args.no_compile, seed=args.seed, init=args.init)
    return _train(train_tr, settings, args, _TRAINED)


def _run_delf(args: argparse.Namespace) -> int:
    from .delf import DELFTraining, train_delf

    backbone = None if str(args.backbone).lower() == "none" else args.backbone
    settings = DELFTraining(model=args.model, backbone=backbone, images=args.images, steps=args.steps,
                            batch_size=args.batch_size, crop=args.crop, lr=args.lr, logit_scale=args.logit_scale,
                            seed=args.seed, pca_images=args.pca_images, pca_scales=args.pca_scales)
    return _train(train_delf, settings, args, "trained {steps} steps of {model} in {train_seconds} s; attention scale "
                  "{attention_scale:.4g}; weights: {weights}")


def _run_lift(args: argparse.Namespace) -> int:
    from .lift import LIFTTraining, train_lift

    settings = LIFTTraining(stage=args.stage, descriptor=args.descriptor, init=args.init, images=args.images,
                            steps=args.steps, photos_per_step=args.photos_per_step,
                            keypoints_per_photo=args.keypoints_per_photo, lr=args.lr, mining_ratio=args.mining_ratio,
                            input_stats=args.input_stats, precision=args.precision, seed=args.seed)
    return _train(train_lift, settings, args,
                  "trained {steps} steps of the {stage} of {model} in {train_seconds} s; weights: {weights}")


def _run_lfnet(args: argparse.Namespace) -> int:
    from .lfnet import LFNetTraining, train_lfnet

    settings = LFNetTraining(images=args.images, steps=args.steps, batch_size=args.batch_size, crop=args.crop,
                             top_k=args.top_k, lr=args.lr, precision=args.precision, seed=args.seed, init=args.init)
    return _train(train_lfnet, settings, args, _TRAINED)
