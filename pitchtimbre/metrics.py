"""Denseness, divergence, their ratio, and kNN probes, on held-out ('unseen') instruments.

For a latent space (pitch or timbre) and a labelling (pitch for the pitch space, instrument
for the timbre space), with M labels, N_m notes of label m and 9 frames per note:

    eta_m      = 1/(9 N_m) sum_n sum_t z_mnt                                  (centroid)
    denseness  = 1/M sum_m 1/(9 N_m) sum_n sum_t ||z_mnt - eta_m||            (lower is better)
    divergence = 2/(M(M-1)) sum_{m1<m2} ||eta_m1 - eta_m2||                    (higher is better)

Both scale with the latent space; their ratio divergence/denseness does not. The kNN probes
ask what each space *identifies*: pitch is predicted only from notes of other instruments,
the instrument only from notes of other pitches, so a space cannot score by memorising.
The same probes on the input spectrograms (:func:`input_probes`) say what the notes carried
before any model: a latent space should keep what its factor needs, not lose it.

Chapter: 06_metrics
"""

from __future__ import annotations

import torch

from .config import EvalConfig
from .model import PitchTimbreVAE


def centroids(z: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroid eta_m of every label: ``z`` [N, T, D] (T frames per note), ``labels`` [N]
    -> (eta [M, D], the M label values in ascending order).

    Chapter: 06_metrics
    """
    values, inverse = torch.unique(labels, return_inverse=True)
    frames = z.reshape(-1, z.shape[-1]).double()
    per_frame = inverse.repeat_interleave(z.shape[1])
    sums = torch.zeros(len(values), z.shape[-1], dtype=torch.float64).index_add_(
        0, per_frame, frames
    )
    counts = torch.bincount(per_frame, minlength=len(values)).double()
    return sums / counts[:, None], values


def denseness(z: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean distance of a label's frames to its centroid, averaged over labels (lower = denser).

    Chapter: 06_metrics
    """
    eta, values = centroids(z, labels)
    _, inverse = torch.unique(labels, return_inverse=True)
    dist = (z.double() - eta[inverse][:, None, :]).norm(dim=-1)  # [N, T]
    per_label = torch.zeros(len(values), dtype=torch.float64).index_add_(0, inverse, dist.sum(1))
    per_label /= torch.bincount(inverse, minlength=len(values)).double() * z.shape[1]
    return float(per_label.mean())


def divergence(z: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean distance between the centroids of two different labels (higher = more spread).

    Chapter: 06_metrics
    """
    eta, values = centroids(z, labels)
    m = len(values)
    if m < 2:
        raise ValueError("divergence needs at least two labels")
    d = torch.cdist(eta, eta)
    iu = torch.triu_indices(m, m, offset=1)
    return float(d[iu[0], iu[1]].mean())


KNN_BLOCK_BYTES = 64 * 2**20
"""Memory for the distances :func:`knn_predict` holds at once: a block of rows against all
N notes, so the probe's memory grows with N, not N^2 (NSynth's valid split has 12,678 notes:
1.3 GB for the whole matrix)."""


def knn_predict(
    x: torch.Tensor,
    target: torch.Tensor,
    exclude_group: torch.Tensor,
    k: int = 5,
    block_bytes: int = KNN_BLOCK_BYTES,
) -> torch.Tensor:
    """Leave-group-out kNN: each row of ``x`` [N, D] gets the majority label (from
    ``target``) of its k nearest rows among those with a *different* ``exclude_group``
    value; of labels with equal votes, the one whose neighbours' ranks (1 = nearest) add up
    to less wins. Returns the predicted labels [N].

    The distances are computed a block of rows at a time (at most ``block_bytes`` of them),
    each pair on its own (no matrix-product shortcut), so the answer does not depend on the
    block size.

    Chapter: 06_metrics
    """
    x = x.double()
    if not torch.isfinite(x).all():
        raise ValueError("kNN probe: the vectors hold NaN or inf (a diverged model's latents?)")
    n = len(x)
    _, group, group_size = torch.unique(exclude_group, return_inverse=True, return_counts=True)
    kk = int(min(k, n - int(group_size.max())))  # neighbours outside the largest group
    if kk < 1:
        raise ValueError("kNN probe: some note has no neighbour outside its group")
    rows = max(1, block_bytes // (8 * n))
    nearest = torch.empty(n, kk, dtype=torch.long)  # closest first
    for start in range(0, n, rows):
        block = slice(start, start + rows)
        d = torch.cdist(x[block], x, compute_mode="donot_use_mm_for_euclid_dist")
        d[group[block, None] == group[None, :]] = float("inf")
        nearest[block] = d.topk(kk, largest=False).indices
    values, inv = torch.unique(target, return_inverse=True)
    votes = torch.zeros(n, len(values), dtype=torch.float64)
    weight = 1.0 + 1e-6 * torch.arange(kk, 0, -1, dtype=torch.float64)  # closer breaks ties
    votes.scatter_add_(1, inv[nearest], weight.expand(n, kk).contiguous())
    return values[votes.argmax(1)]


def knn_accuracy(
    x: torch.Tensor, target: torch.Tensor, exclude_group: torch.Tensor, k: int = 5
) -> float:
    """The fraction of rows that :func:`knn_predict` labels right.

    Chapter: 06_metrics
    """
    return float((knn_predict(x, target, exclude_group, k) == target).double().mean())


def eval_frames(n_frames: int, frames: int) -> slice:
    """The ``frames`` central frames of ``n_frames`` (the poster's t = 1..9).

    Chapter: 06_metrics
    """
    start = (n_frames - frames) // 2
    return slice(start, start + frames)


@torch.no_grad()
def encode_means(
    model: PitchTimbreVAE, features: torch.Tensor, frames: int | None = None, batch: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder means of every note, [N, T', Dp] and [N, T', Dt] on the CPU; with ``frames``,
    only the central ``frames`` frames.

    Chapter: 06_metrics
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    zp, zt = [], []
    for i in range(0, len(features), batch):
        post = model.encode(features[i : i + batch].to(device))
        zp.append(post.pitch_mean.float().cpu())
        zt.append(post.timbre_mean.float().cpu())
    model.train(was_training)
    zp_all, zt_all = torch.cat(zp), torch.cat(zt)
    if frames is not None:
        window = eval_frames(zp_all.shape[1], frames)
        zp_all, zt_all = zp_all[:, window], zt_all[:, window]
    return zp_all, zt_all


def space_metrics(
    z: torch.Tensor, labels: torch.Tensor, pitch: torch.Tensor, instrument: torch.Tensor, k: int
) -> dict:
    """The poster's two numbers, their ratio and both probes for one latent space.

    Chapter: 06_metrics
    """
    dens = denseness(z, labels)
    div = divergence(z, labels)
    return {
        "denseness": dens,
        "divergence": div,
        "ratio": div / dens if dens > 0 else float("inf"),
        "probe": note_probes(z.mean(1), pitch, instrument, k),  # a note's frames averaged
    }


def note_probes(note: torch.Tensor, pitch: torch.Tensor, instrument: torch.Tensor, k: int) -> dict:
    """Both kNN probes on one vector per note [N, D]: pitch from other instruments, the
    instrument from other pitches.

    Chapter: 06_metrics
    """
    return {
        "pitch": knn_accuracy(note, pitch, exclude_group=instrument, k=k),
        "instrument": knn_accuracy(note, instrument, exclude_group=pitch, k=k),
    }


def evaluate_latents(
    model: PitchTimbreVAE,
    features: torch.Tensor,
    pitch: torch.Tensor,
    instrument: torch.Tensor,
    cfg: EvalConfig,
) -> dict:
    """Metrics of both spaces on the given (held-out) notes: the pitch space labelled by
    pitch, the timbre space by instrument.

    Chapter: 06_metrics
    """
    zp, zt = encode_means(model, features, cfg.frames)
    return {
        "pitch": space_metrics(zp, pitch, pitch, instrument, cfg.knn_k),
        "timbre": space_metrics(zt, instrument, pitch, instrument, cfg.knn_k),
    }


def input_notes(features: torch.Tensor, cfg: EvalConfig) -> torch.Tensor:
    """One vector per note from the input itself, no model: the ``cfg.frames`` central
    spectrogram frames of ``features`` [N, F, T], averaged -> [N, F].

    Chapter: 06_metrics
    """
    return features[:, :, eval_frames(features.shape[2], cfg.frames)].float().mean(2)


def input_probes(
    features: torch.Tensor, pitch: torch.Tensor, instrument: torch.Tensor, cfg: EvalConfig
) -> dict:
    """The two kNN probes on the input itself (:func:`input_notes`): the baseline a latent
    space is read against.

    Chapter: 06_metrics
    """
    return note_probes(input_notes(features, cfg), pitch, instrument, cfg.knn_k)


def probe_by_instrument(
    note: torch.Tensor, pitch: torch.Tensor, instrument: torch.Tensor, k: int
) -> dict[int, tuple[float, int | None]]:
    """The instrument probe (from other pitches) instrument by instrument, on one vector per
    note [N, D]: {instrument: (fraction of its notes named right, the instrument most often
    named instead, or None when never wrong)}.

    Chapter: 07_results
    """
    pred = knn_predict(note, instrument, exclude_group=pitch, k=k)
    out: dict[int, tuple[float, int | None]] = {}
    for i in instrument.unique().tolist():
        mine = pred[instrument == i]
        wrong = mine[mine != i]
        instead = int(torch.mode(wrong).values) if len(wrong) else None
        out[i] = (float((mine == i).double().mean()), instead)
    return out


def pitch_leak_by_instrument(
    note: torch.Tensor, pitch: torch.Tensor, instrument: torch.Tensor, k: int
) -> dict[int, tuple[float, float]]:
    """The pitch probe (from other instruments) instrument by instrument, on one vector per
    note [N, D]: {instrument: (fraction of its notes whose pitch is read exactly, mean
    absolute error of the read pitch in label units, semitones for MIDI pitches)}.

    Read from a timbre space it locates the leakage of pitch into that space: the exact
    fraction's chance level is one over the number of pitches, and a small mean error with
    few exact hits means the space still knows the register.

    Chapter: 07_results
    """
    pred = knn_predict(note, pitch, exclude_group=instrument, k=k)
    out: dict[int, tuple[float, float]] = {}
    for i in instrument.unique().tolist():
        mine = instrument == i
        error = (pred[mine] - pitch[mine]).double().abs()
        out[i] = (float((error == 0).double().mean()), float(error.mean()))
    return out


def chance_levels(labels: torch.Tensor) -> tuple[float, float]:
    """What a guess drawn at random from the notes' own labels scores: the chance that it is
    exact, and its mean absolute error (semitones for MIDI pitches): the yardsticks of the
    two numbers in :func:`pitch_leak_by_instrument`.

    Chapter: 07_results
    """
    values, counts = labels.unique(return_counts=True)
    share = counts.double() / counts.sum()
    gaps = (values[:, None] - values[None, :]).double().abs()
    return float(share.square().sum()), float(share @ gaps @ share)
