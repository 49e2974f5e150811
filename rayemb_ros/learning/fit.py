"""The resumable training loop shared by the encoder and the fixed-landmark baseline."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from rayemb_ros.learning.config import TrainConfig


def fit(
    model: torch.nn.Module,
    config: TrainConfig,
    out: Path,
    step_loss: Callable[[int], torch.Tensor],
    validate: Callable[[], tuple[float, dict[str, float]]],
    progress: bool = True,
    writes: bool = True,
) -> dict:
    """The resumable training loop: AdamW with warm-up and cosine decay on ``step_loss(step)``,
    ``validate()`` (a median pixel error, overall and per validation CT) every ``val_every``
    steps, the training state saved beside ``out`` every ``ckpt_every`` steps (by the process
    that ``writes``: one of data-parallel ranks) and picked up again by the same call. Uses
    ``config``'s steps, lr, weight_decay, warmup, val_every and ckpt_every; returns the summary
    (``val_px_median``, ``val_px_per_volume``, ``steps``, ``history``) with the model in eval mode."""
    from tqdm import tqdm

    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def lr_at(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / config.warmup
        return 0.5 * (1 + math.cos(math.pi * (step - config.warmup) / max(1, config.steps - config.warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    if writes:
        out.parent.mkdir(parents=True, exist_ok=True)
    state_path = out.with_name(out.name + ".train-state.pt")
    step, history = 0, []
    if state_path.exists():
        state = torch.load(state_path, map_location=next(model.parameters()).device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, history = int(state["step"]), json.loads(state["history_json"])

    def save_state():
        torch.save(
            {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "step": step, "history_json": json.dumps(history)},
            state_path.with_suffix(".tmp"),
        )
        state_path.with_suffix(".tmp").replace(state_path)

    started = time.time()
    bar = tqdm(total=config.steps, initial=step, disable=not progress, desc="train", dynamic_ncols=True)
    val_px = history[-1]["val_px"] if history else float("nan")
    per_volume = history[-1].get("val_px_per_volume", {}) if history else {}
    while step < config.steps:
        model.train()
        loss = step_loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        if step % config.val_every == 0 or step == config.steps:
            model.eval()
            with torch.no_grad():
                val_px, per_volume = validate()
            history.append({"step": step, "loss": loss.item(), "val_px": val_px, "val_px_per_volume": per_volume,
                            "seconds": time.time() - started})
        if writes and (step % config.ckpt_every == 0 or step == config.steps):
            save_state()
        bar.set_postfix(loss=f"{loss.item():.3f}", val_px=f"{val_px:.2f}")
        bar.update(1)
    bar.close()
    model.eval()
    return {"val_px_median": val_px, "val_px_per_volume": per_volume, "steps": step, "history": history}
