"""Small-scale scaling sweeps: train a grid of small models, fit a power law, extrapolate to the target size.

    python -m training.sweep configs/train_tiny.yaml \\
        --size d_model=32,n_layers=2,n_heads=2 --size d_model=64,n_layers=2,n_heads=4 \\
        --size d_model=128,n_layers=4,n_heads=4 --size d_model=256,n_layers=4,n_heads=8 \\
        --budget 20x --budget 2M --target-model 7b [--nproc-per-node 8] [key.path=value ...]

Every run is the one config with the size's MPTConfig fields (`--size`) laid over the model's
overrides and ``train.max_steps`` set from the token budget (`--budget`: ``2M`` is a fixed token
count for every size, ``20x`` that many tokens per parameter). The schedule's warmup (and decay
steps, when set) keep the fraction of training the config gives them; evaluation, when
configured, runs once, at the end. Runs go in-process one after another, or through
``python -m training.launch --nproc-per-node N`` with --nproc-per-node.

Each run's final loss is its last eval loss, or else the mean train loss over the last tenth of
its logged steps. Per budget, L(N) = E + A / N^alpha is fitted to the final losses against the
non-embedding parameter count (Kaplan et al. 2020: small models follow the law more cleanly
without embeddings) and evaluated at the target size; the loss-against-compute law L(C) is fitted
to the runs on the compute frontier (those no cheaper run beats). The fits and runs are written
to ``sweep.json`` and drawn in ``scaling.png`` in the sweep folder; a finished run is reused when
the sweep is run again.

With ``--band band.json`` the sweep also exports the expected loss band of the planned run (the
target, at one budget) for ``gate.band`` (training.run.gate). A law fitted on final losses alone
would overstate how fast a longer cosine run improves mid-run, so the band at fraction f of the
schedule comes from the runs' train-loss curves at the same fraction f: L_f(N) = E_f + A_f / N^alpha_f
is fitted per fraction and evaluated at the target size; the half-width is z times the fit's
residual standard deviation, sqrt(RSS / (runs - 3)), floored at its median over the fractions.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from shards.config import ConfigError, parse_override

from training.config import load_config
from training.data.resolve import resolve_sources
from training.data.sources import check_sources
from training.model import PRESETS, MPTConfig
from training.planning.plan import DEFAULT_SEQ_LEN, TOKENS_PER_PARAM, parse_count
from training.run.gate import LossBand, smoothed_loss, window_steps
from training.train import train

MIN_POINTS = 3  # a power law with an offset has three parameters
BAND_FRACTIONS = [round(f, 2) for f in np.arange(0.10, 1.0001, 0.05)]  # where the band is fitted
BAND_Z = 2.0  # the band's half-width in residual standard deviations (about 95% of a normal scatter)


# ------------------------------------------------------------------------------------------ fitting


@dataclass(frozen=True)
class PowerLaw:
    """loss = E + A / x^alpha, fitted by least squares on the losses."""

    E: float
    A: float
    alpha: float
    rss: float  # residual sum of squares
    points: int

    def predict(self, x: float | np.ndarray) -> float | np.ndarray:
        return self.E + self.A / np.asarray(x, dtype=np.float64) ** self.alpha


def fit_power_law(x, y) -> PowerLaw:
    """Least-squares E >= 0, A > 0, alpha > 0 for y = E + A x^-alpha.

    For a fixed alpha the model is linear in E and A, so each alpha on a grid gets its exact
    least-squares E and A; the best alpha is then refined on finer grids around it.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of one length, got shapes {x.shape} and {y.shape}")
    if len(x) < MIN_POINTS:
        raise ValueError(f"a power law with an offset needs at least {MIN_POINTS} points, got {len(x)}")
    if not (np.all(np.isfinite(x)) and np.all(x > 0) and np.all(np.isfinite(y))):
        raise ValueError("x must be positive and finite, and y finite")
    scale = float(np.exp(np.mean(np.log(x))))  # fit in x / scale for conditioning, convert A back at the end
    u = x / scale

    def solve(alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        features = u[None, :] ** -alphas[:, None]  # [alphas, points]
        f_mean, y_mean = features.mean(axis=1), y.mean()
        f_var = ((features - f_mean[:, None]) ** 2).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = ((features - f_mean[:, None]) * (y - y_mean)).sum(axis=1) / f_var
        e = y_mean - a * f_mean
        # An asymptote below zero is not a loss: refit A alone with E = 0.
        below = e < 0
        a = np.where(below, (features * y).sum(axis=1) / (features**2).sum(axis=1), a)
        e = np.where(below, 0.0, e)
        rss = ((e[:, None] + a[:, None] * features - y) ** 2).sum(axis=1)
        rss = np.where(np.isfinite(a) & (a > 0), rss, np.inf)
        return e, a, rss

    alphas = np.linspace(1e-3, 3.0, 3000)
    best_alpha = 0.0
    for _ in range(3):
        _, _, rss = solve(alphas)
        best = int(np.argmin(rss))
        if not np.isfinite(rss[best]):
            raise ValueError("the losses do not fall as x grows: no decreasing power law fits them")
        best_alpha, step = float(alphas[best]), alphas[1] - alphas[0]
        alphas = np.linspace(max(best_alpha - step, 1e-6), best_alpha + step, 401)
    e, a, rss = solve(np.array([best_alpha]))
    return PowerLaw(E=float(e[0]), A=float(a[0]) * scale**best_alpha, alpha=best_alpha, rss=float(rss[0]),
                    points=len(x))


def compute_frontier(flops, losses) -> np.ndarray:
    """Indices of the runs no cheaper run beats (lowest loss so far, in order of compute)."""
    order = np.argsort(np.asarray(flops, dtype=np.float64), kind="stable")
    keep, best = [], math.inf
    for i in order:
        if losses[i] < best:
            keep.append(int(i))
            best = losses[i]
    return np.array(keep, dtype=np.int64)


# ------------------------------------------------------------------------------------------ the grid


@dataclass(frozen=True)
class Budget:
    """Training tokens for one column of the grid: a fixed count, or a multiple of the parameter count."""

    label: str
    tokens: float | None = None
    tokens_per_param: float | None = None

    def tokens_for(self, params: int) -> float:
        return self.tokens if self.tokens is not None else self.tokens_per_param * params


def parse_budget(text: str) -> Budget:
    """'2M' (tokens for every size) or '20x' (tokens per parameter)."""
    label = text.strip()
    try:
        if label.lower().endswith("x"):
            ratio = float(label[:-1])
            if ratio > 0:
                return Budget(label, tokens_per_param=ratio)
        else:
            tokens = parse_count(label)
            if tokens > 0:
                return Budget(label, tokens=tokens)
    except (ValueError, argparse.ArgumentTypeError):
        pass
    raise argparse.ArgumentTypeError(f"budget {text!r} must be a token count (2M, 5e6) or tokens per param (20x)")


def parse_size(text: str) -> dict:
    """'d_model=64,n_layers=2,n_heads=4' as MPTConfig fields (values read as YAML)."""
    size = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            keys, value = parse_override(part)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(f"--size {text!r}: {err}") from None
        size[".".join(keys)] = value
    if not size:
        raise argparse.ArgumentTypeError(f"--size {text!r} names no MPTConfig field (e.g. d_model=64,n_heads=4)")
    return size


@dataclass
class SweepRun:
    name: str
    size: dict
    budget: str
    params: int  # non-embedding, what the law is fitted against
    total_params: int
    steps: int
    tokens: int  # tokens actually trained: steps x global batch x sample length
    flops: float  # MPTConfig.flops_per_token(sample length) x tokens
    overrides: list[str]
    loss: float | None = None
    loss_source: str | None = None


def plan_runs(config: str, overrides: list[str], sizes: list[dict], budgets: list[Budget], sweep_name: str,
              runs_dir: Path) -> list[SweepRun]:
    """The grid, checked before anything trains: every size builds and every run's config loads."""
    base = load_config(config, overrides)
    seq_len = _sample_length(base)
    tokens_per_step = base.train.global_batch_size * seq_len
    runs = []
    for i, size in enumerate(sizes):
        try:
            model = MPTConfig.preset(base.model.preset, **{**base.model.overrides, **size})
        except (ValueError, TypeError) as err:
            raise ConfigError(f"--size {size}: {err}") from None
        params, total = model.num_params(exclude_embeddings=True), model.num_params()
        for budget in budgets:
            steps = max(1, math.ceil(budget.tokens_for(params) / tokens_per_step))
            name = f"{sweep_name}-size{i}-{budget.label}"
            run_overrides = [f"name={name}", f"output_dir={runs_dir}", f"train.max_steps={steps}"]
            run_overrides += [f"model.overrides.{key}={json.dumps(value)}" for key, value in size.items()]
            run_overrides += _scaled_schedule(base, steps)
            load_config(config, overrides + run_overrides)  # fails here, naming the key, not mid-sweep
            tokens = steps * tokens_per_step
            runs.append(SweepRun(name, size, budget.label, params, total, steps, tokens,
                                 float(model.flops_per_token(seq_len)) * tokens, overrides + run_overrides))
    return runs


def _sample_length(cfg) -> int:
    """Tokens per sample of the config's training data (what one step's tokens are counted in)."""
    try:
        train_sources, _ = resolve_sources(cfg)
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(f"data: {err}") from None
    return check_sources(train_sources)


def _scaled_schedule(base, steps: int) -> list[str]:
    """Warmup (and decay steps), sequence-length warmup and the mixture's phase ends as the same fraction of
    training as in the config; one evaluation, at the end."""
    fraction = steps / base.train.max_steps
    out = [f"schedule.warmup_steps={min(steps - 1, round(base.schedule.warmup_steps * fraction))}"]
    if base.schedule.decay_steps is not None:
        out.append(f"schedule.decay_steps={max(1, round(base.schedule.decay_steps * fraction))}")
    if base.eval.every_steps:
        out.append(f"eval.every_steps={steps}")
    if base.train.seq_len_warmup.steps:
        out.append(f"train.seq_len_warmup.steps={max(1, round(base.train.seq_len_warmup.steps * fraction))}")
    if base.data.schedule:  # every phase but the open last one ends at the same fraction of training
        phases = [{"until_step": None if p.until_step is None else max(1, round(p.until_step * fraction)),
                   "proportions": list(p.proportions)} for p in base.data.schedule]
        out.append(f"data.schedule={json.dumps(phases)}")  # JSON is YAML's flow style
    return out


def _records(metrics_path: Path) -> list[dict]:
    if not metrics_path.exists():
        return []
    return [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]


def loss_curve(metrics_path: Path) -> list[tuple[int, float]]:
    """A run's logged train losses as (step, loss)."""
    return [(r["step"], r["loss"]) for r in _records(metrics_path) if r.get("loss") is not None]


def final_loss(metrics_path: Path, steps: int) -> tuple[float, str] | None:
    """The finished run's loss (last eval loss, else mean train loss over the last tenth of logged steps)."""
    records = _records(metrics_path)
    if not records or max(r["step"] for r in records) < steps:
        return None
    evals = [r["eval_loss"] for r in records if r.get("eval_loss") is not None]
    if evals:
        return float(evals[-1]), "eval loss"
    train = [r["loss"] for r in records if r.get("loss") is not None]
    tail = train[-max(1, len(train) // 10):]
    return float(np.mean(tail)), f"train loss, mean of last {len(tail)} logged"


def execute(run: SweepRun, config: str, runs_dir: Path, nproc_per_node: int | None) -> None:
    """Train one run (in this process, or through training.launch), unless it already finished; record its loss."""
    metrics_path = runs_dir / run.name / "metrics.jsonl"
    done = final_loss(metrics_path, run.steps)
    if done is None and metrics_path.exists():
        raise RuntimeError(f"{metrics_path.parent} holds an unfinished run; delete that folder and run the sweep again")
    if done is None:
        print(f"sweep: training {run.name} ({run.params:,} params, {run.steps} steps, {run.tokens:,} tokens)",
              file=sys.stderr)
        if nproc_per_node is None:
            train(load_config(config, run.overrides))
        else:
            command = [sys.executable, "-m", "training.launch", config, *run.overrides,
                       "--nproc-per-node", str(nproc_per_node)]
            subprocess.run(command, check=True)
        done = final_loss(metrics_path, run.steps)
        if done is None:
            raise RuntimeError(f"{run.name} finished without logging its last step in {metrics_path}")
    else:
        print(f"sweep: reusing finished run {run.name}", file=sys.stderr)
    run.loss, run.loss_source = done


# ------------------------------------------------------------------------------------------ fits and plot


@dataclass
class SweepResult:
    runs: list[SweepRun]
    target_params: int  # non-embedding
    target_flops: float
    target_tokens: float
    by_params: dict[str, dict]  # budget label -> {"fit": PowerLaw, "target_loss": float}
    by_compute: dict | None  # {"fit": PowerLaw, "target_loss": float, "frontier": [run names]}
    notes: list[str]
    band: LossBand | None = None

    def to_dict(self) -> dict:
        def law(entry: dict) -> dict:
            return {**entry, "fit": asdict(entry["fit"])}

        return {
            "runs": [asdict(run) for run in self.runs],
            "target": {"params": self.target_params, "tokens": self.target_tokens, "flops": self.target_flops},
            "by_params": {label: law(entry) for label, entry in self.by_params.items()},
            "by_compute": law(self.by_compute) if self.by_compute else None,
            "notes": self.notes,
            "band": asdict(self.band) if self.band else None,
        }


def fit_sweep(runs: list[SweepRun], budgets: list[Budget], target: MPTConfig, target_tokens: float | None,
              target_seq_len: int = DEFAULT_SEQ_LEN) -> SweepResult:
    """L(N) per budget at the target size, and L(C) over the compute frontier at the target's compute."""
    target_params = target.num_params(exclude_embeddings=True)
    tokens = target_tokens if target_tokens is not None else TOKENS_PER_PARAM * target.num_params()
    target_flops = float(target.flops_per_token(target_seq_len)) * tokens
    by_params, notes = {}, []
    for budget in budgets:
        column = [run for run in runs if run.budget == budget.label]
        try:
            fit = fit_power_law([r.params for r in column], [r.loss for r in column])
        except ValueError as err:
            notes.append(f"budget {budget.label}: no L(N) fit: {err}")
            continue
        by_params[budget.label] = {"fit": fit, "target_loss": float(fit.predict(target_params)),
                                   "target_tokens": budget.tokens_for(target_params)}
    by_compute = None
    frontier = compute_frontier([r.flops for r in runs], [r.loss for r in runs])
    try:
        fit = fit_power_law([runs[i].flops for i in frontier], [runs[i].loss for i in frontier])
        by_compute = {"fit": fit, "target_loss": float(fit.predict(target_flops)),
                      "frontier": [runs[i].name for i in frontier]}
    except ValueError as err:
        notes.append(f"no L(C) fit on the {len(frontier)}-run compute frontier: {err}")
    return SweepResult(runs, target_params, target_flops, tokens, by_params, by_compute, notes)


@dataclass(frozen=True)
class BandRequest:
    """Which band to export: the target at one budget, for a planned run of ``steps`` steps."""

    path: Path
    budget: str  # the budget label whose runs the band is fitted on
    steps: int | None  # the planned run's train.max_steps; None: the budget's tokens at the sweep's batch
    z: float = BAND_Z


def fit_band(runs: list[SweepRun], runs_dir: Path, log_every: int, target_params: int, steps: int,
             z: float, source: dict) -> tuple[LossBand, list[str]]:
    """The expected train loss per schedule fraction at the target size, and the fractions left out (notes).

    Each run's loss at fraction f is its logged train loss averaged over the trailing window the gate
    uses (training.run.gate.window_steps) at step f x its steps; a law is fitted per fraction."""
    curves = {run.name: loss_curve(runs_dir / run.name / "metrics.jsonl") for run in runs}
    fitted, notes = [], []  # (fraction, expected loss at the target, residual std)
    for f in BAND_FRACTIONS:
        losses = [smoothed_loss(curves[run.name], max(1, round(f * run.steps)), window_steps(run.steps, log_every))
                  for run in runs]
        if any(loss is None for loss in losses):
            notes.append(f"band: no logged loss near {f:.0%} of some runs' schedules (logging.every_steps)")
            continue
        try:
            fit = fit_power_law([run.params for run in runs], losses)
        except ValueError as err:
            notes.append(f"band: no fit at {f:.0%} of the schedule: {err}")
            continue
        fitted.append((f, float(fit.predict(target_params)), math.sqrt(fit.rss / max(1, fit.points - MIN_POINTS))))
    if not fitted:
        raise RuntimeError("no loss band: " + "; ".join(notes))
    # With few runs a fraction's residuals have one or two degrees of freedom and can be near zero by
    # chance: the median residual std over the schedule is the floor of each fraction's.
    floor = float(np.median([std for _, _, std in fitted]))
    widths = [z * max(std, floor) for _, _, std in fitted]
    return LossBand(max_steps=steps, fractions=[f for f, _, _ in fitted], expected=[e for _, e, _ in fitted],
                    low=[e - w for (_, e, _), w in zip(fitted, widths)],
                    high=[e + w for (_, e, _), w in zip(fitted, widths)], z=z, source=source), notes


def plot_sweep(result: SweepResult, path: Path) -> None:
    """Loss against parameters (one fitted curve per budget) and against compute, each extended to the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    budgets = list(dict.fromkeys(run.budget for run in result.runs))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, label in enumerate(budgets):
        color = colors[j % len(colors)]
        column = [run for run in result.runs if run.budget == label]
        left.scatter([r.params for r in column], [r.loss for r in column], color=color, label=f"budget {label}")
        entry = result.by_params.get(label)
        if entry:
            fit = entry["fit"]
            xs = np.geomspace(min(r.params for r in column), result.target_params, 200)
            left.plot(xs, fit.predict(xs), color=color,
                      label=f"E={fit.E:.2f} + {fit.A:.3g}/N^{fit.alpha:.3f}")
            left.scatter([result.target_params], [entry["target_loss"]], marker="*", s=180, color=color,
                         edgecolor="black", zorder=3)
    left.set(xscale="log", xlabel="non-embedding parameters", ylabel="final loss", title="L(N) per token budget")
    right.scatter([r.flops for r in result.runs], [r.loss for r in result.runs], color="gray", label="runs")
    if result.by_compute:
        fit = result.by_compute["fit"]
        frontier = [r for r in result.runs if r.name in result.by_compute["frontier"]]
        right.scatter([r.flops for r in frontier], [r.loss for r in frontier], color=colors[0], label="frontier")
        xs = np.geomspace(min(r.flops for r in frontier), result.target_flops, 200)
        right.plot(xs, fit.predict(xs), color=colors[0], label=f"E={fit.E:.2f} + {fit.A:.3g}/C^{fit.alpha:.3f}")
        right.scatter([result.target_flops], [result.by_compute["target_loss"]], marker="*", s=180, color=colors[0],
                      edgecolor="black", zorder=3, label="target")
    right.set(xscale="log", xlabel="training FLOPs", ylabel="final loss", title="L(C) on the compute frontier")
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def format_result(result: SweepResult) -> str:
    lines = [f"{'run':<28} {'params':>12} {'steps':>7} {'tokens':>12} {'FLOPs':>10} {'loss':>8}"]
    lines += [f"{r.name:<28} {r.params:>12,} {r.steps:>7} {r.tokens:>12,} {r.flops:>10.3g} {r.loss:>8.4f}"
              for r in result.runs]
    lines.append(f"\ntarget: {result.target_params:,} non-embedding params, {result.target_tokens:.3g} tokens, "
                 f"{result.target_flops:.3g} FLOPs")
    for label, entry in result.by_params.items():
        fit = entry["fit"]
        lines.append(f"budget {label}: L(N) = {fit.E:.3f} + {fit.A:.4g} / N^{fit.alpha:.4f}  ->  "
                     f"{entry['target_loss']:.3f} at the target size")
    if result.by_compute:
        fit = result.by_compute["fit"]
        lines.append(f"frontier: L(C) = {fit.E:.3f} + {fit.A:.4g} / C^{fit.alpha:.4f}  ->  "
                     f"{result.by_compute['target_loss']:.3f} at the target compute")
    if result.band:
        band = result.band
        lines.append(f"loss band over {band.max_steps} steps (+-{band.z:g} residual std): " + ", ".join(
            f"{f:.0%} {low:.3f}-{high:.3f}" for f, low, high in
            zip(band.fractions, band.low, band.high) if round(f * 100) % 25 == 0))
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(lines)


def run_sweep(config: str, overrides: list[str], sizes: list[dict], budgets: list[Budget], out: Path,
              target: MPTConfig, target_tokens: float | None = None, target_seq_len: int = DEFAULT_SEQ_LEN,
              nproc_per_node: int | None = None, name: str = "sweep", band: BandRequest | None = None) -> SweepResult:
    """Plan the grid, train what is not finished, fit, and write sweep.json and scaling.png under `out`
    (and the loss band, when asked for)."""
    if len(sizes) < MIN_POINTS:
        raise ConfigError(f"a sweep needs at least {MIN_POINTS} sizes to fit E + A/N^alpha, got {len(sizes)}")
    if len({b.label for b in budgets}) != len(budgets):
        raise ConfigError(f"budgets repeat: {[b.label for b in budgets]}")
    if band is not None and band.budget not in {b.label for b in budgets}:
        raise ConfigError(f"--band-budget {band.budget!r} is not one of the budgets {[b.label for b in budgets]}")
    runs_dir = out / "runs"
    runs = plan_runs(config, overrides, sizes, budgets, name, runs_dir.resolve())
    for run in runs:
        execute(run, config, runs_dir, nproc_per_node)
    result = fit_sweep(runs, budgets, target, target_tokens, target_seq_len)
    if band is not None:
        base = load_config(config, overrides)
        budget = next(b for b in budgets if b.label == band.budget)
        steps = band.steps or max(1, math.ceil(budget.tokens_for(result.target_params) /
                                               (base.train.global_batch_size * _sample_length(base))))
        column = [run for run in runs if run.budget == band.budget]
        source = {"sweep": str(out), "budget": band.budget, "target_params": result.target_params,
                  "runs": [run.name for run in column]}
        result.band, notes = fit_band(column, runs_dir, base.logging.every_steps, result.target_params, steps,
                                      band.z, source)
        result.notes += notes
        result.band.write(band.path)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    plot_sweep(result, out / "scaling.png")
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.sweep",
                                     description="Train a grid of small models and fit a scaling law to their losses.")
    parser.add_argument("config", help="training YAML every run starts from")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides for every run")
    parser.add_argument("--size", type=parse_size, action="append", default=[], required=True,
                        help="MPTConfig fields of one size, e.g. d_model=64,n_layers=2,n_heads=4 (at least 3)")
    parser.add_argument("--budget", type=parse_budget, action="append", default=[],
                        help="tokens per run: a count (2M) or tokens per parameter (20x); repeatable; default 20x")
    parser.add_argument("--target-model", choices=sorted(PRESETS), default="7b", help="the size to extrapolate to")
    parser.add_argument("--target-size", type=parse_size, help="the target as MPTConfig fields over the config's "
                                                               "model instead of a preset, e.g. d_model=96")
    parser.add_argument("--target-tokens", type=parse_count, help="the target's training tokens (default 20/param)")
    parser.add_argument("--target-seq-len", type=int, default=DEFAULT_SEQ_LEN, help="the target's sequence length")
    parser.add_argument("--out", type=Path, help="sweep folder (default: <output_dir>/<name>)")
    parser.add_argument("--name", default="sweep", help="sweep name, the prefix of its run names")
    parser.add_argument("--nproc-per-node", type=int, help="launch each run with training.launch on this many ranks "
                                                           "(default: train in this process)")
    band = parser.add_argument_group("the expected loss band of the planned run (for gate.band)")
    band.add_argument("--band", type=Path, help="write the target's loss band per step to this JSON file")
    band.add_argument("--band-budget", help="the budget the planned run follows (default: the first --budget)")
    band.add_argument("--band-steps", type=int, help="the planned run's train.max_steps (default: the budget's "
                                                     "tokens for the target at this config's batch and length)")
    band.add_argument("--band-z", type=float, default=BAND_Z, help="half-width in residual std (default %(default)g)")
    return parser


def _target(args: argparse.Namespace) -> MPTConfig:
    """--target-size over the config's model, else the --target-model preset."""
    if args.target_size is None:
        return MPTConfig.preset(args.target_model)
    model = load_config(args.config, args.overrides).model
    try:
        return MPTConfig.preset(model.preset, **{**model.overrides, **args.target_size})
    except (ValueError, TypeError) as err:
        raise ConfigError(f"--target-size {args.target_size}: {err}") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    budgets = args.budget or [parse_budget("20x")]
    try:
        out = args.out or Path(load_config(args.config, args.overrides).output_dir) / args.name
        target = _target(args)
        band = None
        if args.band is not None:
            if (args.band_steps is not None and args.band_steps < 1) or not args.band_z > 0:
                raise ConfigError("--band-steps must be >= 1 and --band-z positive")
            band = BandRequest(args.band, args.band_budget or budgets[0].label, args.band_steps, args.band_z)
        result = run_sweep(args.config, args.overrides, args.size, budgets, out, target, args.target_tokens,
                           args.target_seq_len, args.nproc_per_node, args.name, band)
    except (ConfigError, RuntimeError, subprocess.CalledProcessError) as err:
        print(f"training.sweep: {err}", file=sys.stderr)
        return 2
    print(format_result(result))
    print(f"\nwrote {out / 'sweep.json'} and {out / 'scaling.png'}" + (f" and {args.band}" if args.band else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
