"""Shared by pretrain (stage 1, all frames) and retrain (stage 2, the filter's kept frames): build the
dataset, train the SDE, save it, evaluate it on val next to the row-median prior.

Outputs are written by rank 0 only; under torchrun every rank trains on its share of each batch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from semdepth import SemdepthError
from semdepth.config import to_dict
from semdepth.training import ddp
from stages._common import PLOTS_DIR, StageContext, is_rank0

PREPARED = Path("data/prepared")
MANIFEST = PREPARED / "manifest.parquet"
PSEUDOLABELS = Path("data/pseudolabels/pseudolabels.parquet")
PSEUDOLABEL_MODEL = Path("data/models/pseudolabel.pt")


def resolve_pretrained(choice: str) -> str | None:
    """sde.pretrained -> what ResnetEncoder takes: None, "imagenet" or a file path."""
    if choice in ("none", ""):
        return None
    if choice == "imagenet":
        return "imagenet"
    path = PSEUDOLABEL_MODEL if choice == "source" else Path(choice)
    if not path.is_file():
        what = "the pseudolabel stage's model" if choice == "source" else "a backbone state dict"
        raise SemdepthError(f"sde.pretrained: {path} not found (expected {what})")
    return str(path)


def evaluate(ctx: StageContext, depth_net, description: str) -> dict:
    from semdepth.metrics.depth_eval import evaluate_depth_net

    p = ctx.params
    return evaluate_depth_net(depth_net, MANIFEST, device=ctx.device, net_min_depth=p.sde.min_depth,
                              net_max_depth=p.sde.max_depth, eval_cfg=p.eval, hood_fraction=p.data.hood_fraction,
                              pseudolabels=PSEUDOLABELS, batch_size=p.eval.batch_size, description=description)


def prior(ctx: StageContext, train_ids: Sequence[str] | None = None) -> dict:
    from semdepth.metrics.depth_eval import row_median_prior_metrics

    p = ctx.params
    return row_median_prior_metrics(MANIFEST, eval_cfg=p.eval, hood_fraction=p.data.hood_fraction,
                                    train_ids=list(train_ids) if train_ids is not None else None)


def train_and_save(ctx: StageContext, out_model: Path, ids: Sequence[str] | None = None) -> tuple[dict, object]:
    """Train on the triplets (restricted to `ids` if given), save `out_model` (rank 0); returns the
    training summary and the trained depth net (on rank 0; None elsewhere)."""
    from semdepth.data.sequence import TripletDataset
    from semdepth.models.sde import save_sde
    from semdepth.training.sde_trainer import SdeTrainer

    p = ctx.params
    cfg = p.sde
    if not MANIFEST.is_file():
        raise SemdepthError(f"{MANIFEST}: not found (run downsample first)")
    pseudo = None
    if cfg.guidance != "none":
        if not PSEUDOLABELS.is_file():
            raise SemdepthError(f"sde.guidance {cfg.guidance}: {PSEUDOLABELS} not found (run pseudolabel first)")
        pseudo = PSEUDOLABELS
    dataset = TripletDataset(MANIFEST, ids, cfg.flip_prob, cfg.jitter_prob, pseudo)
    pretrained = resolve_pretrained(cfg.pretrained)
    trainer = SdeTrainer(cfg, dataset, ctx.device, seed=p.seed, num_workers=p.compute.num_workers,
                         pretrained=pretrained, tracker=ctx.tracker, resume_name=ctx.name, description=ctx.name,
                         pseudolabel_model=PSEUDOLABEL_MODEL if cfg.guidance == "pac" else None)
    ctx.log.info("%s: %d training triplets, %d steps of batch %d, encoder ResNet-%d (%s), guidance %s",
                 ctx.name, len(dataset), cfg.steps, cfg.batch_size, cfg.encoder_layers, cfg.pretrained, cfg.guidance)
    result = trainer.train()
    summary = {
        "frames": len(dataset), "steps": result.steps, "batch_size": cfg.batch_size,
        "seconds": round(result.seconds, 2), "steps_per_s": result.steps_per_s,
        "images_per_s": result.steps_per_s * cfg.batch_size, "data_wait_share": (
            result.data_wait / result.seconds if result.seconds > 0 else None),
        "resumed": result.steps_run < result.steps, "processes": ddp.world()[1],
        "loss": result.loss_log.summary("loss"), "final_t_z": result.loss_log.summary("t_z").get("last"),
    }
    if is_rank0():
        save_sde(out_model, result.depth_net, result.pose_net, to_dict(cfg),
                 {"stage": ctx.name, "frames": len(dataset), "steps": result.steps, "seed": p.seed,
                  "pretrained": cfg.pretrained, "height": dataset.height, "width": dataset.width})
        result.loss_log.write(PLOTS_DIR / f"{ctx.name}_loss.csv")
    ddp.barrier()
    trainer.finish()
    return summary, (result.depth_net if is_rank0() else None)


def headline(metrics: dict, prior_metrics: dict) -> dict:
    """The numbers a reader wants first: AbsRel of the network against both priors."""
    net = metrics["abs_rel"]
    return {"abs_rel": net, "prior_abs_rel_unscaled": prior_metrics["unscaled"]["abs_rel"],
            "prior_abs_rel_median_scaled": prior_metrics["median_scaled"]["abs_rel"],
            "beats_prior": bool(net < min(prior_metrics["unscaled"]["abs_rel"],
                                          prior_metrics["median_scaled"]["abs_rel"]))}
