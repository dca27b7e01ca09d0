"""``stepjepa probe``: how well a model's JEPA views align on held-out chats.

The views are built by the training code itself (``pack_chat``, ``PackedCollator``, ``compute_objective``),
so a probe measures exactly the embeddings the JEPA loss compares. For N held-out examples with views it
reports the mean cosine of matched pairs (view_a_i, view_b_i) and of mismatched pairs (i != j), their
gap, top-1/top-5 retrieval of the right view_b among all N, and the effective rank of each view's
embeddings. Two views when the model has predictor tokens: K=0 (identity predictor, which every model
has) and the model's K. With ``--step_pairs all`` every step -> next pair of a chat is a view pair, and the
same metrics are given per pair number too (pair p: step p -> step p+1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from stepjepa.core.errors import UsageError
from stepjepa.core.examples import RowSettings, pack_chat
from stepjepa.core.layout import NO_VIEW, PackedCollator
from stepjepa.core.objective import Objective, compute_objective
from stepjepa.core.tokenization import IGNORE_INDEX
from stepjepa.data.files import check_outputs_apart
from stepjepa.data import load_chats, write_json_atomic
from stepjepa.evaluation.probe_reading import PROBE_LEGEND, probe_reading
from stepjepa.evaluation.config import PROBE_SCALARS, TOP_K, ProbeConfig
from stepjepa.machine import provenance
from stepjepa.models import PREDICTOR_TOKEN, load_model, load_tokenizer
from stepjepa.precision import inference_dtype, resolve_device


def effective_rank(embeddings: torch.Tensor) -> tuple[float, list[float]]:
    """exp(entropy) of the normalised singular values of ``embeddings (N, D)``, centred; and that spectrum.

    Centring removes the offset every hidden state shares, which would otherwise count as one dominant
    direction (RankMe, Garrido et al. 2023, on centred features). Ranges from 1 to min(N, D).
    """
    centred = embeddings.double() - embeddings.double().mean(dim=0, keepdim=True)
    singular = torch.linalg.svdvals(centred)
    if float(singular.sum()) == 0.0:
        return 0.0, [0.0] * len(singular)
    p = singular / singular.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return float(entropy.exp()), [float(v) for v in p]


def alignment_metrics(view_a: torch.Tensor, view_b: torch.Tensor) -> dict[str, Any]:
    """Matched vs mismatched cosine, retrieval of view_b_i from view_a_i among all N, effective ranks.

    ``view_a``, ``view_b``: (N, D), row i of each from the same example; N >= 2.
    """
    n = len(view_a)
    cos = F.normalize(view_a.double(), dim=-1) @ F.normalize(view_b.double(), dim=-1).T  # (N, N)
    matched = cos.diagonal()
    off_diagonal = cos[~torch.eye(n, dtype=torch.bool)]
    # Rank of the right view_b in each row: how many candidates score strictly higher (ties count for it).
    rank = (cos > matched[:, None]).sum(dim=1)
    rank_a, spectrum_a = effective_rank(view_a)
    rank_b, spectrum_b = effective_rank(view_b)
    return {
        "pairs": n,
        "matched_cosine": float(matched.mean()),
        "mismatched_cosine": float(off_diagonal.mean()),
        "gap": float(matched.mean() - off_diagonal.mean()),
        "top1": float((rank < 1).double().mean()),
        "top5": float((rank < TOP_K).double().mean()),
        "chance_top1": 1 / n,
        "chance_top5": min(TOP_K, n) / n,
        "effective_rank_a": rank_a,
        "effective_rank_b": rank_b,
        "spectrum_a": spectrum_a,
        "spectrum_b": spectrum_b,
        "matched_cosines": [float(v) for v in matched],
        "mismatched_cosines": [float(v) for v in off_diagonal],
    }


def model_predictor_count(tokenizer: Any) -> int:
    """How many predictor tokens ``<|predictor_1|>..<|predictor_K|>`` the tokenizer holds (consecutive from 1)."""
    vocab = tokenizer.get_vocab()
    k = 0
    while PREDICTOR_TOKEN.format(k + 1) in vocab:
        k += 1
    return k


def view_rows(tokenizer: Any, chats: list[list[dict]], mode: str, predictor_ids: list[int],
              max_length: int, step_pairs: str = "first") -> list[dict[str, Any]]:
    """The packed training rows of the chats that have ``mode``'s views (the others are left out)."""
    rows = [pack_chat(tokenizer, chat, RowSettings(mode, predictor_ids, None, max_length, step_pairs)) for chat in chats]
    return [row for row in rows if row["view_a_index"] != NO_VIEW]


def by_pair_number(rows: list[dict[str, Any]], view_a: torch.Tensor, view_b: torch.Tensor) -> dict[str, dict]:
    """The scalar metrics of each pair number p (step p -> step p+1) held by at least two rows."""
    numbers = torch.tensor([p for row in rows for p in range(1, len(row["view_pairs"]) + 1)])  # (P,), row order
    per_pair = {}
    for p in sorted(set(numbers.tolist())):
        chosen = numbers == p
        if int(chosen.sum()) >= 2:
            metrics = alignment_metrics(view_a[chosen], view_b[chosen])
            per_pair[str(p)] = {key: metrics[key] for key in PROBE_SCALARS}
    return per_pair


@torch.inference_mode()
def view_embeddings(model: Any, tokenizer: Any, rows: list[dict[str, Any]], mode: str, batch_size: int,
                    progress: Any = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``view_a (N, D)``, ``view_b (N, D)`` of N packed rows with views, and their token-weighted LM loss."""
    collator = PackedCollator(tokenizer.pad_token_id)
    device = next(model.parameters()).device
    view_a, view_b, lm_sum, lm_tokens = [], [], 0.0, 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        batch = {key: value.to(device) for key, value in collator(chunk).items()}
        out = compute_objective(model, batch, Objective(mode=mode))
        view_a.append(out.view_a.float().cpu())
        view_b.append(out.view_b.float().cpu())
        labelled = int((batch["labels"] != IGNORE_INDEX).sum())
        lm_sum, lm_tokens = lm_sum + float(out.lm_loss) * labelled, lm_tokens + labelled
        if progress is not None:
            progress.update(len(chunk))
    return torch.cat(view_a), torch.cat(view_b), lm_sum / lm_tokens


def probe_model(cfg: ProbeConfig) -> dict[str, Any]:
    """Build each view's rows (checked before the model loads), embed them, return the summary."""
    from tqdm.auto import tqdm

    chats = load_chats(cfg.test_file)[: cfg.max_examples]
    tokenizer = load_tokenizer(cfg.model_path)
    available = model_predictor_count(tokenizer)
    k = available if cfg.predictors == -1 else cfg.predictors
    if k > available:
        raise UsageError(f"model '{cfg.model_path}' has {available} predictor tokens; --predictors {k} asks for "
                         f"{PREDICTOR_TOKEN.format(available + 1)}")
    predictor_ids = tokenizer.convert_tokens_to_ids([PREDICTOR_TOKEN.format(i) for i in range(1, k + 1)])
    rows = {kind: view_rows(tokenizer, chats, cfg.mode, predictor_ids[:kind], cfg.max_length, cfg.step_pairs)
            for kind in [0] + ([k] if k else [])}
    if len(rows[0]) < 2:
        raise UsageError(f"{cfg.test_file}: {len(rows[0])} of {len(chats)} chats have {cfg.mode} views "
                         f"(Step-JEPA needs two whole steps within --max_length); the probe needs 2 or more")
    device = resolve_device(cfg.device)
    dtype = inference_dtype(device, cfg.bf16, cfg.no_bf16)
    model = load_model(cfg.model_path, dtype=dtype).to(device).eval()
    views, lm_loss = {}, None
    with tqdm(total=sum(map(len, rows.values())), desc=f"probe {cfg.model_path}", unit="view",
              disable=cfg.debug == 0) as bar:
        for kind, kind_rows in rows.items():
            view_a, view_b, lm_loss = view_embeddings(model, tokenizer, kind_rows, cfg.mode, cfg.batch_size, bar)
            views[f"k{kind}"] = alignment_metrics(view_a, view_b)
            if cfg.step_pairs == "all":
                views[f"k{kind}"]["by_pair"] = by_pair_number(kind_rows, view_a, view_b)
    return {
        "model_path": cfg.model_path,
        "test_file": cfg.test_file,
        "mode": cfg.mode,
        "step_pairs": cfg.step_pairs,
        "chats": len(chats),
        "precision": str(dtype).removeprefix("torch."),
        "provenance": provenance(device, str(dtype).removeprefix("torch.")),
        "predictors": k,
        "lm_loss": lm_loss,
        "views": views,
    }


def format_probe_table(summary: dict[str, Any]) -> str:
    """One line per view: pairs, cosines, gap, retrieval against chance, effective ranks; the legend and a reading
    of the model's own view (its K, else K0)."""
    header = f"{'view':<6}{'pairs':>6}{'matched':>9}{'mismatch':>10}{'gap':>8}{'top-1':>16}{'top-5':>16}{'erank a':>9}{'erank b':>9}"
    lines = [header]
    for name, view in summary["views"].items():
        rows = [(name.upper(), view)] + [(f"{name.upper()} p{p}", v) for p, v in view.get("by_pair", {}).items()]
        for label, v in rows:
            chance_top1, chance_top5 = 1 / v["pairs"], min(TOP_K, v["pairs"]) / v["pairs"]
            lines.append(
                f"{label:<6}{v['pairs']:>6}{v['matched_cosine']:>9.3f}{v['mismatched_cosine']:>10.3f}"
                f"{v['gap']:>8.3f}{100 * v['top1']:>7.1f}% ({100 * chance_top1:.1f}%)"
                f"{100 * v['top5']:>7.1f}% ({100 * chance_top5:.1f}%){v['effective_rank_a']:>9.1f}"
                f"{v['effective_rank_b']:>9.1f}"
            )
    own = list(summary["views"])[-1]  # k0, then the model's K when it has predictors
    lines += [PROBE_LEGEND, "reading: " + probe_reading(own.upper(), summary["views"][own])]
    return "\n".join(lines)


def plot_probe(summary: dict[str, Any], path: Path) -> None:
    """Per view: histograms of matched and mismatched cosines; the normalised singular-value spectra."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    views = summary["views"]
    fig, axes = plt.subplots(len(views), 2, figsize=(10, 3.4 * len(views)), squeeze=False)
    for row, (name, v) in enumerate(views.items()):
        hist, spectra = axes[row]
        bins = 30
        hist.hist(v["mismatched_cosines"], bins=bins, density=True, alpha=0.55, label="mismatched (i != j)")
        hist.hist(v["matched_cosines"], bins=bins, density=True, alpha=0.55, label="matched (i = j)")
        hist.set(title=f"{name.upper()}: cos(view_a, view_b), gap {v['gap']:.3f}", xlabel="cosine", ylabel="density")
        hist.legend(fontsize=8)
        for key, label in (("spectrum_a", "view_a"), ("spectrum_b", "view_b")):
            spectra.semilogy(range(1, len(v[key]) + 1), v[key], label=f"{label} (erank {v['effective_rank_' + key[-1]]:.1f})")
        spectra.set(title=f"{name.upper()}: normalised singular values", xlabel="index", ylabel="share")
        spectra.legend(fontsize=8)
    fig.suptitle(f"{summary['model_path']} on {Path(summary['test_file']).name} ({summary['mode']})", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_probe(cfg: ProbeConfig) -> int:
    """Probe, write the JSON summary and the PNG, print the table; exit status 0."""
    from stepjepa.extras import require

    require("matplotlib", "stepjepa probe (its plot)")
    output = Path(cfg.output_file)
    plot = output.with_suffix(".png")
    check_outputs_apart({"--output_file": output, "its plot": plot},
                        {"--test_file": cfg.test_file, "--model_path": cfg.model_path})
    summary = probe_model(cfg)
    plot_probe(summary, plot)
    write_json_atomic(output, summary)
    if cfg.debug:
        print(format_probe_table(summary))
        print(f"held-out LM loss {summary['lm_loss']:.4f}; summary in {output}, plot in {plot}")
    return 0
